"""What the two aggregator services share: the round loop, the durable round record, the
long-polls and caller identity of the RPC handlers, and the gRPC server around them.

:class:`RoundRunnerBase` drives ``options.rounds`` rounds one after another on its own thread
(``run``), owns the state the RPC handlers read under ``cond``, and keeps each round's durable
record in the :class:`AggregatorStore`: a fresh, never reused session id at the open, the
summary and aggregate at the end, the reason of an abort. A subclass says what one round does
(``_run_round``); :mod:`aggregator.service` (pairwise masking) and :mod:`aggregator.he_service`
(homomorphic encryption) are the two.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aggregator.lifecycle import EXCLUSIVE_PORT, check_can_listen
from aggregator.store import AggregatorStore
from protos.consortium import Consortium, member_id_from_cn

if TYPE_CHECKING:
    from aggregator.membership import Membership
    from aggregator.metrics import Metrics

__all__ = [
    "RoundRecord",
    "RoundRunnerBase",
    "await_round",
    "completed_rounds",
    "drive",
    "long_poll",
    "member_from_certificate",
    "peer_names",
    "round_or_abort",
    "start_server",
    "write_summary",
]

HISTORY = 8  # finished rounds whose outcomes stay answerable


class SessionConfig(Protocol):
    """A round's configuration, as far as the round loop is concerned."""

    @property
    def session_id(self) -> bytes | None: ...

    def canonical(self) -> bytes: ...


class RunnerOptions(Protocol):
    """The serve options the round loop reads."""

    @property
    def rounds(self) -> int: ...

    @property
    def first_round_wait(self) -> float: ...


ConfigT = TypeVar("ConfigT", bound=SessionConfig)


@dataclass
class RoundRecord(Generic[ConfigT]):
    """One round as the RPC handlers see it; a service's round adds its own state."""

    number: int
    config: ConfigT
    deadline: float = 0.0
    ended: bool = False
    completed: bool = False
    reason: str = ""
    included: tuple[int, ...] = ()


OptionsT = TypeVar("OptionsT", bound=RunnerOptions)
RoundT = TypeVar("RoundT", bound=RoundRecord[Any])


class RoundRunnerBase(Generic[OptionsT, RoundT]):
    """Drives rounds and owns the shared state the RPC handlers read (under ``cond``)."""

    def __init__(
        self,
        options: OptionsT,
        store: AggregatorStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.wall = wall
        self.cond = threading.Condition()
        self.current: RoundT | None = None
        self.history: dict[int, RoundT] = {}
        self.finished = False
        self._stop = threading.Event()
        # Set by the service when it has them: the registry in use, and the metrics to feed.
        self.membership: Membership | None = None
        self.metrics: Metrics | None = None

    def _recover(self, log: logging.Logger, message: str) -> None:
        """Abort every round a restart interrupted (it never resumes under keys already used),
        logging ``message % round`` for each."""
        for r in self.store.abort_interrupted(self.wall()):
            log.warning(message, r)

    def stop(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()

    # -- the round loop -------------------------------------------------------------------

    def run(self) -> None:
        try:
            for i in range(self.options.rounds):
                if self._stop.is_set():
                    break
                self._run_round(first=i == 0)
        finally:
            with self.cond:
                self.finished = True
                self._on_finished()
                self.cond.notify_all()

    def _run_round(self, *, first: bool) -> None:
        raise NotImplementedError

    def _on_finished(self) -> None:
        """Called under ``cond`` once the last round has ended."""

    def _timeout(self, timeout: float, *, first: bool) -> float:
        """``timeout``, but the first round waits at least ``first_round_wait`` for members."""
        return max(timeout, self.options.first_round_wait) if first else timeout

    def _wait(self, done: Callable[[float], bool], deadline: Callable[[], float]) -> None:
        """Wait on ``cond`` (held) until ``done(now)``, ``deadline()`` passes, or a stop."""
        while not self._stop.is_set():
            now = self.clock()
            if done(now):
                break
            left = deadline() - now
            if left <= 0:
                break
            self.cond.wait(min(left, 0.5))

    def _new_session(self) -> tuple[int, bytes]:
        """The next round's number and a session id no earlier round has used."""
        number = self.store.next_round()
        used = self.store.session_ids()
        session = os.urandom(16)
        while session in used:  # never reuse a key set's session (SA-19)
            session = os.urandom(16)
        return number, session

    def _record_open(self, number: int, session: bytes, config: SessionConfig) -> None:
        self.store.open_round(number, session, json.loads(config.canonical()), self.wall())

    def _record_result(
        self,
        rnd: RoundT,
        out: Path,
        summary: dict[str, Any],
        *,
        included: list[int],
        dropped: list[int],
        npy: str,
        digest: str,
    ) -> Path:
        """Write ``out/round-<r>.json`` and mark the round completed; returns the JSON's path."""
        js = write_summary(out, rnd.number, summary)
        self.store.complete_round(rnd.number, included, dropped, npy, digest, summary, self.wall())
        if self.metrics is not None:
            timings = summary.get("timings", {})
            self.metrics.round_ended(
                completed=True,
                seconds=timings.get("round_s"),
                stages=timings.get("stages_s"),
                included=included,
                dropped=dropped,
                rejected=summary.get("rejected", {}),
            )
        return js

    def _explain(self, rnd: RoundT, reason: str) -> str:
        """An abort reason, with who declined the round and why (when members did)."""
        if self.membership is None:
            return reason
        return self.membership.explain(rnd.number, rnd.config.session_id, reason)

    def _end(
        self, rnd: RoundT, *, completed: bool, reason: str, included: tuple[int, ...] = ()
    ) -> None:
        """Record the round's end (the store's abort reason unless ``completed``) and wake the
        handlers; ``cond`` is re-entrant, so a caller may hold it."""
        if not completed:
            reason = self._explain(rnd, reason)
            self.store.abort_round(rnd.number, reason, self.wall())
            if self.metrics is not None:
                self.metrics.round_ended(completed=False)
        with self.cond:
            self._on_end(rnd)
            rnd.ended, rnd.completed, rnd.reason, rnd.included = True, completed, reason, included
            self.current = rnd
            self.history[rnd.number] = rnd
            for old in sorted(self.history)[:-HISTORY]:
                del self.history[old]
            self.cond.notify_all()

    def _on_end(self, rnd: RoundT) -> None:
        """Called under ``cond`` as ``rnd`` ends."""

    # -- what the RPC handlers call -------------------------------------------------------

    def find(self, number: int) -> RoundT | None:
        if self.current is not None and self.current.number == number:
            return self.current
        return self.history.get(number)


def write_summary(out: Path, number: int, summary: dict[str, Any]) -> Path:
    """Write ``out/round-<number>.json`` atomically (temp file, rename)."""
    js = out / f"round-{number}.json"
    js_tmp = js.with_suffix(".json.tmp")
    js_tmp.write_text(json.dumps(summary, indent=1))
    os.replace(js_tmp, js)
    return js


def completed_rounds(rows: Iterable[Mapping[str, Any]]) -> int:
    """How many of the store's ``rounds()`` rows are completed."""
    return sum(1 for r in rows if r["status"] == "completed")


# -- the RPC handlers' helpers ----------------------------------------------------------------


def long_poll(
    cond: threading.Condition, context: grpc.ServicerContext, pred: Callable[[], bool]
) -> bool:
    """Wait on ``cond`` (held) until ``pred()``; False when the call's deadline is near or the
    caller has gone."""
    while not pred():
        remaining = context.time_remaining()
        if (remaining is not None and remaining <= 0.05) or not context.is_active():
            return False
        cond.wait(0.5 if remaining is None else min(0.5, remaining - 0.05))
    return True


def await_round(
    runner: RoundRunnerBase[Any, RoundT],
    context: grpc.ServicerContext,
    after_round: int,
    is_open: Callable[[RoundT], bool],
) -> RoundT | None:
    """Long-poll (under ``cond``) until a round after ``after_round`` is open (``is_open``) or
    the runner has finished, DEADLINE_EXCEEDED if none opens in time; the current round."""

    def ready() -> bool:
        cur = runner.current
        if cur is not None and cur.number > after_round and is_open(cur):
            return True
        return runner.finished

    if not long_poll(runner.cond, context, ready):
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no round opened in time")
    return runner.current


def round_or_abort(
    runner: RoundRunnerBase[Any, RoundT], context: grpc.ServicerContext, number: int, session: bytes
) -> RoundT:
    """Round ``number`` of session ``session`` (call under ``cond``), or NOT_FOUND."""
    rnd = runner.find(number)
    if rnd is None or session != rnd.config.session_id:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown round or session")
    assert rnd is not None
    return rnd


def peer_names(context: grpc.ServicerContext) -> list[str]:
    """The common names in the caller's TLS certificate."""
    raw: bytes | list[bytes] = context.auth_context().get("x509_common_name") or []
    names = [raw] if isinstance(raw, bytes) else list(raw)
    return [bytes(n).decode(errors="replace") for n in names]


def member_from_certificate(context: grpc.ServicerContext) -> int:
    """The member id in the caller's certificate; PERMISSION_DENIED unless there is exactly one."""
    ids = {member_id_from_cn(n) for n in peer_names(context)} - {None}
    if len(ids) != 1:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no member certificate")
    return int(next(iter(ids)))  # type: ignore[arg-type]


# -- the gRPC server ----------------------------------------------------------------------------


def start_server(
    consortium: Consortium,
    listen: str | Sequence[str],
    add_services: Callable[[grpc.Server], None],
    *,
    service_name: str,
    limit: int,
    max_workers: int | None,
    options: Sequence[tuple[str, Any]] = (),
    insecure: bool = False,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Start a gRPC server for the consortium's ``n`` members (mutual TLS unless ``insecure``)
    with ``add_services`` and the health service, on every address of ``listen`` (a port is
    never shared with another process); returns it, its health servicer and the first port."""
    n = len(consortium.registry)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers or max(32, 2 * n + 16)),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            EXCLUSIVE_PORT,
            *options,
        ],
        interceptors=list(interceptors),
        maximum_concurrent_rpcs=4 * n + 64,
    )
    add_services(server)
    health_servicer = health.HealthServicer()
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
            if creds is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, creds)
        except (OSError, RuntimeError):  # in use, or not an address of this host (gRPC:
            port = 0  # "Failed to bind")
        if port == 0:
            server.stop(None)
            raise OSError(
                f"cannot listen on {address}: the port is in use (another aggregator?) or "
                "the address is not this host's"
            )
        ports.append(port)
    port = ports[0]
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


def drive(
    runner: RoundRunnerBase[Any, Any],
    server: grpc.Server,
    health_servicer: health.HealthServicer,
    *,
    thread_name: str,
    stop_event: threading.Event | None = None,
    linger: float = 0.0,
) -> None:
    """Run ``runner`` on a thread until its rounds are done (or ``stop_event``), wait
    ``linger`` seconds, then shut the server down."""
    worker = threading.Thread(target=runner.run, name=thread_name, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
            if stop_event is not None and stop_event.is_set():
                runner.stop()
        if linger:
            time.sleep(linger)
    finally:
        runner.stop()
        health_servicer.enter_graceful_shutdown()
        server.stop(grace=2.0).wait()
        worker.join(5)
