"""The HE client agent: per round, fetch the public context once, check that the key holder
signed it (with the round's tag key), encrypt, tag and sign the update with
:class:`secagg.he.HeClient` under this member's registered identity, upload it chunk by chunk,
and wait for the outcome.

Transient errors (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with exponential backoff; a
retried upload is the same ciphertexts, and ALREADY_EXISTS means an earlier attempt landed.
Run it: ``python -m client.he_agent join --consortium BUNDLE --id I --input x.npy``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from client.agent import AgentError, RoundReport, call_with_retry
from protos import he_wire
from protos.consortium import load_consortium
from protos.he_material import verify_context
from protos.secagg.he.v1 import he_pb2 as pb
from protos.secagg.he.v1 import he_pb2_grpc as pb_grpc
from secagg import SecAggError
from secagg.he import HeClient, HeRoundConfig, HeUpload, context_digest

__all__ = ["HeAgentOptions", "HeClientAgent", "main"]

log = logging.getLogger("secagg.client.he")
_T = TypeVar("_T")
_MAX_MESSAGE = 1 << 30

HeInputProvider = Callable[[HeRoundConfig], npt.ArrayLike]


@dataclass(frozen=True)
class HeAgentOptions:
    aggregator: str
    consortium: Path
    client_id: int
    rounds: int = 1
    rpc_timeout: float = 120.0
    wait_timeout: float = 600.0
    retries: int = 6
    backoff: float = 0.2


class HeClientAgent:
    """Runs ``options.rounds`` HE rounds, contributing ``provider(config)`` in each."""

    def __init__(
        self,
        options: HeAgentOptions,
        provider: HeInputProvider,
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
        cons = load_consortium(options.consortium)
        if options.client_id not in cons.registry:
            raise AgentError(f"member {options.client_id} is not in the consortium registry")
        self.ca = cons.ca
        member = cons.member(options.client_id)
        self._identity = member.identity
        creds = grpc.ssl_channel_credentials(
            root_certificates=cons.ca, private_key=member.key, certificate_chain=member.cert
        )
        self.channel = grpc.secure_channel(
            options.aggregator,
            creds,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        self.stub = pb_grpc.HeAggregatorStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return call_with_retry(
            what, fn, retries=self.options.retries, backoff=self.options.backoff, sleep=self.sleep
        )

    def _long_poll(self, what: str, fn: Callable[[], _T]) -> _T:
        deadline = self.clock() + self.options.wait_timeout
        while True:
            try:
                return self._call(what, fn)
            except AgentError as exc:
                if "DEADLINE_EXCEEDED" in str(exc) and self.clock() < deadline:
                    continue
                raise

    def run(self) -> list[RoundReport]:
        reports: list[RoundReport] = []
        last = -1
        for _ in range(self.options.rounds):
            req = pb.GetRoundRequest(client_id=self.options.client_id, after_round=last)
            info = self._get_round(req)
            if info.finished:
                break
            last = info.config.round
            reports.append(self._one_round(info))
        return reports

    def _get_round(self, req: pb.GetRoundRequest) -> pb.RoundInfo:
        info: pb.RoundInfo = self._long_poll(
            "joining a round", lambda: self.stub.GetRound(req, timeout=30.0)
        )
        return info

    def _one_round(self, info: pb.RoundInfo) -> RoundReport:
        t0 = self.clock()
        me = self.options.client_id
        try:
            cfg = he_wire.config_from_pb(info.config)
            verify_context(
                self.ca,
                info.keyholder_certificate,
                context_digest(cfg, info.public_context, info.tag_key),
                info.context_signature,
            )
            client = HeClient(cfg, info.public_context, info.tag_key, me, self._identity)
            upload = client.encrypt(np.asarray(self.provider(cfg), dtype=np.float64))
        except SecAggError as exc:
            log.warning("client %d: round %d refused: %s", me, info.config.round, exc)
            return RoundReport(info.config.round, False, (), f"refused: {exc}", self.clock() - t0)
        log.info("client %d: round %d, %s", me, cfg.round, cfg.describe())
        if self.before_upload is not None:
            self.before_upload(cfg.round)
        sent = self._upload(cfg, upload)
        assert cfg.session_id is not None
        req = pb.AwaitRequest(round=cfg.round, session_id=cfg.session_id, client_id=me)
        outcome: pb.RoundOutcome = self._long_poll(
            "waiting for the outcome", lambda: self.stub.AwaitOutcome(req, timeout=60.0)
        )
        log.info(
            "client %d: round %d %s%s",
            me,
            cfg.round,
            "completed" if outcome.completed else "ended without this client",
            f": {outcome.reason}" if outcome.reason else "",
        )
        return RoundReport(
            cfg.round,
            outcome.completed,
            tuple(outcome.included),
            outcome.reason,
            self.clock() - t0,
            sent,
            info.ByteSize() + outcome.ByteSize(),
        )

    def _upload(self, cfg: HeRoundConfig, upload: HeUpload) -> int:
        me = self.options.client_id

        def stream() -> Iterator[pb.UploadChunk]:
            for i, c in enumerate(upload.chunks):
                first = i == 0  # the sealed tag and the signature ride on the first chunk
                yield pb.UploadChunk(
                    round=cfg.round,
                    session_id=upload.session_id,
                    sender=me,
                    index=i,
                    ciphertext=c,
                    sealed_tag=upload.sealed_tag if first else b"",
                    signature=upload.signature if first else b"",
                )

        try:
            self._call(
                "uploading", lambda: self.stub.Upload(stream(), timeout=self.options.rpc_timeout)
            )
        except AgentError as exc:
            if "ALREADY_EXISTS" not in str(exc):
                raise
        return upload.nbytes


def _parser() -> argparse.ArgumentParser:
    from protos.ops import add_common_arguments, common_parent

    ap = argparse.ArgumentParser(
        prog="python -m client.he_agent",
        description="A member's side of the homomorphic-encryption variant: per round, check "
        "that the key holder signed the public context, encrypt and upload. Exit status: 0 "
        "every round completed, 1 some did not, 2 bad input or material.",
    )
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    j = sub.add_parser("join", parents=[common_parent()], help="take part in HE rounds")
    j.add_argument(
        "--aggregator",
        default="127.0.0.1:50052",
        metavar="HOST:PORT",
        help="where the HE aggregator listens (default: %(default)s)",
    )
    j.add_argument(
        "--consortium",
        type=Path,
        required=True,
        help="a bundle from `secagg-aggregator init-consortium` (local tests)",
    )
    j.add_argument("--id", type=int, required=True, help="this member's id")
    j.add_argument("--input", type=Path, required=True, help="a 1-D float .npy file")
    j.add_argument(
        "--rounds", type=int, default=1, help="rounds to take part in (default: %(default)s)"
    )
    j.add_argument(
        "--kill-before-upload",
        type=int,
        default=None,
        metavar="ROUND",
        help="testing only: SIGKILL this process just before uploading in ROUND",
    )
    return ap


def _run(args: argparse.Namespace) -> int:
    kill_round = args.kill_before_upload

    def hook(rnd: int) -> None:
        if rnd == kill_round:
            os.kill(os.getpid(), signal.SIGKILL)

    vector = np.load(args.input, allow_pickle=False)
    if vector.ndim != 1 or vector.dtype.kind != "f":
        raise ValueError(f"{args.input} must hold a 1-D float vector")

    def provide(cfg: HeRoundConfig) -> npt.ArrayLike:
        if vector.shape[0] != cfg.d:
            raise ValueError(f"the round wants d={cfg.d}, the input has {vector.shape[0]}")
        return np.asarray(vector, dtype=np.float64)

    agent = HeClientAgent(
        HeAgentOptions(
            aggregator=args.aggregator,
            consortium=args.consortium,
            client_id=args.id,
            rounds=args.rounds,
        ),
        provide,
        before_upload=hook if kill_round is not None else None,
    )
    try:
        reports = agent.run()
    finally:
        agent.close()
    done = sum(r.completed for r in reports)
    print(f"client {args.id}: {done}/{len(reports)} HE rounds completed")
    return 0 if done >= args.rounds else 1


def main(argv: list[str] | None = None) -> int:
    from protos.ops import run_cli

    return run_cli("he client", _parser, _run, argv, expected=(SecAggError,))


if __name__ == "__main__":
    sys.exit(main())
