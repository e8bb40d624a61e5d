"""The client agent: joins the aggregator over gRPC and runs one fresh
:class:`secagg.SecAggClient` per round (fresh keys every round, never a re-mask: SA-19).

Transient transport errors (UNAVAILABLE, a lost reply) are retried with exponential backoff; a
retried submission is byte-identical, which the aggregator acknowledges idempotently. Anything
else ends the round for this client with one clear sentence.

In a round with a norm bound (protocol.md §7, secagg/SPEC.md D12) the state machine commits to
the vector at the MaskedInput stage and proves the bound and the upload's consistency at the
CHECK stage; a vector above the bound cannot be proven, so this client sits the round out (one
sentence in its report) and takes part in the next.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from aggregator.consortium import load_consortium
from protos import wire
from protos.secagg.v1 import secagg_pb2 as pb
from protos.secagg.v1 import secagg_pb2_grpc as pb_grpc
from secagg import (
    ClientPolicy,
    NormBoundExceeded,
    ProtocolAbort,
    RoundConfig,
    SecAggClient,
    Stage,
    SystemRandom,
)

__all__ = [
    "AgentError",
    "AgentOptions",
    "ClientAgent",
    "Contributor",
    "RoundReport",
    "StatisticsContributor",
    "call_with_retry",
]

log = logging.getLogger("secagg.client")
_T = TypeVar("_T")
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
_MAX_MESSAGE = 256 << 20

InputProvider = Callable[[RoundConfig], npt.ArrayLike]


class Contributor(Protocol):
    """Turns a round's public task (and global model) into this client's ring vector."""

    def contribute(
        self, config: RoundConfig, task: bytes, model: bytes
    ) -> npt.NDArray[np.uint32]: ...


class StatisticsContributor:
    """Statistics mode: ``provider(config)`` gives a float vector, encoded with the round's ring
    encoding (clip, scale, randomized rounding)."""

    def __init__(self, provider: InputProvider) -> None:
        self.provider = provider

    def contribute(self, config: RoundConfig, task: bytes, model: bytes) -> npt.NDArray[np.uint32]:
        if task or model:
            raise AgentError("this client only does statistics rounds; the round has a task")
        x = np.asarray(self.provider(config), dtype=np.float64)
        return config.encoding.encode(x, SystemRandom())


class AgentError(Exception):
    """The agent cannot go on (bad material, refused by the aggregator, retries exhausted)."""


def call_with_retry(
    what: str,
    fn: Callable[[], _T],
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> _T:
    """Run one RPC, retrying transient failures (UNAVAILABLE, RESOURCE_EXHAUSTED) with
    exponential backoff capped at 5 s; anything else becomes one :class:`AgentError` sentence.
    Shared by the pairwise and the HE client agents."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            return fn()
        except grpc.RpcError as exc:
            code = exc.code()
            if code in _RETRYABLE and attempt < retries:
                log.info("%s: %s, retrying in %.1f s", what, code.name, delay)
                sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise AgentError(f"{what} failed: {code.name}: {exc.details()}") from None
    raise AgentError(f"{what} failed after {retries} retries")


@dataclass(frozen=True)
class AgentOptions:
    aggregator: str
    consortium: Path
    client_id: int
    rounds: int = 1
    insecure: bool = False
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    rpc_timeout: float = 30.0
    wait_timeout: float = 600.0
    retries: int = 6
    backoff: float = 0.2


@dataclass(frozen=True)
class RoundReport:
    round: int
    completed: bool
    included: tuple[int, ...]
    reason: str
    seconds: float
    bytes_sent: int = 0
    bytes_received: int = 0


class ClientAgent:
    """Runs ``options.rounds`` rounds, contributing ``provider(config)`` in each."""

    def __init__(
        self,
        options: AgentOptions,
        provider: InputProvider | Contributor,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        before_stage: Callable[[int, Stage], None] | None = None,
        client_factory: Callable[..., SecAggClient] | None = None,
    ) -> None:
        self.options = options
        self.before_stage = before_stage  # fault injection for tests: (round, stage)
        # Adversarial tests: build a deviating state machine instead of SecAggClient.
        self.client_factory = client_factory if client_factory is not None else SecAggClient
        self._sent = self._received = 0  # protobuf bytes of the current round
        self.contributor: Contributor = (
            provider if hasattr(provider, "contribute") else StatisticsContributor(provider)
        )
        self.sleep = sleep
        self.clock = clock
        cons = load_consortium(options.consortium)
        if options.client_id not in cons.registry:
            raise AgentError(f"member {options.client_id} is not in the consortium registry")
        self.registry = cons.registry
        member = cons.member(options.client_id)
        self.identity = member.identity
        chan_opts = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
        if options.insecure:
            self.channel = grpc.insecure_channel(options.aggregator, options=chan_opts)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=cons.ca, private_key=member.key, certificate_chain=member.cert
            )
            self.channel = grpc.secure_channel(options.aggregator, creds, options=chan_opts)
        self.stub = pb_grpc.AggregatorStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    # -- transport helpers ----------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return call_with_retry(
            what, fn, retries=self.options.retries, backoff=self.options.backoff, sleep=self.sleep
        )

    def _submit(self, stage: Stage, env: pb.ClientEnvelope) -> None:
        self._sent += env.ByteSize()
        self._call(
            f"sending {stage.name}",
            lambda: self.stub.Submit(env, timeout=self.options.rpc_timeout),
        )

    def _await(self, cfg: RoundConfig, stage: Stage) -> pb.ServerEnvelope:
        req = pb.AwaitRequest(
            round=cfg.round,
            session_id=cfg.session_id,
            client_id=self.options.client_id,
            stage=wire.STAGE_TO_PB[stage],
        )
        deadline = self.clock() + self.options.wait_timeout
        while True:
            try:
                env: pb.ServerEnvelope = self._call(
                    f"waiting for {stage.name}",
                    lambda: self.stub.Await(req, timeout=min(60.0, self.options.wait_timeout)),
                )
                return env
            except AgentError as exc:
                if "DEADLINE_EXCEEDED" in str(exc) and self.clock() < deadline:
                    continue
                raise

    # -- the rounds -----------------------------------------------------------------------

    def run(self) -> list[RoundReport]:
        reports: list[RoundReport] = []
        last = -1
        for _ in range(self.options.rounds):
            info = self._next_round(last)
            if info is None:
                break
            cfg = wire.config_from_pb(info.config)
            last = cfg.round
            reports.append(self._one_round(cfg, bytes(info.task)))
        return reports

    def _next_round(self, after: int) -> pb.RoundInfo | None:
        req = pb.GetRoundRequest(client_id=self.options.client_id, after_round=after)
        deadline = self.clock() + self.options.wait_timeout
        while True:
            try:
                info = self._call("joining a round", lambda: self.stub.GetRound(req, timeout=30.0))
            except AgentError as exc:
                if "DEADLINE_EXCEEDED" in str(exc) and self.clock() < deadline:
                    continue
                raise
            return None if info.finished else info

    def _one_round(self, cfg: RoundConfig, task: bytes) -> RoundReport:
        t0 = self.clock()
        self._sent = self._received = 0
        me = self.options.client_id
        # SA-06: what the round computes and the model it starts from are bound into the config
        # digest that every client signs; check the bytes we were given against it.
        want_task = hashlib.sha256(task).digest() if task else bytes(32)
        if want_task != cfg.dp_digest:
            raise AgentError("the round's task does not match its digest: refusing the round")
        model = b""
        if cfg.model_digest != bytes(32):
            req = pb.GetModelRequest(client_id=me, round=cfg.round, session_id=cfg.session_id)
            blob = self._call(
                "fetching the model",
                lambda: self.stub.GetModel(req, timeout=self.options.rpc_timeout),
            )
            model = bytes(blob.data)
            self._received += blob.ByteSize()
            if hashlib.sha256(model).digest() != cfg.model_digest:
                raise AgentError("the model does not match the round's digest: refusing the round")
        try:  # the policy is checked again by the state machine; here before any training
            self.options.policy.check(cfg)
        except ProtocolAbort as exc:
            log.warning("client %d: round %d refused: %s", me, cfg.round, exc)
            return RoundReport(cfg.round, False, (), f"aborted: {exc}", self.clock() - t0)
        ring = self.contributor.contribute(cfg, task, model)
        try:
            client = self.client_factory(
                cfg, me, self.identity, self.registry, ring, policy=self.options.policy
            )
        except NormBoundExceeded as exc:  # no proof exists: sit this round out
            log.warning("client %d: round %d refused: %s", me, cfg.round, exc)
            return RoundReport(cfg.round, False, (), f"refused: {exc}", self.clock() - t0)
        log.info(
            "client %d: round %d (n=%d, t=%d, d=%d%s)",
            me,
            cfg.round,
            cfg.n,
            cfg.t,
            cfg.d,
            "" if cfg.norm_bound is None else ", norm-proven contribution",
        )
        try:
            msg: Any = client.advertise()
            for stage in cfg.stages:
                if self.before_stage is not None:
                    self.before_stage(cfg.round, stage)
                self._submit(stage, wire.client_to_pb(msg, cfg))
                got = self._await(cfg, stage)
                self._received += got.ByteSize()
                reply = wire.server_from_pb(got, cfg)
                if isinstance(reply, pb.RoundOutcome):
                    log.info(
                        "client %d: round %d %s%s",
                        me,
                        cfg.round,
                        "completed" if reply.completed else "ended for this client",
                        f": {reply.reason}" if reply.reason else "",
                    )
                    return RoundReport(
                        cfg.round,
                        reply.completed,
                        tuple(reply.included),
                        reply.reason,
                        self.clock() - t0,
                        self._sent,
                        self._received,
                    )
                msg = client.receive(reply)
                log.debug("client %d: %s done", me, stage.name)
        except ProtocolAbort as exc:
            log.warning("client %d: round %d aborted: %s", me, cfg.round, exc)
            return RoundReport(cfg.round, False, (), f"aborted: {exc}", self.clock() - t0)
        return RoundReport(cfg.round, False, (), "no outcome", self.clock() - t0)
