"""The client agent: joins the aggregator over gRPC and runs one fresh
:class:`secagg.SecAggClient` per round (fresh keys every round, never a re-mask: SA-19).

Transient transport errors (UNAVAILABLE, a lost reply) are retried with exponential backoff; a
retried submission is byte-identical, which the aggregator acknowledges idempotently. A round
the aggregator no longer knows (it restarted, or ended the round) is lost, and the agent joins
the next one; an aggregator that stays unreachable is waited for up to
``reconnect_timeout`` seconds; a refusal that retrying cannot change (a TLS handshake failure,
a certificate the aggregator does not admit) ends the agent with one clear sentence.

Before each round the agent asks the aggregator for the registry the administrator signed
(``secagg.consortium.v1.Membership``) and adopts it only if it verifies, is not older than the
newest this member has seen, and lists this member's own keys (:mod:`protos.consortium`). A
round whose parameters the member's policy refuses is declined with the reason, so that the
aggregator can say why the round aborted.

In a round with a norm bound (docs/protocol.md §7, secagg/SPEC.md D12) the state machine commits to
the vector at the MaskedInput stage and proves the bound and the upload's consistency at the
CHECK stage; a vector above the bound cannot be proven, so this client sits the round out (one
sentence in its report) and takes part in the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from dp.composed import DistributedDP
from dp.distributed import DistributedDPConfig
from dp.distributed import encode as dp_encode
from protos import wire
from protos.consortium import MemberFolder, channel_options, member_folder
from protos.secagg.consortium.v1 import consortium_pb2 as cpb
from protos.secagg.consortium.v1 import consortium_pb2_grpc as cpb_grpc
from protos.secagg.v1 import secagg_pb2 as pb
from protos.secagg.v1 import secagg_pb2_grpc as pb_grpc
from secagg import (
    ClientPolicy,
    NormBoundExceeded,
    ProtocolAbort,
    RoundConfig,
    SecAggClient,
    SecAggError,
    Stage,
    SystemRandom,
)
from secagg.registry import Registry

__all__ = [
    "AgentError",
    "AgentOptions",
    "ClientAgent",
    "Contributor",
    "DpStatisticsContributor",
    "Refused",
    "RoundLost",
    "RoundReport",
    "StatisticsContributor",
    "Unreachable",
    "call_with_retry",
]

log = logging.getLogger("secagg.client")
_T = TypeVar("_T")
# CANCELLED: the server cancelled the call as it shut down (a restart, usually).
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
_MAX_MESSAGE = 256 << 20

InputProvider = Callable[[RoundConfig], npt.ArrayLike]
# AgentOptions.policy's default: the default policy under the registry's corruption
# assumption, filled in whenever a registry is adopted (any other policy is used as given).
REGISTRY_POLICY = ClientPolicy()


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


class DpStatisticsContributor:
    """Statistics under user-level distributed DP: ``provider(config)`` gives this member's
    float vector, which is clipped, rotated, noised and encoded with the round's DP parameters
    once they match this member's own ``dp`` (the object the aggregator's
    :class:`aggregator.tasks.DpStatisticsTask` and :func:`secagg.simulate` take)."""

    def __init__(self, provider: InputProvider, dp: DistributedDP | DistributedDPConfig) -> None:
        self.provider = provider
        self.dp = dp

    def contribute(self, config: RoundConfig, task: bytes, model: bytes) -> npt.NDArray[np.uint32]:
        try:
            doc = json.loads(task)
            kind = doc.get("kind") if isinstance(doc, dict) else None
        except ValueError:
            kind = None
        if kind != "dp-statistics/v1" or model:
            raise AgentError("this client only takes part in dp-statistics/v1 rounds")
        try:
            theirs = DistributedDPConfig.from_canonical(str(doc["dp"]).encode())
            seed = bytes.fromhex(str(doc["round_seed"]))
        except (KeyError, ValueError) as exc:
            raise AgentError(f"the round's DP task is malformed: {exc}") from None
        x = np.asarray(self.provider(config), dtype=np.float64)
        if isinstance(self.dp, DistributedDP):
            mine = self.dp.resolve(x.shape[0], config.n, config.t, config.degree)
        else:
            mine = self.dp
        if theirs.canonical_bytes() != mine.canonical_bytes():
            raise AgentError("the round's DP parameters differ from this member's: refusing")
        if config.d != mine.encoded_dim or config.ring_bits != mine.bits:
            raise AgentError("the round's ring does not carry its DP parameters")
        return dp_encode(x, mine, seed)


class AgentError(Exception):
    """The agent cannot go on (bad material, refused by the aggregator, retries exhausted)."""


class RoundLost(AgentError):
    """The aggregator no longer knows this round (it restarted, or ended it): join the next."""


class Unreachable(AgentError):
    """The aggregator did not answer (UNAVAILABLE) through every retry."""


class Refused(AgentError):
    """A refusal that retrying cannot change: TLS, or a certificate the aggregator refuses."""


# A server that refuses the client's certificate closes the socket mid-handshake; a restarting
# one refuses the connection instead. Three closes in a row are a refusal, not bad luck.
_CLOSED_IS_REFUSAL = 3
_LOST = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED}
_REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def _tls_failure(details: str) -> str | None:
    """One sentence if ``details`` (of an UNAVAILABLE) is a TLS failure, which no retry mends."""
    d = details.lower()
    if "hostname verification" in d or "peer name" in d:
        return (
            "the aggregator's certificate does not name the host dialled (pass --server-name "
            "with a name its certificate holds)"
        )
    if "handshake" in d or "certificate" in d or "alert" in d or "ssl" in d:
        return (
            "the TLS handshake with the aggregator failed: it does not trust this member's "
            "certificate, or this member does not trust its (another consortium's material?)"
        )
    return None


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
    closed = 0  # consecutive connections the aggregator closed before any reply
    for attempt in range(retries + 1):
        try:
            return fn()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            tls = _tls_failure(details) if code is grpc.StatusCode.UNAVAILABLE else None
            closed = closed + 1 if "socket closed" in details.lower() else 0
            if tls is None and closed >= _CLOSED_IS_REFUSAL:
                tls = (
                    "the aggregator closes every connection during the TLS handshake: it does "
                    "not trust this member's certificate (another consortium's material?)"
                )
            if tls is not None:
                raise Refused(f"{what} failed: {tls}") from None
            if code in _RETRYABLE and attempt < retries:
                log.info("%s: %s, retrying in %.1f s", what, code.name, delay)
                sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            kind: type[AgentError] = AgentError
            if code in _LOST:
                kind = RoundLost
            elif code in _REFUSED:
                kind = Refused
            elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                kind = Unreachable
            raise kind(f"{what} failed: {code.name}: {details}") from None
    raise Unreachable(f"{what} failed after {retries} retries")


@dataclass(frozen=True)
class AgentOptions:
    """What the agent runs. The member's folder is ``member``, or ``consortium`` (a bundle from
    ``init-consortium``) with ``client_id``. ``rounds`` is how many rounds must complete; at most
    ``max_failed_rounds`` others may fail (aborted, lost to a restart, declined) before the
    agent gives up. ``policy`` left at its default is the default policy under the
    registry's corruption assumption (with ``require_norm_bound``). ``server_name`` is the
    name to check the aggregator's certificate against when it differs from the host in
    ``aggregator``."""

    aggregator: str
    consortium: Path | None = None
    client_id: int = 0  # 0: the id in the member's folder
    rounds: int = 1
    insecure: bool = False
    policy: ClientPolicy = field(default_factory=lambda: REGISTRY_POLICY)
    rpc_timeout: float = 30.0
    wait_timeout: float = 600.0
    retries: int = 6
    backoff: float = 0.2
    member: Path | None = None
    server_name: str | None = None
    max_failed_rounds: int = 3
    reconnect_timeout: float = 120.0
    require_norm_bound: bool = False


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
        self.folder: MemberFolder = member_folder(
            options.member, options.consortium, options.client_id or None
        )
        self.member_id = self.folder.member_id
        # The rest of the agent reads its id and policy from its options.
        self._registry_policy = options.policy is REGISTRY_POLICY
        self.options = dataclasses.replace(options, client_id=self.member_id)
        self._use(self.folder.registry())
        member = self.folder.files()
        self.identity = member.identity
        chan_opts = channel_options(options.server_name, _MAX_MESSAGE)
        if options.insecure:
            self.channel = grpc.insecure_channel(options.aggregator, options=chan_opts)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=self.folder.ca,
                private_key=member.key,
                certificate_chain=member.cert,
            )
            self.channel = grpc.secure_channel(options.aggregator, creds, options=chan_opts)
        self.stub = pb_grpc.AggregatorStub(self.channel)  # type: ignore[no-untyped-call]
        self.membership = cpb_grpc.MembershipStub(self.channel)  # type: ignore[no-untyped-call]

    def _use(self, registry: Registry) -> None:
        """Take the members' identities and the policy from ``registry``."""
        self.signed_registry = registry
        self.registry = registry.identities
        if self._registry_policy:
            policy = ClientPolicy(
                max_corrupt_fraction=registry.policy_fraction,
                require_norm_bound=self.options.require_norm_bound,
            )
            self.options = dataclasses.replace(self.options, policy=policy)

    def _refresh_registry(self) -> None:
        """Adopt the registry the aggregator relays, if it is the administrator's and not
        older than the newest seen (a stale or forged one ends the agent: it would mean an
        aggregator that withholds a revocation or invents members)."""
        req = cpb.GetRegistryRequest(
            client_id=self.member_id, have_version=self.signed_registry.version
        )
        reply = self._call(
            "fetching the registry",
            lambda: self.membership.GetRegistry(req, timeout=self.options.rpc_timeout),
        )
        try:
            registry = self.folder.accept(bytes(reply.data))
        except SecAggError as exc:
            raise Refused(f"the registry the aggregator relays is refused: {exc}") from None
        if registry.version != self.signed_registry.version:
            log.info(
                "client %d: registry v%d adopted (%d members)",
                self.member_id,
                registry.version,
                len(registry.members),
            )
        self._use(registry)

    def _decline(self, cfg: RoundConfig, reason: str) -> None:
        """Tell the aggregator why this member sits the round out (best effort)."""
        req = cpb.DeclineRequest(
            client_id=self.member_id, round=cfg.round, session_id=cfg.session_id, reason=reason
        )
        try:
            self.membership.Decline(req, timeout=self.options.rpc_timeout)
        except grpc.RpcError as exc:
            log.debug("declining round %d: %s", cfg.round, exc.code().name)

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
        """Take part until ``options.rounds`` rounds have completed, the aggregator has no
        more, or more than ``max_failed_rounds`` rounds failed; one report per round joined."""
        reports: list[RoundReport] = []
        last = -1
        failed = 0
        while sum(r.completed for r in reports) < self.options.rounds:
            try:
                info = self._next_round(last)
            except Unreachable as exc:
                if not reports:
                    raise
                log.warning("client %d: %s", self.member_id, exc)
                break
            if info is None:
                break
            cfg = wire.config_from_pb(info.config)
            last = cfg.round
            t0 = self.clock()
            try:
                report = self._one_round(cfg, bytes(info.task))
            except (RoundLost, Unreachable) as exc:  # the aggregator restarted or went away
                log.warning(
                    "client %d: round %d lost (%s); joining the next",
                    self.member_id,
                    cfg.round,
                    exc,
                )
                report = RoundReport(cfg.round, False, (), f"lost: {exc}", self.clock() - t0)
            reports.append(report)
            if not report.completed:
                failed += 1
                if failed > self.options.max_failed_rounds:
                    log.warning(
                        "client %d: %d rounds failed (at most %d allowed): giving up",
                        self.member_id,
                        failed,
                        self.options.max_failed_rounds,
                    )
                    break
        return reports

    def _next_round(self, after: int) -> pb.RoundInfo | None:
        """The next round after ``after`` (None: the aggregator has no more). Waits for an
        aggregator that is restarting, at most ``reconnect_timeout`` seconds in a row."""
        req = pb.GetRoundRequest(client_id=self.member_id, after_round=after)
        deadline = self.clock() + self.options.wait_timeout
        down_since: float | None = None
        while True:
            try:
                info = self._call("joining a round", lambda: self.stub.GetRound(req, timeout=30.0))
                if not info.finished:  # the round's members are the registry's
                    self._refresh_registry()
            except Unreachable as exc:
                now = self.clock()
                down_since = now if down_since is None else down_since
                if now - down_since >= self.options.reconnect_timeout:
                    raise Unreachable(
                        f"the aggregator has been unreachable for "
                        f"{self.options.reconnect_timeout:.0f} s: giving up ({exc})"
                    ) from None
                log.info("client %d: aggregator unreachable; waiting for it", self.member_id)
                self.sleep(min(2.0, self.options.reconnect_timeout))
                continue
            except AgentError as exc:
                if isinstance(exc, RoundLost | Refused) or "DEADLINE_EXCEEDED" not in str(exc):
                    raise
                if self.clock() < deadline:
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
            self._decline(cfg, str(exc))
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
