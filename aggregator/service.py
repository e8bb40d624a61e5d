"""The aggregator: a gRPC service around :class:`secagg.SecAggServer`, one round after another.

This module is the threaded transport (``serve --transport threads``: one worker thread per
call, long-polls included); ``serve``'s default is :mod:`aggregator.aio_service`, which reuses
this module's round logic on one asyncio event loop.

A :class:`RoundRunner` thread opens each round with a fresh session id, closes every stage at its
deadline (or as soon as every expected client has answered), and publishes the result. The gRPC
handlers only decode, check the caller's certificate identity, and hand messages to the state
machine under one lock; long-polls (``GetRound``, ``Await``) wait on a condition variable.

Failure handling: a client that misses a deadline is a dropout; a malformed, oversized or
unauthenticated message is refused (INVALID_ARGUMENT / RESOURCE_EXHAUSTED / PERMISSION_DENIED)
and its sender excluded from the round; the service keeps serving. A retried submission that is
byte-identical to one already accepted is acknowledged again (idempotent), anything else from
the same sender in the same stage is a replay and is refused.

With ``ServeOptions.norm_bound`` (docs/protocol.md §7, secagg/SPEC.md D12) every masked input
carries a commitment, and the CHECK stage collects each client's claims and proof; a proof is
verified when it arrives, outside the lock (``SecAggServer.preverify``). A client excluded or
named for a provably false contribution is recorded in the state folder and refused in every
later round until an operator clears it (``secagg-aggregator clear-cheater``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from aggregator.lifecycle import StateLock
from aggregator.membership import Membership, MembershipService, add_membership_service
from aggregator.metrics import Metrics, OpsServer
from aggregator.parameters import resolve
from aggregator.rounds import (
    RoundRecord,
    RoundRunnerBase,
    await_round,
    completed_rounds,
    drive,
    long_poll,
    member_from_certificate,
    round_or_abort,
    start_server,
)
from aggregator.store import AggregatorStore
from aggregator.tasks import RoundTask, StatisticsTask, TaskRound
from protos import wire
from protos.consortium import Consortium
from protos.secagg.v1 import secagg_pb2 as pb
from protos.secagg.v1 import secagg_pb2_grpc as pb_grpc
from secagg import (
    ProtocolAbort,
    RoundConfig,
    SecAggError,
    SecAggServer,
    Stage,
    UnexpectedMessage,
)
from secagg.accumulate import Accumulator
from secagg.messages import CheckResponse, ServerMessage, stage_of

__all__ = ["AggregatorService", "RoundRunner", "ServeOptions", "accumulators", "serve"]

log = logging.getLogger("secagg.aggregator")


@dataclass(frozen=True)
class ServeOptions:
    """What ``secagg-aggregator serve`` runs: ``rounds`` rounds of ``d``-vectors."""

    d: int
    t: int
    k: int | None = None
    clip: float = 1.0
    bits: int | None = None
    rounds: int = 1
    stage_timeout: float = 30.0
    first_round_wait: float = 60.0
    # Once a stage has a quorum (t + 1 answers), wait at most this long for stragglers.
    straggler_grace: float | None = None
    output: Path = Path("output")
    max_workers: int | None = None
    # Contribution verification (docs/protocol.md §7): the squared L2 bound on each client's
    # centred encoded vector; None turns it off.
    norm_bound: int | None = None
    # (k, t) were chosen automatically for this dropout rate: chosen again when a new registry
    # changes the membership. None: t and k stay as given.
    auto_dropout: float | None = None
    # A new registry with more members than this is not adopted (serve-fl: the task's DP
    # calibration is fixed at start-up).
    max_members: int | None = None
    # Where each round's running sum and unmasking run: "local" (this process) or "ray"
    # (aggregator.ray_engine: a Ray cluster at ray_address, None starting a local one).
    engine: str = "local"
    ray_address: str | None = None
    ray_shards: int = 2
    ray_chunk: int = 1 << 18


@dataclass(kw_only=True)
class _Round(RoundRecord[RoundConfig]):
    server: SecAggServer
    stage: Stage = Stage.ADVERTISE_KEYS
    closed: dict[Stage, dict[int, ServerMessage]] = field(default_factory=dict)
    accepted: dict[tuple[Stage, int], bytes] = field(default_factory=dict)
    opened_at: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    task: TaskRound = field(default_factory=TaskRound)


class RoundRunner(RoundRunnerBase[ServeOptions, _Round]):
    """Drives rounds and owns the shared state the RPC handlers read."""

    def __init__(
        self,
        options: ServeOptions,
        registry: Mapping[int, bytes],
        store: AggregatorStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        task: RoundTask | None = None,
        membership: Membership | None = None,
    ) -> None:
        super().__init__(options, store, clock=clock, wall=wall)
        self.task: RoundTask = task if task is not None else StatisticsTask()
        self.registry = dict(registry)
        self.membership = membership
        # Where each round's running sum lives (``--engine ray``); None: in this process.
        self.accumulators: Callable[[RoundConfig], Accumulator] | None = None
        # Validate once; a fresh session id per round is added in _open.
        self.template = self._template(options.t, options.k)
        self._recover(log, "round %d was interrupted by a restart: aborted; it will not resume")
        self.suspended: dict[int, str] = {u: f"round {r}: {why}" for u, r, why in store.suspended()}

    def _template(self, t: int, k: int | None) -> RoundConfig:
        o = self.options
        return RoundConfig(
            n=len(self.registry), t=t, d=o.d, k=k, clip=o.clip, bits=o.bits, norm_bound=o.norm_bound
        )

    def _follow_registry(self) -> None:
        """Before a round opens: adopt a newer registry (a revocation, rotation or enrolment
        the administrator published), choosing (k, t) again if they were automatic. A registry
        this run cannot serve stops the service with the reason (members are never admitted
        against a registry that revoked them)."""
        m = self.membership
        if m is None or not m.refresh():
            return
        if self.metrics is not None:
            self.metrics.registry_in_use(m.current.version, len(m.current.members))
        o = self.options
        if o.max_members is not None and len(m.current.members) > o.max_members:
            log.error(
                "registry v%d has %d members, more than this run was set up for (%d): "
                "restart to admit them; stopping",
                m.current.version,
                len(m.current.members),
                o.max_members,
            )
            self.stop()
            return
        try:
            params = resolve(
                m.current,
                d=o.d,
                threshold=None if o.auto_dropout is not None else self.template.t,
                neighbors=None if o.auto_dropout is not None else o.k,
                expected_dropout=o.auto_dropout or 0.0,
                clip=o.clip,
                bits=o.bits,
                norm_bound=o.norm_bound,
            )
            self.registry = m.identities
            self.template = self._template(params.t, params.k)
        except SecAggError as exc:
            log.error("registry v%d cannot be served: %s; stopping", m.current.version, exc)
            self.stop()
            return
        log.info("%s", params.note)
        if params.warning:
            log.warning("%s", params.warning)

    # -- the round loop -------------------------------------------------------------------

    def _open(self) -> _Round:
        self._follow_registry()
        number, session = self._new_session()
        task = self.task.begin(number)
        cfg = dataclasses.replace(
            self.template,
            d=task.d if task.d is not None else self.template.d,
            bits=task.bits if task.bits is not None else self.template.bits,
            model_digest=task.model_digest,
            dp_digest=task.task_digest,
            session_id=session,
            round=number,
        )
        self._record_open(number, session, cfg)
        acc = None if self.accumulators is None else self.accumulators(cfg)
        server = SecAggServer(cfg, self.registry, accumulator=acc)
        return _Round(number=number, config=cfg, server=server, task=task)

    def _expected(self, rnd: _Round) -> frozenset[int]:
        s = rnd.server
        return {
            Stage.ADVERTISE_KEYS: frozenset(self.registry),
            Stage.SHARE_KEYS: s.u1,
            Stage.MASKED_INPUT: s.u2,
            Stage.CHECK: s.uploaded,
            Stage.CONSISTENCY: s.u3,
            Stage.UNMASK: s.u4,
        }[rnd.stage] - self.suspended.keys()

    def _answered(self, rnd: _Round) -> int:
        return sum(1 for (st, _) in rnd.accepted if st is rnd.stage)

    def _run_round(self, *, first: bool) -> None:
        with self.cond:
            rnd = self._open()
            rnd.opened_at = self.clock()
            self.current = rnd
            self.cond.notify_all()
        if self.metrics is not None:
            self.metrics.round_opened(rnd.number)
        log.info(
            "round %d open: n=%d t=%d k=%d d=%d, ring 2^%d, %s",
            rnd.number,
            rnd.config.n,
            rnd.config.t,
            rnd.config.degree,
            rnd.config.d,
            rnd.config.ring_bits,
            "contributions unverified"
            if rnd.config.norm_bound is None
            else f"norm proofs (squared L2 <= {rnd.config.norm_bound})",
        )
        for stage in rnd.config.stages:
            t0 = self.clock()
            timeout = self._timeout(
                self.options.stage_timeout, first=first and stage is Stage.ADVERTISE_KEYS
            )
            with self.cond:
                rnd.deadline = t0 + timeout
                expected = self._expected(rnd)
                self._wait(self._stage_done(rnd, stage, expected), lambda: rnd.deadline)
                if self._stop.is_set():
                    self._end(rnd, completed=False, reason="the aggregator is shutting down")
                    return
                try:
                    out = rnd.server.close_stage()
                except ProtocolAbort as exc:
                    why = self._explain(rnd, str(exc))
                    log.warning("round %d aborted in %s: %s", rnd.number, stage.name, why)
                    self._suspend(rnd)
                    self._end(rnd, completed=False, reason=f"round aborted: {exc}")
                    return
                rnd.closed[stage] = out
                rnd.stage_seconds[stage.name] = self.clock() - t0
                answered = self._answered(rnd)
                nxt = rnd.config.next_stage(stage)
                if nxt is not None:
                    rnd.stage = nxt
                self.cond.notify_all()
            log.info(
                "round %d %-14s closed: %d/%d answered, %d rejected (%.2f s)",
                rnd.number,
                stage.name,
                answered,
                len(expected),
                len([u for u in rnd.server.rejected if u in expected]),
                self.clock() - t0,
            )
        with self.cond:
            self._suspend(rnd)
        try:
            self._publish(rnd)
        except Exception as exc:  # the service must outlive a failing task
            log.exception("round %d: publishing the result failed", rnd.number)
            with self.cond:
                self._end(rnd, completed=False, reason=f"publishing failed: {exc}")

    def _suspend(self, rnd: _Round) -> None:
        """Record every client the round excluded or named for a false contribution: refused
        from now on, until an operator clears it (SPEC.md D12)."""
        for u, why in sorted(rnd.server.cheaters.items()):
            if u not in self.suspended:
                self.store.suspend(u, rnd.number, why, self.wall())
                self.suspended[u] = f"round {rnd.number}: {why}"
                log.warning("round %d: member %d suspended: %s", rnd.number, u, why)

    def _stage_done(
        self, rnd: _Round, stage: Stage, expected: frozenset[int]
    ) -> Callable[[float], bool]:
        """Whether every expected client has answered ``stage`` (accepted or rejected); once a
        quorum (t + 1) has, the deadline moves to at most ``straggler_grace`` from then."""
        grace = self.options.straggler_grace
        quorum_at: float | None = None

        def done(now: float) -> bool:
            nonlocal quorum_at
            answered = {u for (st, u) in rnd.accepted if st is stage}
            answered |= set(rnd.server.rejected) & expected
            if stage is Stage.ADVERTISE_KEYS and self.membership is not None:  # they never will
                answered |= set(self.membership.declined(rnd.number, rnd.config.session_id or b""))
            if grace is not None and quorum_at is None and len(answered) > rnd.config.t:
                quorum_at = now
                rnd.deadline = min(rnd.deadline, now + grace)
            return expected <= answered

        return done

    def _publish(self, rnd: _Round) -> None:
        res = rnd.server.result
        cfg = rnd.config
        out = self.options.output
        out.mkdir(parents=True, exist_ok=True)
        extra = self.task.publish(rnd.number, cfg, rnd.task, res.ring_sum, res.included, out)
        included = sorted(res.included)
        dropped = sorted(set(self.registry) - res.included)
        summary: dict[str, Any] = {
            "round": rnd.number,
            "session_id": cfg.session_id.hex() if cfg.session_id else "",
            "included": included,
            "dropped": dropped,
            "rejected": {str(u): why for u, why in rnd.server.rejected.items()},
            "cheaters": {str(u): why for u, why in rnd.server.cheaters.items()},
            "stage_sets": {
                "U1": sorted(rnd.server.u1),
                "U2": sorted(rnd.server.u2),
                "uploaded": sorted(rnd.server.uploaded),
                "U3": sorted(rnd.server.u3),
                "U4": sorted(rnd.server.u4),
                "U5": sorted(rnd.server.u5),
            },
            "ring_bits": cfg.ring_bits,
            "d": cfg.d,
            "upload_dim": cfg.upload_dim,
            "norm_bound": cfg.norm_bound,
            "timings": {
                "stages_s": rnd.stage_seconds,
                "round_s": self.clock() - rnd.opened_at,
            },
            **extra,
        }
        js = self._record_result(
            rnd,
            out,
            summary,
            included=included,
            dropped=dropped,
            npy=str(extra.get("npy", "")),
            digest=str(extra.get("aggregate_sha256", "")),
        )
        log.info(
            "round %d published: %d included, %d dropped -> %s",
            rnd.number,
            len(included),
            len(dropped),
            js,
        )
        with self.cond:
            self._end(rnd, completed=True, reason="", included=tuple(included))


class _Undecodable:
    """What a request that does not parse as its protobuf type decodes to (never None, which
    grpc would answer with INTERNAL and a logged traceback)."""

    def __init__(self, why: str) -> None:
        self.why = why


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception as exc:  # protobuf's DecodeError, whatever the runtime
            return _Undecodable(f"undecodable request: {exc}")

    return decode


def _refusing_undecodable(
    method: Callable[[Any, grpc.ServicerContext], Any],
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)
        return method(request, context)

    return handler


def _add_service(service: AggregatorService, server: grpc.Server) -> None:
    """``add_AggregatorServicer_to_server``, but a request that is not valid protobuf gets
    INVALID_ARGUMENT like any other malformed message."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(service, name)),
            request_deserializer=_lenient(req.FromString),
            response_serializer=resp.SerializeToString,
        )
        for name, req, resp in (
            ("GetRound", pb.GetRoundRequest, pb.RoundInfo),
            ("Submit", pb.ClientEnvelope, pb.SubmitAck),
            ("Await", pb.AwaitRequest, pb.ServerEnvelope),
            ("GetModel", pb.GetModelRequest, pb.ModelBlob),
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("secagg.v1.Aggregator", handlers),)
    )


class AggregatorService(pb_grpc.AggregatorServicer):
    """The three RPCs; every check ends in one clear status, never a traceback."""

    def __init__(self, runner: RoundRunner, *, insecure: bool = False) -> None:
        self.runner = runner
        self.insecure = insecure

    def _who(self, context: grpc.ServicerContext, claimed: int) -> int:
        """``claimed``, if the caller's certificate is that member's current one."""
        m = self.runner.membership
        if m is not None:
            m.authorize(context, claimed)
        else:
            peer = claimed if self.insecure else member_from_certificate(context)
            if peer != claimed:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate of member {peer} cannot speak for member {claimed}",
                )
            if claimed not in self.runner.registry:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{claimed} is not a member")
        why = self.runner.suspended.get(claimed)
        if why is not None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"member {claimed} is suspended ({why}); an operator must clear it with "
                "'secagg-aggregator clear-cheater'",
            )
        return claimed

    def GetRound(self, request: pb.GetRoundRequest, context: grpc.ServicerContext) -> pb.RoundInfo:
        self._who(context, request.client_id)
        r = self.runner
        with r.cond:
            cur = await_round(
                r,
                context,
                request.after_round,
                lambda rnd: not rnd.ended and rnd.stage is Stage.ADVERTISE_KEYS,
            )
            if cur is None or cur.ended or cur.number <= request.after_round:
                return pb.RoundInfo(finished=True)
            return pb.RoundInfo(
                config=wire.config_to_pb(cur.config),
                stage_deadline_s=max(0.0, cur.deadline - r.clock()),
                task=cur.task.task,
            )

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.ModelBlob:
        self._who(context, request.client_id)
        r = self.runner
        with r.cond:
            rnd = round_or_abort(r, context, request.round, bytes(request.session_id))
            return pb.ModelBlob(data=rnd.task.model)

    def Submit(self, request: pb.ClientEnvelope, context: grpc.ServicerContext) -> pb.SubmitAck:
        sender = self._who(context, request.sender)
        r = self.runner
        with r.cond:
            rnd = r.current
        if rnd is None or rnd.ended or rnd.number != request.round:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "that round is not open")
        assert rnd is not None
        if bytes(request.session_id) != rnd.config.session_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong session for this round")
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        try:
            msg = wire.client_from_pb(request, rnd.config)  # decoding outside the lock
        except wire.WireError as exc:
            with r.cond:
                rnd.server.rejected.setdefault(sender, f"{rnd.stage.name}: malformed: {exc}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        stage = stage_of(msg)
        if (
            isinstance(msg, CheckResponse)
            and (stage, sender) not in rnd.accepted
            and sender not in rnd.server.rejected
        ):
            rnd.server.preverify(msg)  # SPEC.md D12: up to a second of work, outside the lock
        with r.cond:
            if rnd.ended:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the round has ended")
            prior = rnd.accepted.get((stage, sender))
            if prior is not None and prior == digest:
                return pb.SubmitAck(stage=wire.STAGE_TO_PB[stage])  # an idempotent retry
            already_excluded = sender in rnd.server.rejected
            try:
                rnd.server.receive(msg)
            except ProtocolAbort as exc:
                if not already_excluded:  # one row per exclusion: the log cannot be flooded
                    r.store.log_stage(
                        rnd.number, stage.name, sender, "rejected", str(exc), r.wall()
                    )
                code = (
                    grpc.StatusCode.FAILED_PRECONDITION
                    if isinstance(exc, UnexpectedMessage)
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                context.abort(code, str(exc))
            rnd.accepted[(stage, sender)] = digest
            r.store.log_stage(rnd.number, stage.name, sender, "completed", "", r.wall())
            r.cond.notify_all()
        return pb.SubmitAck(stage=wire.STAGE_TO_PB[stage])

    def Await(self, request: pb.AwaitRequest, context: grpc.ServicerContext) -> pb.ServerEnvelope:
        me = self._who(context, request.client_id)
        stage = wire.STAGE_FROM_PB.get(request.stage)
        if stage is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown stage")
        assert stage is not None
        r = self.runner
        with r.cond:
            rnd = round_or_abort(r, context, request.round, bytes(request.session_id))

            def closed() -> bool:
                return rnd.ended or (stage is not Stage.UNMASK and stage in rnd.closed)

            if not long_poll(r.cond, context, closed):
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the stage is still open")
            cfg = rnd.config
            base = pb.ServerEnvelope(round=cfg.round, session_id=cfg.session_id, recipient=me)
            out = rnd.closed.get(stage, {})
            if stage is Stage.UNMASK and rnd.ended:
                base.outcome.CopyFrom(
                    pb.RoundOutcome(
                        completed=rnd.completed, reason=rnd.reason, included=list(rnd.included)
                    )
                )
                return base
            msg = out.get(me)
            if msg is None:
                why = (
                    rnd.reason
                    if rnd.ended and not rnd.completed
                    else (
                        f"not part of the round after {stage.name}"
                        + (f" ({rnd.server.rejected[me]})" if me in rnd.server.rejected else "")
                    )
                )
                base.outcome.CopyFrom(pb.RoundOutcome(completed=False, reason=why))
                return base
        return wire.server_to_pb(msg, cfg)


def accumulators(options: ServeOptions) -> Callable[[RoundConfig], Accumulator] | None:
    """The running sum's home for each round under ``options.engine`` (None: in process)."""
    if options.engine == "local":
        return None
    if options.engine != "ray":
        raise ValueError(f"unknown engine {options.engine!r} (local or ray)")
    from aggregator.ray_engine import RayEngine

    engine = RayEngine(options.ray_address, shards=options.ray_shards, chunk=options.ray_chunk)
    log.info(
        "engine: Ray at %s, %d accumulation shards, unmasking in chunks of %d",
        options.ray_address or "a local cluster",
        options.ray_shards,
        options.ray_chunk,
    )
    return lambda cfg: engine.accumulator(cfg.upload_dim, cfg.n)


def serve(
    options: ServeOptions,
    consortium: Consortium,
    state_dir: Path,
    listen: str | Sequence[str],
    *,
    insecure: bool = False,
    ready: Callable[[int], None] | None = None,
    stop_event: threading.Event | None = None,
    task: RoundTask | None = None,
    metrics: Metrics | None = None,
    metrics_listen: str | None = None,
) -> int:
    """Run the service until the scheduled rounds are done (or ``stop_event``); returns the
    number of rounds this run completed. The state folder is locked for the whole run, and
    ``listen`` may name several addresses (a host reached under several names)."""
    with StateLock(state_dir):
        store = AggregatorStore(state_dir / "aggregator.db")
        try:
            before = completed_rounds(store.rounds())
            _serve(
                options,
                consortium,
                store,
                listen,
                insecure=insecure,
                ready=ready,
                stop_event=stop_event,
                task=task,
                metrics=metrics,
                metrics_listen=metrics_listen,
            )
            return completed_rounds(store.rounds()) - before
        finally:
            store.close()


def _serve(
    options: ServeOptions,
    consortium: Consortium,
    store: AggregatorStore,
    listen: str | Sequence[str],
    *,
    insecure: bool,
    ready: Callable[[int], None] | None,
    stop_event: threading.Event | None,
    task: RoundTask | None,
    metrics: Metrics | None,
    metrics_listen: str | None,
) -> None:
    membership = Membership(consortium, insecure=insecure)
    runner = RoundRunner(options, consortium.registry, store, task=task, membership=membership)
    runner.metrics = metrics
    runner.accumulators = accumulators(options)
    limit = max(
        wire.max_message_bytes(runner.template.with_session(bytes(16))),
        runner.task.max_message_bytes(),
    )
    n = len(consortium.registry)

    def is_open(number: int, session: bytes) -> bool:
        with runner.cond:
            cur = runner.current
            return (
                cur is not None
                and not cur.ended
                and cur.number == number
                and (cur.config.session_id == session)
            )

    def notify() -> None:
        with runner.cond:
            runner.cond.notify_all()

    def add(server: grpc.Server) -> None:
        _add_service(AggregatorService(runner, insecure=insecure), server)
        add_membership_service(MembershipService(membership, is_open, notify), server)

    server, health_servicer, port = start_server(
        consortium,
        listen,
        add,
        service_name="secagg.v1.Aggregator",
        limit=limit,
        max_workers=options.max_workers,
        options=[("grpc.max_concurrent_streams", 4 * n + 64)],
        insecure=insecure,
        interceptors=[metrics.interceptor()] if metrics is not None else [],
    )
    ops = None
    if metrics is not None:
        metrics.registry_in_use(membership.current.version, n)
        if metrics_listen is not None:
            ops = OpsServer(metrics_listen, metrics, lambda: not runner.finished)
            ops.start()
            log.info(
                "metrics and health on http://%s:%d/metrics, /healthz",
                metrics_listen.rpartition(":")[0],
                ops.port,
            )
    log.info(
        "aggregator listening on port %d (%s), %d members, registry v%d",
        port,
        "INSECURE dev mode" if insecure else "mutual TLS",
        n,
        membership.current.version,
    )
    if ready is not None:
        ready(port)
    try:
        drive(
            runner,
            server,
            health_servicer,
            thread_name="round-runner",
            stop_event=stop_event,
            linger=1.0,  # members asking for a next round hear that there is none
        )
    finally:
        if ops is not None:
            ops.close()


def store_rounds(state_dir: Path) -> list[dict[str, Any]]:
    """The durable round history (for the CLI and tests)."""
    store = AggregatorStore(state_dir / "aggregator.db")
    try:
        return store.rounds()
    finally:
        store.close()
