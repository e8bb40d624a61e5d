"""The one-shot client agent: per round, fetch the round (config and the committee's signed round
keys), make the single upload with :class:`secagg.oneshot.OneShotClient` under this member's
registered identity, stream it, and leave: no further message, no waiting for the outcome.

A statistics round uploads ``provider(config)``; a task round (federated DP-LoRA) carries its
task document and global model, which must match the digests in the committee-signed config,
and uploads what a :class:`OneShotContributor` makes of them (its distributed-DP ring vector,
centred). Keys and policy are checked before any training, so a bogus round spends no budget.

Transient errors (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with exponential backoff; a
retried upload is the same bytes, and ALREADY_EXISTS means an earlier attempt landed.
Run it: ``secagg-client join --protocol oneshot --consortium BUNDLE --id I --input x.npy``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import grpc
import numpy as np
import numpy.typing as npt

from client.agent import AgentError, RoundReport, call_with_retry
from protos import oneshot_wire as wire
from protos.consortium import channel_options, member_folder
from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from protos.secagg.oneshot.v1 import oneshot_pb2_grpc as pb_grpc
from secagg import SecAggError
from secagg.oneshot import OneShotClient, OneShotConfig, OneShotPolicy
from secagg.oneshot.client import check_member_keys

__all__ = ["OneShotAgentOptions", "OneShotClientAgent", "OneShotContributor"]

log = logging.getLogger("secagg.client.oneshot")
_T = TypeVar("_T")
_MAX_MESSAGE = 1 << 30

OneShotInputProvider = Callable[[OneShotConfig], npt.ArrayLike]


@runtime_checkable
class OneShotContributor(Protocol):
    """Turns a task round's public task and global model into this client's centred integers
    on the round's grid (:meth:`client.fl.FlContributor.contribute_oneshot`)."""

    def contribute_oneshot(
        self, config: OneShotConfig, task: bytes, model: bytes
    ) -> npt.NDArray[np.int64]: ...


@dataclass(frozen=True)
class OneShotAgentOptions:
    aggregator: str
    member: Path | None
    consortium: Path | None
    client_id: int | None
    rounds: int = 1
    rpc_timeout: float = 120.0
    wait_timeout: float = 600.0
    retries: int = 6
    backoff: float = 0.2
    server_name: str | None = None
    policy: OneShotPolicy = field(default_factory=OneShotPolicy)


class OneShotClientAgent:
    """Runs ``options.rounds`` one-shot rounds, contributing ``provider(config)`` in each (or,
    given a :class:`OneShotContributor`, what it makes of each round's task)."""

    def __init__(
        self,
        options: OneShotAgentOptions,
        provider: OneShotInputProvider | OneShotContributor,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        before_upload: Callable[[int], None] | None = None,
    ) -> None:
        self.options = options
        self.provider = provider
        self.sleep = sleep
        self.clock = clock
        self.before_upload = before_upload  # fault injection for tests: (round)
        folder = member_folder(options.member, options.consortium, options.client_id)
        self.client_id = folder.member_id
        files = folder.files()
        self._identity = files.identity
        self.identities = folder.registry().identities
        creds = grpc.ssl_channel_credentials(
            root_certificates=folder.ca, private_key=files.key, certificate_chain=files.cert
        )
        self.channel = grpc.secure_channel(
            options.aggregator, creds, options=channel_options(options.server_name, _MAX_MESSAGE)
        )
        self.stub = pb_grpc.OneShotAggregatorStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return call_with_retry(
            what, fn, retries=self.options.retries, backoff=self.options.backoff, sleep=self.sleep
        )

    def run(self) -> list[RoundReport]:
        reports: list[RoundReport] = []
        last = -1
        for _ in range(self.options.rounds):
            req = pb.GetRoundRequest(client_id=self.client_id, after_round=last)
            info = self._get_round(req)
            if info.finished:
                break
            last = info.config.round
            reports.append(self._one_round(info))
        return reports

    def _get_round(self, req: pb.GetRoundRequest) -> pb.RoundInfo:
        deadline = self.clock() + self.options.wait_timeout
        while True:
            try:
                info: pb.RoundInfo = self._call(
                    "joining a round", lambda: self.stub.GetRound(req, timeout=30.0)
                )
                return info
            except AgentError as exc:
                if "DEADLINE_EXCEEDED" in str(exc) and self.clock() < deadline:
                    continue
                raise

    @staticmethod
    def _job(cfg: OneShotConfig, info: pb.RoundInfo) -> tuple[bytes, bytes]:
        """The round's task and model, checked against the config's digests (SA-06)."""
        task, model = bytes(info.task), bytes(info.model)
        for what, blob, want in (
            ("task", task, cfg.task_digest),
            ("model", model, cfg.model_digest),
        ):
            got = hashlib.sha256(blob).digest() if blob else bytes(32)
            if got != want:
                raise AgentError(f"the round's {what} does not match its digest: refusing")
        return task, model

    def _one_round(self, info: pb.RoundInfo) -> RoundReport:
        t0 = self.clock()
        me = self.client_id
        try:
            cfg = wire.config_from_pb(info.config)
            keys = [wire.member_key_from_pb(k) for k in info.member_keys]
            client = OneShotClient(
                cfg, me, self._identity, self.identities, policy=self.options.policy
            )
            # Before any training: the committee signed this config, whose digests name the job.
            check_member_keys(cfg, keys, self.identities)
            task, model = self._job(cfg, info)
            if isinstance(self.provider, OneShotContributor):
                ints = self.provider.contribute_oneshot(cfg, task, model)
                upload = client.upload_ints(ints, keys)
            elif task:
                raise AgentError("this client only does statistics rounds; the round has a task")
            else:
                upload = client.upload(np.asarray(self.provider(cfg), dtype=np.float64), keys)
        except (SecAggError, wire.WireError, AgentError) as exc:
            log.warning("client %d: round %d refused: %s", me, info.config.round, exc)
            return RoundReport(info.config.round, False, (), f"refused: {exc}", self.clock() - t0)
        log.info("client %d: round %d, %s", me, cfg.round, cfg.describe())
        if self.before_upload is not None:
            self.before_upload(cfg.round)
        try:
            self._call(
                "uploading",
                lambda: self.stub.Upload(
                    wire.upload_parts(upload), timeout=self.options.rpc_timeout
                ),
            )
        except AgentError as exc:
            if "ALREADY_EXISTS" not in str(exc):
                raise
        log.info("client %d: round %d uploaded (%d bytes); leaving", me, cfg.round, upload.nbytes)
        # Completed from this client's side: it sent its one message; the outcome is the
        # aggregator's to publish.
        return RoundReport(
            cfg.round, True, (), "uploaded", self.clock() - t0, upload.nbytes, info.ByteSize()
        )
