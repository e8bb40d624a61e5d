"""The aggregator in HE mode: a gRPC service around :class:`secagg.he.HeAccumulator`.

A round: ask the key holder (a gRPC client of this service, CN ``secagg key holder``) for a
fresh key set; check its signature and that the aggregator's context carries no key; open
uploads; add each member's upload as it completes, in a sandbox (:class:`SafeDeserializer`);
close at the deadline or when every member has answered; send the one running sum per chunk to
the key holder; publish what it releases as ``OUTPUT/round-<r>.npy`` / ``.json``.

Failure handling: a member that misses the deadline is a dropout and costs nothing; a malformed
or oversized upload is refused (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) and its sender excluded
from the round, and the service keeps serving even if the native parser crashes on it; a key
holder that does not answer, or refuses, aborts the round with its reason.

Run it: ``secagg-he-aggregator serve --consortium C --state S --output O --dimension D``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from aggregator._cli import add_serve_arguments, stop_on_signals
from aggregator.he_material import KEYHOLDER_CN, verify_context
from aggregator.lifecycle import StateLock
from aggregator.rounds import (
    RoundRecord,
    RoundRunnerBase,
    await_round,
    completed_rounds,
    drive,
    long_poll,
    member_from_certificate,
    peer_names,
    round_or_abort,
    start_server,
)
from aggregator.store import AggregatorStore
from aggregator.tasks import save_npy
from protos import he_wire
from protos.consortium import Consortium, load_consortium
from protos.ops import sigint_ignored_by_children
from protos.secagg.he.v1 import he_pb2 as pb
from protos.secagg.he.v1 import he_pb2_grpc as pb_grpc
from secagg import SecAggError
from secagg.encoding import DEFAULT_LEVEL_BITS
from secagg.he import (
    DEFAULT_PARAMS,
    ContextKind,
    HeAccumulator,
    HeError,
    HeRoundConfig,
    HeUpload,
    InvalidCiphertext,
    InvalidUpload,
    SafeDeserializer,
    context_digest,
)

__all__ = ["HeAggregatorService", "HeRoundRunner", "HeServeOptions", "main", "serve_he"]

log = logging.getLogger("secagg.aggregator.he")


@dataclass(frozen=True)
class HeServeOptions:
    """What ``serve`` runs: ``rounds`` HE rounds of ``d``-vectors with parameter set ``params``.

    ``crash_marker`` is a test-only hook passed to the sandbox (a worker dies on an input that
    contains it)."""

    d: int
    params: str = DEFAULT_PARAMS.name
    clip: float = 1.0
    bits: int | None = None
    level_bits: int = DEFAULT_LEVEL_BITS
    flood: int | None = None
    rounds: int = 1
    upload_timeout: float = 30.0
    first_round_wait: float = 60.0
    keyholder_timeout: float = 60.0
    min_cohort: int = 3
    output: Path = Path("output")
    workers: int = 1
    parse_timeout: float | None = 60.0
    max_concurrent_uploads: int = 4
    max_workers: int | None = None
    crash_marker: bytes | None = None


@dataclass
class _Round(RoundRecord[HeRoundConfig]):
    acc: HeAccumulator | None = None
    info: pb.RoundInfo | None = None
    open_for_uploads: bool = False
    upload_bytes: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class HeRoundRunner(RoundRunnerBase[HeServeOptions, _Round]):
    """Drives rounds; owns the state the RPC handlers read (under ``cond``)."""

    def __init__(
        self,
        options: HeServeOptions,
        consortium: Consortium,
        store: AggregatorStore,
        sandbox: SafeDeserializer,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(options, store, clock=clock, wall=wall)
        self.ca = consortium.ca
        self.members = frozenset(consortium.registry)
        self.registry = dict(consortium.registry)
        self.sandbox = sandbox
        self.add_lock = threading.Lock()
        self.uploads = threading.BoundedSemaphore(options.max_concurrent_uploads)
        self._tasks: deque[pb.KeyHolderTask] = deque()
        self._answers: dict[int, pb.KeyHolderAnswer] = {}
        self._pending: set[int] = set()
        self._task_ids = 0
        self.template = HeRoundConfig(
            n=len(self.members),
            d=options.d,
            params=options.params,
            clip=options.clip,
            bits=options.bits,
            level_bits=options.level_bits,
            flood=options.flood,
        )
        self._recover(log, "round %d was interrupted by a restart: aborted")

    # -- key holder tasks -----------------------------------------------------------------

    def _ask(self, task: pb.KeyHolderTask, timeout: float) -> pb.KeyHolderAnswer | None:
        """Queue a task for the key holder and wait for its answer (None on timeout/stop)."""
        with self.cond:
            self._task_ids += 1
            task.task_id = self._task_ids
            self._pending.add(task.task_id)
            self._tasks.append(task)
            self.cond.notify_all()
            end = self.clock() + timeout
            self._wait(lambda now: task.task_id in self._answers, lambda: end)
            self._pending.discard(task.task_id)
            return self._answers.pop(task.task_id, None)

    def has_task(self) -> bool:
        return bool(self._tasks)

    def next_task(self) -> pb.KeyHolderTask | None:
        return self._tasks.popleft() if self._tasks else None

    def answer(self, ans: pb.KeyHolderAnswer) -> None:
        if ans.task_id in self._pending:  # a late answer to an abandoned task is dropped
            self._answers[ans.task_id] = ans
            self.cond.notify_all()

    # -- the round loop -------------------------------------------------------------------

    def _on_finished(self) -> None:
        self._tasks.append(pb.KeyHolderTask(finished=True))

    def _open(self) -> _Round:
        number, session = self._new_session()
        cfg = self.template.with_session(session, number)
        self._record_open(number, session, cfg)
        return _Round(number, cfg)

    def _run_round(self, *, first: bool) -> None:
        rnd = self._open()
        cfg = rnd.config
        t_open = self.clock()
        wait_keys = self._timeout(self.options.keyholder_timeout, first=first)
        log.info("round %d: %s; asking the key holder for keys", rnd.number, cfg.describe())
        ans = self._ask(pb.KeyHolderTask(open_round=he_wire.config_to_pb(cfg)), wait_keys)
        try:
            if ans is None or not ans.HasField("keys"):
                why = ans.refusal.reason if ans is not None and ans.HasField("refusal") else ""
                raise HeError(f"the key holder issued no keys{': ' + why if why else ''}")
            keys = ans.keys
            verify_context(
                self.ca,
                keys.keyholder_certificate,
                context_digest(cfg, keys.public_context, keys.tag_key),
                keys.context_signature,
            )
            self.sandbox.check_context(keys.public_context, cfg.he_params, ContextKind.PUBLIC)
            rnd.acc = HeAccumulator(
                cfg, keys.parameters_context, self.registry, backend=self.sandbox
            )
        except SecAggError as exc:
            self._forget(cfg)  # a key issued late or refused here must not stay open
            self._end(rnd, completed=False, reason=f"round aborted: {exc}")
            return
        rnd.timings["keys_s"] = self.clock() - t_open
        timeout = self._timeout(self.options.upload_timeout, first=first)
        with self.cond:
            rnd.info = pb.RoundInfo(
                config=he_wire.config_to_pb(cfg),
                public_context=keys.public_context,
                context_signature=keys.context_signature,
                keyholder_certificate=keys.keyholder_certificate,
                tag_key=keys.tag_key,
            )
            rnd.deadline = self.clock() + timeout
            rnd.open_for_uploads = True
            self.current = rnd
            self.cond.notify_all()
            acc = rnd.acc
            self._wait(
                lambda now: self.members <= acc.included | set(acc.rejected), lambda: rnd.deadline
            )
            rnd.open_for_uploads = False
        if self._stop.is_set():
            self._forget(cfg)
            self._end(rnd, completed=False, reason="the aggregator is shutting down")
            return
        with self.add_lock:  # waits for an upload being added right now
            included = sorted(acc.included)
            message = acc.close() if len(included) >= self.options.min_cohort else None
            acc.closed = True
        rnd.timings["uploads_s"] = self.clock() - t_open - rnd.timings["keys_s"]
        if message is None:
            self._forget(cfg)
            self._end(
                rnd,
                completed=False,
                reason=f"only {len(included)} uploads, below the minimum {self.options.min_cohort}",
            )
            return
        t0 = self.clock()
        task = pb.KeyHolderTask(
            release=pb.SumRequest(
                config=he_wire.config_to_pb(cfg),
                chunks=message.chunks,
                included=included,
                contributions=[he_wire.contribution_to_pb(c) for c in message.contributions],
            )
        )
        ans = self._ask(task, self.options.keyholder_timeout)
        rnd.timings["release_s"] = self.clock() - t0
        if ans is None or not ans.HasField("release"):
            why = ans.refusal.reason if ans is not None and ans.HasField("refusal") else "timeout"
            self._end(rnd, completed=False, reason=f"the key holder released nothing: {why}")
            return
        try:
            int_sum = he_wire.int_sum_from_bytes(ans.release.int_sum, cfg.d)
            if ans.release.count != len(included):
                raise HeError("the released count is not the number of uploads")
        except SecAggError as exc:
            self._end(rnd, completed=False, reason=f"bad release: {exc}")
            return
        self._publish(rnd, int_sum, ans.release, t_open)

    def _forget(self, cfg: HeRoundConfig) -> None:
        with self.cond:
            self._tasks.append(pb.KeyHolderTask(forget=he_wire.config_to_pb(cfg)))
            self.cond.notify_all()

    def _publish(self, rnd: _Round, int_sum: Any, rel: pb.Release, t_open: float) -> None:
        cfg = rnd.config
        assert rnd.acc is not None and rnd.info is not None
        aggregate = int_sum.astype(np.float64) / cfg.encoding.scale
        out = self.options.output
        out.mkdir(parents=True, exist_ok=True)
        npy = out / f"round-{rnd.number}.npy"
        digest = save_npy(npy, aggregate)
        included = sorted(rnd.acc.included)
        dropped = sorted(self.members - rnd.acc.included)
        sizes = sorted(rnd.upload_bytes.values())
        median = sizes[len(sizes) // 2] if sizes else 0
        summary: dict[str, Any] = {
            "round": rnd.number,
            "mode": "he",
            "session_id": cfg.session_id.hex() if cfg.session_id else "",
            "params": cfg.params,
            "scheme": cfg.scheme.value,
            "included": included,
            "dropped": dropped,
            "rejected": {str(u): why for u, why in rnd.acc.rejected.items()},
            "count": rel.count,
            "error_bound": rel.error_bound,
            "flood": rel.flood,
            "d": cfg.d,
            "field_bits": cfg.layout.field_bits,
            "fields_per_slot": cfg.layout.fields_per_slot,
            "chunks": cfg.layout.chunks,
            "upload_bytes_median": median,
            "upload_vs_float32": median / (4 * cfg.d),
            "public_context_bytes": len(rnd.info.public_context),
            "aggregate_sha256": digest,
            "timings": {**rnd.timings, "round_s": self.clock() - t_open},
        }
        self._record_result(
            rnd, out, summary, included=included, dropped=dropped, npy=str(npy), digest=digest
        )
        log.info(
            "round %d published: %d included, %d dropped", rnd.number, len(included), len(dropped)
        )
        self._end(rnd, completed=True, reason="", included=tuple(included))

    def _end(
        self, rnd: _Round, *, completed: bool, reason: str, included: tuple[int, ...] = ()
    ) -> None:
        if not completed:
            log.warning("round %d: %s", rnd.number, reason)
        super()._end(rnd, completed=completed, reason=reason, included=included)

    def _on_end(self, rnd: _Round) -> None:
        rnd.open_for_uploads = False


class HeAggregatorService(pb_grpc.HeAggregatorServicer):
    """The five RPCs; every check ends in one clear status, never a traceback."""

    def __init__(self, runner: HeRoundRunner) -> None:
        self.runner = runner

    def _member(self, context: grpc.ServicerContext, claimed: int) -> int:
        peer = member_from_certificate(context)
        if peer != claimed or peer not in self.runner.members:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"member {peer} cannot act as {claimed}"
            )
        return peer

    def _keyholder(self, context: grpc.ServicerContext) -> None:
        if peer_names(context) != [KEYHOLDER_CN]:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the key holder may do this")

    def GetRound(self, request: pb.GetRoundRequest, context: grpc.ServicerContext) -> pb.RoundInfo:
        self._member(context, request.client_id)
        r = self.runner
        with r.cond:
            cur = await_round(r, context, request.after_round, lambda rnd: rnd.open_for_uploads)
            if cur is None or not cur.open_for_uploads or cur.info is None:
                return pb.RoundInfo(finished=True)
            info = pb.RoundInfo()
            info.CopyFrom(cur.info)
            info.deadline_s = max(0.0, cur.deadline - r.clock())
            return info

    def Upload(
        self, request_iterator: Iterator[pb.UploadChunk], context: grpc.ServicerContext
    ) -> pb.UploadAck:
        r = self.runner
        if not r.uploads.acquire(timeout=max(0.0, context.time_remaining() or 30.0)):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many uploads at once")
        try:
            return self._upload(request_iterator, context)
        finally:
            r.uploads.release()

    def _upload(
        self, request_iterator: Iterator[pb.UploadChunk], context: grpc.ServicerContext
    ) -> pb.UploadAck:
        r = self.runner
        sender = -1
        rnd: _Round | None = None
        chunks: list[bytes] = []
        sealed_tag = signature = b""
        for msg in request_iterator:
            if rnd is None:
                sender = self._member(context, msg.sender)
                sealed_tag, signature = bytes(msg.sealed_tag), bytes(msg.signature)
                with r.cond:
                    rnd = r.current
                if rnd is None or rnd.number != msg.round or not rnd.open_for_uploads:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "that round is not open")
                assert rnd is not None and rnd.acc is not None
                if bytes(msg.session_id) != rnd.config.session_id:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong session")
            assert rnd.acc is not None
            if (msg.sender, msg.round, bytes(msg.session_id)) != (
                sender,
                rnd.number,
                rnd.config.session_id,
            ) or msg.index != len(chunks):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chunks out of order or mixed")
            try:
                if msg.index == 0:
                    he_wire.check_upload_fields(sealed_tag, signature)
                elif msg.sealed_tag or msg.signature:
                    raise InvalidUpload("the sealed tag and signature ride on chunk 0 only")
                rnd.acc.check_chunk(msg.index, msg.ciphertext)
            except (InvalidCiphertext, he_wire.WireError) as exc:
                with r.add_lock:
                    rnd.acc.rejected.setdefault(sender, str(exc))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            chunks.append(bytes(msg.ciphertext))
        if rnd is None or rnd.acc is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty upload")
        assert rnd is not None and rnd.acc is not None
        upload = HeUpload(
            rnd.config.session_id or b"", rnd.number, tuple(chunks), sender, sealed_tag, signature
        )
        with r.add_lock:
            try:
                rnd.acc.add(sender, upload)
            except InvalidCiphertext as exc:
                log.warning("round %d: upload of %d rejected: %s", rnd.number, sender, exc)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except HeError as exc:
                code = (
                    grpc.StatusCode.ALREADY_EXISTS
                    if sender in rnd.acc.included
                    else grpc.StatusCode.FAILED_PRECONDITION
                )
                context.abort(code, str(exc))
        with r.cond:
            rnd.upload_bytes[sender] = sum(len(c) for c in chunks)
            r.store.log_stage(rnd.number, "UPLOAD", sender, "completed", "", r.wall())
            r.cond.notify_all()
        return pb.UploadAck(chunks=len(chunks))

    def AwaitOutcome(
        self, request: pb.AwaitRequest, context: grpc.ServicerContext
    ) -> pb.RoundOutcome:
        me = self._member(context, request.client_id)
        r = self.runner
        with r.cond:
            rnd = round_or_abort(r, context, request.round, bytes(request.session_id))
            if not long_poll(r.cond, context, lambda: rnd.ended):
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the round is still open")
            reason = rnd.reason
            if rnd.completed and me not in rnd.included and rnd.acc is not None:
                reason = rnd.acc.rejected.get(me, "no upload before the deadline")
            return pb.RoundOutcome(
                completed=rnd.completed and me in rnd.included,
                reason=reason,
                included=list(rnd.included),
            )

    def NextTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.KeyHolderTask:
        self._keyholder(context)
        r = self.runner
        with r.cond:
            if not long_poll(r.cond, context, r.has_task):
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no task yet")
            task = r.next_task()
            assert task is not None
            return task

    def Answer(self, request: pb.KeyHolderAnswer, context: grpc.ServicerContext) -> pb.AnswerAck:
        self._keyholder(context)
        with self.runner.cond:
            self.runner.answer(request)
        return pb.AnswerAck()


def serve_he(
    options: HeServeOptions,
    consortium: Consortium,
    state_dir: Path,
    listen: str | Sequence[str],
    *,
    ready: Callable[[int], None] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run the HE service over mutual TLS until the scheduled rounds are done (or
    ``stop_event``); returns the number of rounds completed in this run."""
    store = AggregatorStore(state_dir / "aggregator.db")
    sandbox = SafeDeserializer(
        options.workers, timeout=options.parse_timeout, crash_marker=options.crash_marker
    )
    with sigint_ignored_by_children():  # a Ctrl-C stops this process, which stops them
        sandbox.start()
    runner = HeRoundRunner(options, consortium, store, sandbox)
    limit = he_wire.max_message_bytes(runner.template.with_session(bytes(16)))
    server, health_servicer, port = start_server(
        consortium,
        listen,
        lambda server: pb_grpc.add_HeAggregatorServicer_to_server(  # type: ignore[no-untyped-call]
            HeAggregatorService(runner), server
        ),
        service_name="secagg.he.v1.HeAggregator",
        limit=limit,
        max_workers=options.max_workers,
    )
    log.info(
        "HE aggregator listening on port %d (mutual TLS), %d members", port, len(runner.members)
    )
    if ready is not None:
        ready(port)
    completed_before = completed_rounds(store.rounds())
    try:
        drive(
            runner,
            server,
            health_servicer,
            thread_name="he-round-runner",
            stop_event=stop_event,
            linger=0.5,  # let the key holder collect its "finished" task
        )
    finally:
        sandbox.close()
        done = completed_rounds(store.rounds()) - completed_before
        store.close()
    return done


def _parser() -> argparse.ArgumentParser:
    from protos.ops import add_common_arguments, common_parent

    ap = argparse.ArgumentParser(
        prog="secagg-he-aggregator",
        description="The aggregator of the homomorphic-encryption variant: members upload "
        "ciphertexts under a key the key holder issues per round; the aggregator adds them and "
        "the key holder decrypts only the sum. Exit status: 0 every round completed, 1 some "
        "did not, 2 bad input or material, 130/143 stopped by SIGINT/SIGTERM.",
    )
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", parents=[common_parent()], help="run rounds of HE aggregation")
    add_serve_arguments(s, listen="127.0.0.1:50052")
    s.add_argument(
        "--dimension", type=int, required=True, help="the length d of every member's vector"
    )
    s.add_argument(
        "--params",
        default=DEFAULT_PARAMS.name,
        help="allow-listed parameter set (default: %(default)s)",
    )
    s.add_argument(
        "--rounds", type=int, default=1, help="rounds to run, then stop (default: %(default)s)"
    )
    s.add_argument(
        "--upload-timeout",
        type=float,
        default=30.0,
        help="seconds a round waits for uploads (default: %(default)s)",
    )
    s.add_argument(
        "--first-round-wait",
        type=float,
        default=60.0,
        help="seconds the first round waits for members and the key holder (default: %(default)s)",
    )
    s.add_argument(
        "--keyholder-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each key holder answer (default: %(default)s)",
    )
    s.add_argument(
        "--min-cohort",
        type=int,
        default=3,
        help="fewest uploads a released sum may hold (default: %(default)s)",
    )
    s.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="each coordinate is clipped to [-clip, clip] (default: %(default)s)",
    )
    s.add_argument(
        "--bits",
        type=int,
        default=None,
        help="integer range in bits (default: chosen from n and the clip)",
    )
    s.add_argument(
        "--level-bits",
        type=int,
        default=DEFAULT_LEVEL_BITS,
        help="quantisation levels in bits (default: %(default)s)",
    )
    s.add_argument(
        "--flood",
        type=int,
        default=None,
        help="CKKS flooding noise, in grid units (default: the parameter set's)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="sandboxed parser processes (default: %(default)s)",
    )
    s.add_argument("--test-crash-marker", default=None, help=argparse.SUPPRESS)
    return ap


def _run(args: argparse.Namespace) -> int:
    options = HeServeOptions(
        d=args.dimension,
        params=args.params,
        clip=args.clip,
        bits=args.bits,
        level_bits=args.level_bits,
        flood=args.flood,
        rounds=args.rounds,
        upload_timeout=args.upload_timeout,
        first_round_wait=args.first_round_wait,
        keyholder_timeout=args.keyholder_timeout,
        min_cohort=args.min_cohort,
        output=args.output,
        workers=args.workers,
        crash_marker=bytes.fromhex(args.test_crash_marker) if args.test_crash_marker else None,
    )
    stop = stop_on_signals()
    with StateLock(args.state):
        done = serve_he(
            options, load_consortium(args.consortium), args.state, args.listen, stop_event=stop
        )
    print(f"HE aggregator stopped; {done} of {args.rounds} rounds completed")
    if stop.is_set():
        return 128 + stop.signum
    return 0 if done >= args.rounds else 1


def main(argv: list[str] | None = None) -> int:
    from protos.ops import run_cli

    return run_cli("secagg-he-aggregator", _parser, _run, argv, expected=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
