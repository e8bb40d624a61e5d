"""The aggregator on ``grpc.aio``: one event loop for every client, no thread per waiting client.

The threaded service (:mod:`aggregator.service`) parks one worker thread in every long-poll
(``GetRound``, ``Await``), so its pool must hold ``2n + 16`` threads and a round of a few
thousand members spends its time switching between them. Here a waiting client is a coroutine
parked on an :class:`asyncio.Event`; the round loop is a coroutine too. Same wire protocol, same
checks, same per-stage deadlines, same durable state: an existing client cannot tell the two
apart, and the end-to-end tests run against this one (it is ``serve``'s default).

Where the work happens:

* the event loop: the RPC handlers' checks (identity, round, session), the round loop's
  bookkeeping, building replies;
* a small thread pool (``ServeOptions.max_workers``, default 4): decoding an upload from
  protobuf, hashing it (idempotent retries), verifying a proof (``SecAggServer.preverify``),
  and every call into the state machine (``receive``, ``close_stage``), which is serialised by
  one :class:`asyncio.Lock` exactly as the threaded service's lock serialises it.

Bounded memory: an upload is added into the round's one running sum (mod 2^b) as it arrives
and dropped (``SecAggServer`` keeps uploads only in a verified round, until the CHECK stage
closes, to be able to take an excluded one out again). What is held at once is the running sum
plus the uploads gRPC has received but not yet handed over, at most one per client in flight.

A stage's "completed" rows of the audit log are written in one transaction when the stage
closes, not one fsync per client (a rejection is written at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aggregator.lifecycle import EXCLUSIVE_PORT, StateLock, check_can_listen
from aggregator.membership import Membership, MembershipService
from aggregator.metrics import Metrics, OpsServer
from aggregator.rounds import completed_rounds, member_from_certificate, round_or_abort
from aggregator.service import (
    RoundRunner,
    ServeOptions,
    _lenient,
    _Round,
    _Undecodable,
    accumulators,
)
from aggregator.store import AggregatorStore
from aggregator.tasks import RoundTask
from protos import wire
from protos.consortium import Consortium
from protos.secagg.consortium.v1 import consortium_pb2 as cpb
from protos.secagg.consortium.v1 import consortium_pb2_grpc as cpb_grpc
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import ProtocolAbort, Stage, UnexpectedMessage
from secagg.messages import CheckResponse, stage_of

__all__ = ["AioAggregatorService", "AsyncRoundRunner", "serve_aio"]

log = logging.getLogger("secagg.aggregator")
_T = TypeVar("_T")
_DEFAULT_WORKERS = 4


class _Aborted(Exception):
    """What :class:`_SyncContext.abort` raises; the handler turns it into ``await abort``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _SyncContext:
    """The part of a servicer context the shared (synchronous) checks use, over an aio context:
    ``abort`` raises at once, as it does in the threaded server (aio's is a coroutine)."""

    def __init__(self, ctx: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._ctx = ctx

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)

    def auth_context(self) -> Any:
        return self._ctx.auth_context()

    def time_remaining(self) -> float | None:
        return self._ctx.time_remaining()

    def is_active(self) -> bool:
        return not self._ctx.done()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (no error on the timeout)."""
    if timeout <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


class AsyncRoundRunner(RoundRunner):
    """:class:`RoundRunner`'s rounds as a coroutine. Handlers wait on ``changed`` (a stage
    closed, a round opened or ended); the round loop waits on ``submitted`` (an answer came)."""

    def __init__(self, *args: Any, pool: ThreadPoolExecutor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = pool
        # Publishing runs the task's side effects (the privacy ledger's SQLite connection, files):
        # always on this one thread, in round order, never on whichever pool thread is free.
        self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="secagg-publish")
        self.lock = asyncio.Lock()  # the state machine's: one call at a time
        self._changed = asyncio.Event()
        self._submitted = asyncio.Event()
        self._log_rows: list[tuple[int, str, int, str, str, float]] = []
        self.told: dict[int, set[int]] = {}  # round -> members that fetched its outcome

    # -- waking ----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every long-poll: the round moved on."""
        self._changed.set()
        self._changed = asyncio.Event()
        self.notify_runner()

    def notify_runner(self) -> None:
        """Wake the round loop only (an answer arrived: maybe the stage is complete)."""
        self._submitted.set()
        self._submitted = asyncio.Event()

    async def off(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the thread pool (CPU work off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def long_poll(self, ctx: _SyncContext, pred: Callable[[], bool]) -> bool:
        """Until ``pred()`` (checked on every round change); False when the call's deadline is
        near. A caller that goes away cancels this coroutine."""
        while True:
            ev = self._changed
            if pred():
                return True
            remaining = ctx.time_remaining()
            if remaining is not None and remaining <= 0.05:
                return False
            await _wait(ev, 5.0 if remaining is None else min(5.0, remaining - 0.05))

    async def linger(self) -> None:
        """After the last round: serve a while longer, so that members asking for a next round
        hear that there is none and the last round's members still fetch its outcome (a
        loaded member may ask seconds late): at least a second, until every member that
        unmasked has its outcome, at most ``min(stage_timeout, 30)`` seconds."""
        await asyncio.sleep(1.0)
        last = self.current
        if last is None or not last.completed:
            return
        due = last.server.u4 - self.suspended.keys()
        deadline = self.clock() + min(self.options.stage_timeout, 30.0)
        while self.clock() < deadline and not due <= self.told.get(last.number, set()):
            await asyncio.sleep(0.2)

    def log_completed(self, rnd: int, stage: str, client: int) -> None:
        self._log_rows.append((rnd, stage, client, "completed", "", self.wall()))

    async def flush_log(self) -> None:
        rows, self._log_rows = self._log_rows, []
        if rows:
            await self.off(self.store.log_stages, rows)

    # -- the round loop ------------------------------------------------------------------------

    async def arun(self) -> None:
        try:
            for i in range(self.options.rounds):
                if self._stop.is_set():
                    break
                await self._arun_round(first=i == 0)
        finally:
            await self.flush_log()
            self.finished = True
            self._on_finished()
            self.notify()

    async def _until(self, done: Callable[[float], bool], deadline: Callable[[], float]) -> None:
        """Until ``done(now)`` (checked under the lock on every answer), the deadline, or stop."""
        while not self._stop.is_set():
            ev = self._submitted
            now = self.clock()
            async with self.lock:
                if done(now):
                    return
            left = deadline() - now
            if left <= 0:
                return
            await _wait(ev, min(left, 0.5))

    def _end_now(self, rnd: _Round, *, completed: bool, reason: str) -> None:
        self._end(rnd, completed=completed, reason=reason)
        self.notify()

    async def _arun_round(self, *, first: bool) -> None:
        async with self.lock:
            rnd = await self.off(self._open)
            rnd.opened_at = self.clock()
            self.current = rnd
        self.notify()
        if self.metrics is not None:
            self.metrics.round_opened(rnd.number)
        cfg = rnd.config
        log.info(
            "round %d open: n=%d t=%d k=%d d=%d, ring 2^%d, %s (asyncio)",
            rnd.number,
            cfg.n,
            cfg.t,
            cfg.degree,
            cfg.d,
            cfg.ring_bits,
            "contributions unverified"
            if cfg.norm_bound is None
            else f"norm proofs (squared L2 <= {cfg.norm_bound})",
        )
        for stage in cfg.stages:
            t0 = self.clock()
            timeout = self._timeout(
                self.options.stage_timeout, first=first and stage is Stage.ADVERTISE_KEYS
            )
            rnd.deadline = t0 + timeout
            async with self.lock:
                expected = self._expected(rnd)
            await self._until(self._stage_done(rnd, stage, expected), lambda: rnd.deadline)
            await self.flush_log()
            if self._stop.is_set():
                self._end_now(rnd, completed=False, reason="the aggregator is shutting down")
                return
            async with self.lock:
                try:
                    out = await self.off(rnd.server.close_stage)
                except ProtocolAbort as exc:
                    why = self._explain(rnd, str(exc))
                    log.warning("round %d aborted in %s: %s", rnd.number, stage.name, why)
                    self._suspend(rnd)
                    self._end_now(rnd, completed=False, reason=f"round aborted: {exc}")
                    return
                rnd.closed[stage] = out
                rnd.stage_seconds[stage.name] = self.clock() - t0
                answered = self._answered(rnd)
                rejected = len([u for u in rnd.server.rejected if u in expected])
                nxt = cfg.next_stage(stage)
                if nxt is not None:
                    rnd.stage = nxt
            self.notify()
            log.info(
                "round %d %-14s closed: %d/%d answered, %d rejected (%.2f s)",
                rnd.number,
                stage.name,
                answered,
                len(expected),
                rejected,
                self.clock() - t0,
            )
        async with self.lock:
            self._suspend(rnd)
            try:
                await asyncio.get_running_loop().run_in_executor(self.publisher, self._publish, rnd)
            except Exception as exc:  # the service must outlive a failing task
                log.exception("round %d: publishing the result failed", rnd.number)
                self._end(rnd, completed=False, reason=f"publishing failed: {exc}")
        self.notify()


def _translating(
    method: Callable[[Any, _SyncContext], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """An aio handler around ``method``: an undecodable request is INVALID_ARGUMENT, and a
    shared check's synchronous ``abort`` becomes the call's status."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)
        try:
            return await method(request, _SyncContext(context))
        except _Aborted as a:
            await context.abort(a.code, a.details)

    return handler


class AioAggregatorService:
    """``GetRound``, ``Submit``, ``Await``, ``GetModel`` as coroutines; the same checks and
    statuses as :class:`aggregator.service.AggregatorService`."""

    def __init__(self, runner: AsyncRoundRunner, *, insecure: bool = False) -> None:
        self.runner = runner
        self.insecure = insecure

    def _who(self, context: _SyncContext, claimed: int) -> int:
        r = self.runner
        m = r.membership
        if m is not None:
            m.authorize(context, claimed)  # type: ignore[arg-type]
        else:
            peer = claimed if self.insecure else member_from_certificate(context)  # type: ignore[arg-type]
            if peer != claimed:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate of member {peer} cannot speak for member {claimed}",
                )
            if claimed not in r.registry:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{claimed} is not a member")
        why = r.suspended.get(claimed)
        if why is not None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"member {claimed} is suspended ({why}); an operator must clear it with "
                "'secagg-aggregator clear-cheater'",
            )
        return claimed

    async def GetRound(self, request: pb.GetRoundRequest, context: _SyncContext) -> pb.RoundInfo:
        self._who(context, request.client_id)
        r = self.runner
        after = request.after_round

        def ready() -> bool:
            cur = r.current
            if (
                cur is not None
                and cur.number > after
                and not cur.ended
                and cur.stage is Stage.ADVERTISE_KEYS
            ):
                return True
            return r.finished

        if not await r.long_poll(context, ready):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no round opened in time")
        cur = r.current
        if cur is None or cur.ended or cur.number <= after:
            return pb.RoundInfo(finished=True)
        return pb.RoundInfo(
            config=wire.config_to_pb(cur.config),
            stage_deadline_s=max(0.0, cur.deadline - r.clock()),
            task=cur.task.task,
        )

    async def GetModel(self, request: pb.GetModelRequest, context: _SyncContext) -> pb.ModelBlob:
        self._who(context, request.client_id)
        rnd = round_or_abort(self.runner, context, request.round, bytes(request.session_id))  # type: ignore[arg-type]
        return pb.ModelBlob(data=rnd.task.model)

    async def Submit(self, request: pb.ClientEnvelope, context: _SyncContext) -> pb.SubmitAck:
        sender = self._who(context, request.sender)
        r = self.runner
        rnd = r.current
        if rnd is None or rnd.ended or rnd.number != request.round:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "that round is not open")
        assert rnd is not None
        if bytes(request.session_id) != rnd.config.session_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong session for this round")
        cfg = rnd.config

        def decode() -> tuple[bytes, Any]:
            digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
            return digest, wire.client_from_pb(request, cfg)

        try:
            digest, msg = await r.off(decode)
        except wire.WireError as exc:
            async with r.lock:
                rnd.server.rejected.setdefault(sender, f"{rnd.stage.name}: malformed: {exc}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        stage = stage_of(msg)
        if (
            isinstance(msg, CheckResponse)
            and (stage, sender) not in rnd.accepted
            and sender not in rnd.server.rejected
        ):
            await r.off(rnd.server.preverify, msg)  # SPEC.md D12: verified on arrival
        async with r.lock:
            if rnd.ended:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the round has ended")
            prior = rnd.accepted.get((stage, sender))
            if prior is not None and prior == digest:
                return pb.SubmitAck(stage=wire.STAGE_TO_PB[stage])  # an idempotent retry
            already_excluded = sender in rnd.server.rejected
            try:
                await r.off(rnd.server.receive, msg)
            except ProtocolAbort as exc:
                if not already_excluded:  # one row per exclusion: the log cannot be flooded
                    await r.off(
                        r.store.log_stage,
                        rnd.number,
                        stage.name,
                        sender,
                        "rejected",
                        str(exc),
                        r.wall(),
                    )
                code = (
                    grpc.StatusCode.FAILED_PRECONDITION
                    if isinstance(exc, UnexpectedMessage)
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                r.notify_runner()
                context.abort(code, str(exc))
            rnd.accepted[(stage, sender)] = digest
            r.log_completed(rnd.number, stage.name, sender)
        r.notify_runner()
        return pb.SubmitAck(stage=wire.STAGE_TO_PB[stage])

    async def Await(
        self, request: pb.AwaitRequest, context: _SyncContext
    ) -> pb.ServerEnvelope | bytes:
        me = self._who(context, request.client_id)
        stage = wire.STAGE_FROM_PB.get(request.stage)
        if stage is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown stage")
        assert stage is not None
        r = self.runner
        rnd = round_or_abort(r, context, request.round, bytes(request.session_id))  # type: ignore[arg-type]

        def closed() -> bool:
            return rnd.ended or (stage is not Stage.UNMASK and stage in rnd.closed)

        if not await r.long_poll(context, closed):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the stage is still open")
        cfg = rnd.config
        base = pb.ServerEnvelope(round=cfg.round, session_id=cfg.session_id, recipient=me)
        if stage is Stage.UNMASK and rnd.ended:
            r.told.setdefault(rnd.number, set()).add(me)
            for old in sorted(r.told)[:-2]:  # only the last round's matters
                del r.told[old]
            base.outcome.CopyFrom(
                pb.RoundOutcome(
                    completed=rnd.completed, reason=rnd.reason, included=list(rnd.included)
                )
            )
            return base
        msg = rnd.closed.get(stage, {}).get(me)
        if msg is None:
            rejected = rnd.server.rejected.get(me)
            why = (
                rnd.reason
                if rnd.ended and not rnd.completed
                else (
                    f"not part of the round after {stage.name}"
                    + (f" ({rejected})" if rejected is not None else "")
                )
            )
            base.outcome.CopyFrom(pb.RoundOutcome(completed=False, reason=why))
            return base
        return wire.server_to_pb(msg, cfg)


def _serialised(message: Any) -> bytes:
    """A reply's bytes: a message serialised here, or bytes a handler serialised already."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def _add_service(service: AioAggregatorService, server: grpc.aio.Server) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _translating(getattr(service, name)),
            request_deserializer=_lenient(req.FromString),
            response_serializer=_serialised,
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


class _AioMembership(cpb_grpc.MembershipServicer):
    """:class:`MembershipService`'s two RPCs on the event loop (both are quick)."""

    def __init__(self, inner: MembershipService) -> None:
        self.inner = inner

    async def GetRegistry(
        self, request: cpb.GetRegistryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cpb.SignedRegistry:
        try:
            return self.inner.GetRegistry(request, _SyncContext(context))  # type: ignore[arg-type]
        except _Aborted as a:
            await context.abort(a.code, a.details)
        raise AssertionError("unreachable")

    async def Decline(
        self, request: cpb.DeclineRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cpb.DeclineAck:
        try:
            return self.inner.Decline(request, _SyncContext(context))  # type: ignore[arg-type]
        except _Aborted as a:
            await context.abort(a.code, a.details)
        raise AssertionError("unreachable")


def serve_aio(
    options: ServeOptions,
    consortium: Consortium,
    state_dir: Any,
    listen: str | Sequence[str],
    *,
    insecure: bool = False,
    ready: Callable[[int], None] | None = None,
    stop_event: threading.Event | None = None,
    task: RoundTask | None = None,
    metrics: Metrics | None = None,
    metrics_listen: str | None = None,
) -> int:
    """:func:`aggregator.service.serve` on one event loop (see the module docstring); returns
    the number of rounds this run completed."""
    with StateLock(state_dir):
        store = AggregatorStore(state_dir / "aggregator.db")
        try:
            before = completed_rounds(store.rounds())
            asyncio.run(
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
            )
            return completed_rounds(store.rounds()) - before
        finally:
            store.close()


async def _serve(
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
    pool = ThreadPoolExecutor(
        max_workers=options.max_workers or _DEFAULT_WORKERS, thread_name_prefix="secagg-work"
    )
    membership = Membership(consortium, insecure=insecure)
    runner = AsyncRoundRunner(
        options, consortium.registry, store, task=task, membership=membership, pool=pool
    )
    runner.metrics = metrics
    runner.accumulators = accumulators(options)
    limit = max(
        wire.max_message_bytes(runner.template.with_session(bytes(16))),
        runner.task.max_message_bytes(),
    )
    n = len(consortium.registry)

    def is_open(number: int, session: bytes) -> bool:
        cur = runner.current
        return (
            cur is not None
            and not cur.ended
            and cur.number == number
            and cur.config.session_id == session
        )

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.max_concurrent_streams", 4 * n + 64),
            EXCLUSIVE_PORT,
        ],
        interceptors=[metrics.aio_interceptor()] if metrics is not None else [],
        maximum_concurrent_rpcs=4 * n + 64,
    )
    _add_service(AioAggregatorService(runner, insecure=insecure), server)
    cpb_grpc.add_MembershipServicer_to_server(  # type: ignore[no-untyped-call]
        _AioMembership(MembershipService(membership, is_open, runner.notify_runner)), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = None
    if not insecure:
        key, cert = consortium.aggregator_cert()
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=consortium.ca, require_client_auth=True
        )
    ports = []
    for address in [listen] if isinstance(listen, str) else list(listen):
        try:
            check_can_listen(address)  # our sentence, not gRPC's log line, in the usual case
            port = (
                server.add_insecure_port(address)
                if creds is None
                else server.add_secure_port(address, creds)
            )
        except (OSError, RuntimeError):  # the probe, or gRPC's "Failed to bind"
            port = 0
        if port == 0:
            await server.stop(None)
            pool.shutdown(wait=False)
            runner.publisher.shutdown(wait=False)
            raise OSError(
                f"cannot listen on {address}: the port is in use (another aggregator?) or "
                "the address is not this host's"
            )
        ports.append(port)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("secagg.v1.Aggregator", health_pb2.HealthCheckResponse.SERVING)
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
        ports[0],
        "INSECURE dev mode" if insecure else "mutual TLS",
        n,
        membership.current.version,
    )
    if ready is not None:
        ready(ports[0])
    rounds = asyncio.create_task(runner.arun())
    try:
        while not rounds.done():
            await asyncio.wait({rounds}, timeout=0.2)
            if stop_event is not None and stop_event.is_set():
                runner.stop()
        rounds.result()
        await runner.linger()
    finally:
        runner.stop()
        if not rounds.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rounds, 5)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=2.0)
        pool.shutdown(wait=True)
        runner.publisher.shutdown(wait=True)
        if ops is not None:
            ops.close()
