"""Opt-in operations endpoint (``--metrics-listen HOST:PORT``): Prometheus metrics at
``/metrics`` and a health probe at ``/healthz`` for an orchestrator, over plain HTTP.

Metrics use ``prometheus_client`` (the ``metrics`` extra) with a registry of their own:
rounds by outcome, stage and round durations, clients included / dropped / rejected, RPCs by
method and status, protobuf bytes in and out by method, the registry version and member
count. ``/healthz`` answers 200 while the gRPC service is serving and 503 once it is not (it
is shutting down, or its rounds are done).

Security: the endpoint shows counts and timings only, never a member's data or keys; still,
bind it to an address only operators reach (it has no TLS). It is off unless asked for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

__all__ = ["Metrics", "OpsServer"]

log = logging.getLogger("secagg.aggregator.metrics")

_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's counters; every method is cheap and thread-safe."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rounds = prom.Counter(
            "secagg_rounds", "Rounds that ended, by outcome", ["outcome"], registry=r
        )
        self.stage_seconds = prom.Histogram(
            "secagg_stage_duration_seconds",
            "Time from a stage's start to its close",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.round_seconds = prom.Histogram(
            "secagg_round_duration_seconds",
            "Time from a round's open to its end",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.clients = prom.Counter(
            "secagg_round_clients",
            "Members per ended round: included in the sum, dropped, or rejected",
            ["outcome"],
            registry=r,
        )
        self.rpcs = prom.Counter(
            "secagg_rpcs", "RPCs handled, by method and status", ["method", "code"], registry=r
        )
        self.bytes = prom.Counter(
            "secagg_rpc_bytes",
            "Protobuf bytes of RPC messages, by direction and method",
            ["direction", "method"],
            registry=r,
        )
        self.registry_version = prom.Gauge(
            "secagg_registry_version", "Version of the registry in use", registry=r
        )
        self.members = prom.Gauge("secagg_members", "Members in the registry in use", registry=r)
        self.current_round = prom.Gauge(
            "secagg_current_round", "Number of the round open now, or the last one", registry=r
        )
        for outcome in ("completed", "aborted"):
            self.rounds.labels(outcome)
        for outcome in ("included", "dropped", "rejected"):
            self.clients.labels(outcome)

    # -- what the service reports -------------------------------------------------------------

    def round_opened(self, number: int) -> None:
        self.current_round.set(number)

    def round_ended(
        self,
        *,
        completed: bool,
        seconds: float | None = None,
        stages: Mapping[str, float] | None = None,
        included: Iterable[int] = (),
        dropped: Iterable[int] = (),
        rejected: Iterable[int] = (),
    ) -> None:
        self.rounds.labels("completed" if completed else "aborted").inc()
        if seconds is not None:
            self.round_seconds.observe(seconds)
        for stage, s in (stages or {}).items():
            self.stage_seconds.labels(stage).observe(s)
        for outcome, ids in (("included", included), ("dropped", dropped), ("rejected", rejected)):
            self.clients.labels(outcome).inc(len(list(ids)))

    def registry_in_use(self, version: int, members: int) -> None:
        self.registry_version.set(version)
        self.members.set(members)

    def exposition(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    # -- gRPC -----------------------------------------------------------------------------------

    def interceptor(self) -> grpc.ServerInterceptor:
        return _Interceptor(self)

    def aio_interceptor(self) -> grpc.aio.ServerInterceptor:
        """The same counts for the ``grpc.aio`` server (:mod:`aggregator.aio_service`)."""
        return _AioInterceptor(self)


def _size(message: object) -> int:
    if isinstance(message, bytes):  # a reply the handler serialised itself
        return len(message)
    size = getattr(message, "ByteSize", None)
    return int(size()) if callable(size) else 0


class _Interceptor(grpc.ServerInterceptor):
    """Counts unary RPCs (status, bytes in and out); streaming RPCs pass through uncounted
    but for their status."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        m = self.m

        def counted(request: Any, context: grpc.ServicerContext) -> Any:
            m.bytes.labels("in", method).inc(_size(request))
            try:
                response = inner(request, context)
            except Exception:
                code = context.code() if hasattr(context, "code") else None
                m.rpcs.labels(method, getattr(code, "name", "UNKNOWN")).inc()
                raise
            m.bytes.labels("out", method).inc(_size(response))
            m.rpcs.labels(method, "OK").inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _AioInterceptor(grpc.aio.ServerInterceptor):
    """:class:`_Interceptor` for coroutine handlers."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        m = self.m

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            m.bytes.labels("in", method).inc(_size(request))
            try:
                response = await inner(request, context)  # type: ignore[arg-type]
            except BaseException:
                code = context.code() if hasattr(context, "code") else None
                m.rpcs.labels(method, getattr(code, "name", "UNKNOWN")).inc()
                raise
            m.bytes.labels("out", method).inc(_size(response))
            m.rpcs.labels(method, "OK").inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class OpsServer:
    """``/metrics`` and ``/healthz`` on a thread; ``healthy()`` decides the probe's answer."""

    def __init__(self, listen: str, metrics: Metrics, healthy: Callable[[], bool]) -> None:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--metrics-listen {listen!r} is not HOST:PORT")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = metrics.exposition()
                    self._reply(200, body, ctype)
                elif path in ("/healthz", "/readyz"):
                    ok = healthy()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"not serving\n")
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n")

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("ops %s", format % args)

        try:
            self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {listen} for metrics: {exc.strerror}"
            ) from None
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ops", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
