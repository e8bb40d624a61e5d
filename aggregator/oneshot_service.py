"""The aggregator in one-shot mode: a gRPC service around :class:`secagg.oneshot.OneShotAggregator`.

A round: choose the committee (``committee_size`` of the candidate members online, i.e.
polling for tasks, ranked by a hash of the session); ask each member for its signed round key;
open uploads (each client sends one streamed message and may leave); close at the deadline or
when every registered client has uploaded; have every reachable member check the set and its
shares, sign it, and release its share sum once ``threshold`` signatures agree; reconstruct,
unmask and publish ``OUTPUT/round-<r>.npy`` / ``.json``.

With a task (``serve-fl --protocol oneshot``: federated DP-LoRA, :class:`aggregator.fl.DpLoraTask`)
each round's task document and global model ride in ``RoundInfo``, their digests in the config
every member signs; the released integer sum, reduced mod 2^b, is the distributed-DP ring sum,
which the task decodes, applies and charges to the ledger (secagg/SPEC.md O9).

Failure handling: a client that misses the deadline costs nothing; a malformed upload is
refused (INVALID_ARGUMENT) and its sender excluded; up to ``c - t_c`` members may fail to
answer after the keys were issued; a member's complaint about a client ends the round naming
the client, which is suspended from later rounds (``secagg-aggregator clear-cheater``).

Run it: ``secagg-aggregator serve --protocol oneshot --committee 1,2,3 ...``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import numpy.typing as npt

from aggregator.rounds import (
    RoundRecord,
    RoundRunnerBase,
    await_round,
    completed_rounds,
    drive,
    long_poll,
    member_from_certificate,
    start_server,
)
from aggregator.store import AggregatorStore
from aggregator.tasks import TaskRound, save_npy
from dp.distributed import DistributedDPConfig
from protos import oneshot_wire as wire
from protos.consortium import Consortium
from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from protos.secagg.oneshot.v1 import oneshot_pb2_grpc as pb_grpc
from secagg import ConfigError, SecAggError
from secagg._crypto import sha256
from secagg.encoding import DEFAULT_LEVEL_BITS
from secagg.oneshot import (
    MemberKey,
    OneShotAggregator,
    OneShotConfig,
    SetSignature,
    plaintext_bits_for,
)

__all__ = [
    "OneShotAggregatorService",
    "OneShotDpTask",
    "OneShotRoundRunner",
    "OneShotServeOptions",
    "choose_committee",
    "serve_oneshot",
]

log = logging.getLogger("secagg.aggregator.oneshot")
LABEL_COMMITTEE = b"secagg/oneshot/v1/committee"


class OneShotDpTask(Protocol):
    """A distributed-DP job over one-shot rounds (:class:`aggregator.fl.DpLoraTask`)."""

    dp_cfg: DistributedDPConfig

    def max_message_bytes(self) -> int: ...

    def begin(self, round_number: int) -> TaskRound: ...

    def publish(
        self,
        round_number: int,
        config: OneShotConfig,
        task_round: TaskRound,
        ring_sum: npt.NDArray[np.uint32],
        included: frozenset[int],
        out: Path,
    ) -> dict[str, Any]: ...


def choose_committee(candidates: Sequence[int], session_id: bytes, size: int) -> tuple[int, ...]:
    """``size`` of ``candidates``, ranked by SHA-256 of the session and the id: a different
    committee each round, spreading the load (not a security boundary: threat_models/oneshot.md
    R2)."""
    if not 1 <= size <= len(set(candidates)):
        raise ConfigError(f"a committee of {size} from {len(set(candidates))} candidates")
    ranked = sorted(
        set(candidates), key=lambda m: sha256(LABEL_COMMITTEE, session_id, m.to_bytes(4, "big"))
    )
    return tuple(sorted(ranked[:size]))


@dataclass(frozen=True)
class OneShotServeOptions:
    """What ``serve --protocol oneshot`` runs. ``committee`` lists the candidate members
    (default: every registered member); ``committee_size`` of them sit each round (default:
    all candidates), ``threshold`` of those must release (default: the smallest majority that
    still tolerates one dropout, ``floor(2c/3) + 1`` capped at c). Uploads close when every
    registered member has uploaded or at the deadline; with ``straggler_grace``, at most that
    many seconds after ``min_cohort`` uploads are in (members that never upload, such as
    dedicated committee members, then do not hold every round to its deadline)."""

    d: int
    committee: tuple[int, ...] = ()
    committee_size: int | None = None
    threshold: int | None = None
    clip: float = 1.0
    bits: int | None = None
    level_bits: int = DEFAULT_LEVEL_BITS
    rounds: int = 1
    upload_timeout: float = 30.0
    first_round_wait: float = 60.0
    committee_timeout: float = 60.0
    min_cohort: int = 3
    output: Path = Path("output")
    max_workers: int | None = None
    straggler_grace: float | None = None


def default_threshold(c: int) -> int:
    return min(c, 2 * c // 3 + 1)


@dataclass
class _Round(RoundRecord[OneShotConfig]):
    agg: OneShotAggregator | None = None
    info: pb.RoundInfo | None = None
    open_for_uploads: bool = False
    task_round: TaskRound | None = None
    upload_bytes: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class OneShotRoundRunner(RoundRunnerBase[OneShotServeOptions, _Round]):
    """Drives rounds; owns the state the RPC handlers read (under ``cond``)."""

    def __init__(
        self,
        options: OneShotServeOptions,
        consortium: Consortium,
        store: AggregatorStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        task: OneShotDpTask | None = None,
    ) -> None:
        super().__init__(options, store, clock=clock, wall=wall)
        self.task = task
        self.registry = dict(consortium.registry)
        self.members = frozenset(self.registry)
        self.candidates = tuple(sorted(options.committee or self.members))
        if not set(self.candidates) <= self.members:
            raise ConfigError("committee candidates must be registered members")
        self.size = options.committee_size or len(self.candidates)
        self.threshold = options.threshold or default_threshold(self.size)
        self.add_lock = threading.Lock()
        self._queues: dict[int, deque[pb.CommitteeTask]] = {m: deque() for m in self.candidates}
        self._answers: dict[int, pb.CommitteeAnswer] = {}
        self._pending: dict[int, int] = {}
        self._task_ids = 0
        self._polling: dict[int, int] = dict.fromkeys(self.candidates, 0)
        self._seen: dict[int, float] = {}
        committee = self.candidates[: self.size]
        n = len(self.members)
        d, bits = options.d, options.bits
        if task is not None:  # the DP encoding fixes the length and the grid
            dp = task.dp_cfg
            if dp.num_clients != n or dp.min_survivors > options.min_cohort:
                raise ConfigError(
                    f"the DP parameters are for {dp.num_clients} clients and sets of "
                    f"{dp.min_survivors}; the round has {n} and releases sets of "
                    f"{options.min_cohort}"
                )
            d, bits = dp.encoded_dim, plaintext_bits_for(n, dp.bits)
        self.template = OneShotConfig(
            n=n,
            d=d,
            committee=committee,
            threshold=self.threshold,
            min_cohort=options.min_cohort,
            clip=options.clip,
            bits=bits,
            level_bits=options.level_bits,
        )
        self._recover(log, "round %d was interrupted by a restart: aborted")

    # -- committee tasks ------------------------------------------------------------------

    def _ask_all(
        self, tasks: dict[int, pb.CommitteeTask], timeout: float
    ) -> dict[int, pb.CommitteeAnswer]:
        """Queue one task per member and wait until all answered or ``timeout``."""
        with self.cond:
            ids = {}
            for m, task in tasks.items():
                self._task_ids += 1
                task.task_id = self._task_ids
                self._pending[task.task_id] = m
                self._queues[m].append(task)
                ids[m] = task.task_id
            self.cond.notify_all()
            end = self.clock() + timeout
            self._wait(lambda now: all(t in self._answers for t in ids.values()), lambda: end)
            out = {}
            for m, t in ids.items():
                self._pending.pop(t, None)
                ans = self._answers.pop(t, None)
                if ans is not None:
                    out[m] = ans
                else:  # never delivered, or no answer: drop it from the queue
                    q = self._queues[m]
                    for task in list(q):
                        if task.task_id == t:
                            q.remove(task)
            return out

    def poll(self, member: int, delta: int) -> None:
        """A member's long-poll starts (+1) or ends (-1): how the runner tells who is online."""
        self._polling[member] += delta
        self._seen[member] = self.clock()

    def _online(self, grace: float = 3.0) -> list[int]:
        """Candidates polling now or within ``grace`` seconds (waiting up to ``grace`` for at
        least ``size`` of them); all candidates if fewer are online (the round then waits for
        their keys, and aborts naming the missing ones)."""
        end = self.clock() + grace

        def live(now: float) -> list[int]:
            return [
                m for m in self.candidates
                if self._polling[m] > 0 or now - self._seen.get(m, -1e18) <= 0.5
            ]  # fmt: skip

        with self.cond:
            self._wait(lambda now: len(live(now)) >= len(self.candidates), lambda: end)
            found = live(self.clock())
        return found if len(found) >= self.size else list(self.candidates)

    def has_task(self, member: int) -> bool:
        return bool(self._queues.get(member)) or self.finished

    def next_task(self, member: int) -> pb.CommitteeTask:
        q = self._queues.get(member)
        if q:
            return q.popleft()
        return pb.CommitteeTask(finished=True)

    def answer(self, member: int, ans: pb.CommitteeAnswer) -> None:
        if self._pending.get(ans.task_id) == member:  # a late or foreign answer is dropped
            self._answers[ans.task_id] = ans
            self.cond.notify_all()

    def _forget(self, cfg: OneShotConfig) -> None:
        with self.cond:
            for m in cfg.committee:
                self._queues[m].append(pb.CommitteeTask(forget=wire.config_to_pb(cfg)))
            self.cond.notify_all()

    # -- the round loop -------------------------------------------------------------------

    def _run_round(self, *, first: bool) -> None:
        number, session = self._new_session()
        committee = choose_committee(self._online(), session, self.size)
        job = self.task.begin(number) if self.task is not None else None
        cfg = self._config(session, number, committee, job)
        self._record_open(number, session, cfg)
        rnd = _Round(number, cfg, task_round=job)
        t_open = self.clock()
        cpb = wire.config_to_pb(cfg)
        log.info("round %d: %s", number, cfg.describe())
        wait = self._timeout(self.options.committee_timeout, first=first)
        answers = self._ask_all({m: pb.CommitteeTask(open_round=cpb) for m in committee}, wait)
        try:
            keys: list[MemberKey] = []
            for m in committee:
                ans = answers.get(m)
                if ans is None or not ans.HasField("key"):
                    why = (
                        ans.refusal.reason
                        if ans is not None and ans.HasField("refusal")
                        else "no answer"
                    )
                    raise SecAggError(f"committee member {m} issued no key: {why}")
                keys.append(wire.member_key_from_pb(ans.key))
            agg = rnd.agg = OneShotAggregator(cfg, self.registry, keys)
        except SecAggError as exc:
            self._forget(cfg)
            self._end(rnd, completed=False, reason=f"round aborted: {exc}")
            return
        rnd.timings["keys_s"] = self.clock() - t_open
        timeout = self._timeout(self.options.upload_timeout, first=first)
        with self.cond:
            rnd.info = pb.RoundInfo(
                config=cpb,
                member_keys=[wire.member_key_to_pb(k) for k in keys],
                task=job.task if job is not None else b"",
                model=job.model if job is not None else b"",
            )
            rnd.deadline = self.clock() + timeout
            rnd.open_for_uploads = True
            self.current = rnd
            self.cond.notify_all()
            self._wait(self._uploads_done(rnd, agg), lambda: rnd.deadline)
            rnd.open_for_uploads = False
        if self._stop.is_set():
            self._forget(cfg)
            self._end(rnd, completed=False, reason="the aggregator is shutting down")
            return
        with self.add_lock:
            try:
                included = agg.close()
            except SecAggError as exc:
                self._forget(cfg)
                self._end(rnd, completed=False, reason=str(exc))
                return
        rnd.timings["uploads_s"] = self.clock() - t_open - rnd.timings["keys_s"]
        try:
            result = self._committee(rnd, agg, included)
        except SecAggError as exc:
            self._forget(cfg)
            self._end(rnd, completed=False, reason=f"round aborted: {exc}")
            return
        self._publish(rnd, result, t_open)

    def _uploads_done(self, rnd: _Round, agg: OneShotAggregator) -> Callable[[float], bool]:
        """Whether every member has uploaded (accepted or refused); once ``min_cohort`` uploads
        are accepted, the deadline moves to at most ``straggler_grace`` from then."""
        grace = self.options.straggler_grace
        quorum_at: float | None = None

        def done(now: float) -> bool:
            nonlocal quorum_at
            if (
                grace is not None
                and quorum_at is None
                and len(agg.included) >= self.template.min_cohort
            ):
                quorum_at = now
                rnd.deadline = min(rnd.deadline, now + grace)
            return self.members <= agg.included | set(agg.rejected)

        return done

    def _config(
        self, session: bytes, number: int, committee: tuple[int, ...], job: TaskRound | None
    ) -> OneShotConfig:
        t = self.template
        dp = self.task.dp_cfg if self.task is not None else None
        if job is not None and dp is not None and (job.d, job.bits) != (t.d, dp.bits):
            raise ConfigError("the task's round does not match its DP parameters")
        return OneShotConfig(
            n=t.n,
            d=t.d,
            committee=committee,
            threshold=t.threshold,
            min_cohort=t.min_cohort,
            clip=t.clip,
            bits=t.bits,
            level_bits=t.level_bits,
            session_id=session,
            round=number,
            task_digest=job.task_digest if job is not None else bytes(32),
            model_digest=job.model_digest if job is not None else bytes(32),
        )

    def _committee(self, rnd: _Round, agg: OneShotAggregator, included: tuple[int, ...]) -> Any:
        cfg = rnd.config
        timeout = self.options.committee_timeout
        t0 = self.clock()
        checks = self._ask_all(
            {
                m: pb.CommitteeTask(check=wire.check_to_pb(cfg, agg.check_request(m)))
                for m in cfg.committee
            },
            timeout,
        )
        culprits: dict[int, list[int]] = {}
        ok = []
        for m, ans in checks.items():
            if ans.HasField("complaint"):
                for u in ans.complaint.culprits:
                    culprits.setdefault(u, []).append(m)
            elif ans.HasField("checked") and ans.checked:
                ok.append(m)
        if culprits:
            for u, by in culprits.items():
                self.store.suspend(
                    u, rnd.number, f"bad shares (complaint of members {by})", self.wall()
                )
            raise SecAggError(
                "committee complaints name clients "
                + ", ".join(f"{u} (by {by})" for u, by in sorted(culprits.items()))
            )
        sign = pb.SignTask(config=wire.config_to_pb(cfg), included=list(included))
        sigs = self._ask_all({m: pb.CommitteeTask(sign=sign) for m in ok}, timeout)
        for m, ans in sigs.items():
            if ans.HasField("set_signature"):
                try:
                    agg.add_signature(SetSignature(m, bytes(ans.set_signature.signature)))
                except SecAggError as exc:
                    log.warning("round %d: member %d's signature refused: %s", rnd.number, m, exc)
        req = agg.release_request()  # OneShotInsufficient below t_c signatures
        signers = [s.member_id for s in req.signatures]
        rel = pb.CommitteeTask(release=wire.release_to_pb(cfg, req))
        sums = self._ask_all({m: pb.CommitteeTask(release=rel.release) for m in signers}, timeout)
        for m, ans in sums.items():
            if ans.HasField("share_sum"):
                try:
                    agg.add_share_sum(wire.share_sum_from_pb(cfg, m, ans.share_sum))
                except (SecAggError, wire.WireError) as exc:
                    log.warning("round %d: member %d's share sum refused: %s", rnd.number, m, exc)
        rnd.timings["committee_s"] = self.clock() - t0
        return agg.finish()

    def _publish(self, rnd: _Round, result: Any, t_open: float) -> None:
        cfg = rnd.config
        out = self.options.output
        out.mkdir(parents=True, exist_ok=True)
        included = list(result.included)
        extra: dict[str, Any] = {}
        if self.task is not None and rnd.task_round is not None:
            # The released sum mod 2^b is the distributed-DP ring sum (SPEC.md O9).
            modulus = 1 << self.task.dp_cfg.bits
            ring_sum = np.mod(result.int_sum, modulus).astype(np.uint32)
            extra = self.task.publish(
                rnd.number, cfg, rnd.task_round, ring_sum, frozenset(included), out
            )
            npy, digest = Path(extra["npy"]), str(extra["aggregate_sha256"])
        else:
            npy = out / f"round-{rnd.number}.npy"
            digest = save_npy(npy, np.asarray(result.aggregate, dtype=np.float64))
        dropped = sorted(self.members - set(included))
        sizes = sorted(rnd.upload_bytes.values())
        median = sizes[len(sizes) // 2] if sizes else 0
        summary: dict[str, Any] = {
            "round": rnd.number,
            "mode": "oneshot",
            "session_id": cfg.session_id.hex() if cfg.session_id else "",
            "included": included,
            "dropped": dropped,
            "rejected": {str(u): why for u, why in result.rejected.items()},
            "committee": list(cfg.committee),
            "threshold": cfg.threshold,
            "decryptors": list(result.decryptors),
            "error_bound": result.error_bound,
            "d": cfg.d,
            "ring_dim": cfg.ring.n,
            "log2_q": cfg.ring.log_q,
            "chunks": cfg.chunks,
            "upload_bytes_median": median,
            "upload_vs_float32": median / (4 * cfg.d),
            "aggregate_sha256": digest,
            "timings": {**rnd.timings, "round_s": self.clock() - t_open},
            **extra,
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


class OneShotAggregatorService(pb_grpc.OneShotAggregatorServicer):
    """The four RPCs; every check ends in one clear status, never a traceback."""

    def __init__(self, runner: OneShotRoundRunner) -> None:
        self.runner = runner

    def _member(self, context: grpc.ServicerContext, claimed: int) -> int:
        peer = member_from_certificate(context)
        if peer != claimed or peer not in self.runner.members:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"member {peer} cannot act as {claimed}"
            )
        return peer

    def GetRound(self, request: pb.GetRoundRequest, context: grpc.ServicerContext) -> pb.RoundInfo:
        me = self._member(context, request.client_id)
        r = self.runner
        with r.cond:
            if me in {u for u, _, _ in r.store.suspended()}:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"member {me} is suspended")
            cur = await_round(r, context, request.after_round, lambda rnd: rnd.open_for_uploads)
            if cur is None or not cur.open_for_uploads or cur.info is None:
                return pb.RoundInfo(finished=True)
            info = pb.RoundInfo()
            info.CopyFrom(cur.info)
            info.deadline_s = max(0.0, cur.deadline - r.clock())
            return info

    def Upload(
        self, request_iterator: Iterator[pb.UploadPart], context: grpc.ServicerContext
    ) -> pb.UploadAck:
        r = self.runner
        sender = -1
        rnd: _Round | None = None
        asm: wire.UploadAssembler | None = None
        for part in request_iterator:
            if rnd is None:
                sender = self._member(context, part.sender)
                with r.cond:
                    rnd = r.current
                if rnd is None or rnd.number != part.round or not rnd.open_for_uploads:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "that round is not open")
                assert rnd is not None
                if bytes(part.session_id) != rnd.config.session_id:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong session")
                if sender in {u for u, _, _ in r.store.suspended()}:
                    context.abort(
                        grpc.StatusCode.PERMISSION_DENIED, f"member {sender} is suspended"
                    )
                asm = wire.UploadAssembler(rnd.config)
            assert asm is not None and rnd is not None
            try:
                asm.add(part)
            except wire.WireError as exc:
                with r.add_lock:
                    assert rnd.agg is not None
                    rnd.agg.rejected.setdefault(sender, str(exc))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if rnd is None or asm is None or rnd.agg is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty upload")
        assert rnd is not None and asm is not None and rnd.agg is not None
        try:
            up = asm.upload()
        except wire.WireError as exc:
            with r.add_lock:
                rnd.agg.rejected.setdefault(sender, str(exc))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        with r.add_lock:
            if not rnd.open_for_uploads:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the round closed")
            try:
                rnd.agg.add(up)
            except SecAggError as exc:
                code = (
                    grpc.StatusCode.ALREADY_EXISTS
                    if sender in rnd.agg.included
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                context.abort(code, str(exc))
        with r.cond:
            rnd.upload_bytes[sender] = up.nbytes
            r.store.log_stage(rnd.number, "UPLOAD", sender, "completed", "", r.wall())
            r.cond.notify_all()
        return pb.UploadAck(parts=asm.parts)

    def NextTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.CommitteeTask:
        me = self._member(context, request.member_id)
        r = self.runner
        if me not in r.candidates:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"member {me} is not a committee candidate"
            )
        with r.cond:
            r.poll(me, +1)
            try:
                got = long_poll(r.cond, context, lambda: r.has_task(me))
            finally:
                r.poll(me, -1)
            if not got:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no task yet")
            return r.next_task(me)

    def Answer(self, request: pb.CommitteeAnswer, context: grpc.ServicerContext) -> pb.AnswerAck:
        me = self._member(context, request.member_id)
        with self.runner.cond:
            self.runner.answer(me, request)
        return pb.AnswerAck()


def serve_oneshot(
    options: OneShotServeOptions,
    consortium: Consortium,
    state_dir: Path,
    listen: str | Sequence[str],
    *,
    ready: Callable[[int], None] | None = None,
    stop_event: threading.Event | None = None,
    task: OneShotDpTask | None = None,
) -> int:
    """Run the one-shot service over mutual TLS until the scheduled rounds are done (or
    ``stop_event``); returns the number of rounds completed in this run. With ``task``, each
    round runs that distributed-DP job (federated DP-LoRA) instead of a plain sum."""
    store = AggregatorStore(state_dir / "aggregator.db")
    runner = OneShotRoundRunner(options, consortium, store, task=task)
    limit = wire.max_message_bytes(runner.template.with_session(bytes(16)))
    if task is not None:
        limit += task.max_message_bytes()
    server, health_servicer, port = start_server(
        consortium,
        listen,
        lambda server: pb_grpc.add_OneShotAggregatorServicer_to_server(  # type: ignore[no-untyped-call]
            OneShotAggregatorService(runner), server
        ),
        service_name="secagg.oneshot.v1.OneShotAggregator",
        limit=limit,
        max_workers=options.max_workers,
    )
    log.info(
        "one-shot aggregator listening on port %d (mutual TLS), %d members",
        port,
        len(runner.members),
    )
    if ready is not None:
        ready(port)
    completed_before = completed_rounds(store.rounds())
    try:
        drive(
            runner,
            server,
            health_servicer,
            thread_name="oneshot-round-runner",
            stop_event=stop_event,
            linger=1.0,
        )
    finally:
        done = completed_rounds(store.rounds()) - completed_before
        store.close()
    return done
