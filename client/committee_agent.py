"""``secagg-committee``: a consortium member serving on the one-shot decryptor committee, a thin
shell over :class:`secagg.oneshot.CommitteeMember`.

It connects to the one-shot aggregator over mutual TLS with its member certificate and answers
the aggregator's tasks: issue a signed round key, check a proposed set and its shares (or
complain about the clients whose shares fail), sign one set per round, release its share sum
once for that set with ``threshold`` signatures on it. Round keys live in this process's memory
only: a restart forgets them, and the rounds they served cannot be decrypted by this member.
Its work and traffic per round depend on the number of clients, never on d.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

import grpc

from protos import oneshot_wire as wire
from protos.consortium import channel_options, member_folder
from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from protos.secagg.oneshot.v1 import oneshot_pb2_grpc as pb_grpc
from secagg import SecAggError
from secagg.oneshot import CommitteeMember, Complaint

__all__ = ["CommitteeAgent", "main"]

log = logging.getLogger("secagg.committee")
_MAX_MESSAGE = 1 << 30


class CommitteeAgent:
    """Polls the aggregator for tasks and answers them until it says it has finished."""

    def __init__(
        self,
        aggregator: str,
        member: Path | None,
        consortium: Path | None,
        member_id: int | None,
        *,
        min_cohort: int = 3,
        retries: int = 30,
        server_name: str | None = None,
    ) -> None:
        folder = member_folder(member, consortium, member_id)
        files = folder.files()
        self.member_id = folder.member_id
        registry = folder.registry().identities
        self.member = CommitteeMember(
            self.member_id, files.identity, registry, min_cohort=min_cohort
        )
        self.retries = retries
        creds = grpc.ssl_channel_credentials(
            root_certificates=folder.ca, private_key=files.key, certificate_chain=files.cert
        )
        self.channel = grpc.secure_channel(
            aggregator, creds, options=channel_options(server_name, _MAX_MESSAGE)
        )
        self.stub = pb_grpc.OneShotAggregatorStub(self.channel)  # type: ignore[no-untyped-call]
        self.released = 0

    def close(self) -> None:
        self.channel.close()

    def handle(self, task: pb.CommitteeTask) -> pb.CommitteeAnswer:
        """One task -> one answer; every refusal is a sentence, never a traceback."""
        ans = pb.CommitteeAnswer(task_id=task.task_id, member_id=self.member_id)
        m = self.member
        try:
            kind = task.WhichOneof("body")
            if kind == "open_round":
                cfg = wire.config_from_pb(task.open_round)
                ans.key.CopyFrom(wire.member_key_to_pb(m.open_round(cfg)))
                log.info("round %d: key issued", cfg.round)
            elif kind == "check":
                cfg, req = wire.check_from_pb(task.check)
                try:
                    m.check(req)
                    ans.checked = True
                    log.info("round %d: %d shares checked", cfg.round, len(req.shares))
                except Complaint as exc:
                    ans.complaint.CopyFrom(
                        pb.Complaint(culprits=list(exc.culprits), reason=str(exc))
                    )
                    log.warning("round %d: %s", cfg.round, exc)
            elif kind == "sign":
                cfg = wire.config_from_pb(task.sign.config)
                assert cfg.session_id is not None
                sig = m.sign(cfg.session_id, cfg.round, tuple(task.sign.included))
                ans.set_signature.CopyFrom(wire.set_signature_to_pb(sig))
            elif kind == "release":
                cfg, rreq = wire.release_from_pb(task.release)
                ans.share_sum.CopyFrom(wire.share_sum_to_pb(m.release(rreq)))
                self.released += 1
                log.info(
                    "round %d: share sum released for %d clients", cfg.round, len(rreq.included)
                )
            elif kind == "forget":
                cfg = wire.config_from_pb(task.forget)
                assert cfg.session_id is not None
                m.forget(cfg.session_id, cfg.round)
                ans.done = True
            else:
                ans.done = True
        except (SecAggError, wire.WireError) as exc:
            log.warning("task %d refused: %s", task.task_id, exc)
            ans.refusal.CopyFrom(pb.Refusal(reason=str(exc)))
        return ans

    def run(self, stop: threading.Event | None = None) -> int:
        """Serve tasks until the aggregator has finished; returns the number of releases."""
        failures, delay = 0, 0.2
        while stop is None or not stop.is_set():
            try:
                task = self.stub.NextTask(pb.TaskRequest(member_id=self.member_id), timeout=30.0)
                failures, delay = 0, 0.2
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue
                failures += 1
                if failures > self.retries:
                    raise
                log.info("aggregator %s; retrying in %.1f s", exc.code().name, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
                continue
            if task.WhichOneof("body") == "finished":
                log.info("the aggregator has finished")
                break
            self.stub.Answer(self.handle(task), timeout=60.0)
        return self.released


def _parser() -> argparse.ArgumentParser:
    from protos.ops import add_common_arguments, common_parent

    ap = argparse.ArgumentParser(
        prog="secagg-committee",
        description="A consortium member's side of the one-shot decryptor committee: per round, "
        "issue a signed key, check the shares clients sealed to it, sign one set and release "
        "the sum of its shares once. Exit status: 0 the aggregator finished, 2 bad input or "
        "material, 130/143 stopped by SIGINT/SIGTERM.",
    )
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "run", parents=[common_parent()], help="serve the aggregator's committee tasks"
    )
    r.add_argument(
        "--aggregator",
        default="127.0.0.1:50053",
        metavar="HOST:PORT",
        help="where the one-shot aggregator listens (default: %(default)s)",
    )
    r.add_argument("--member", type=Path, default=None, help="this member's own folder")
    r.add_argument(
        "--consortium",
        type=Path,
        default=None,
        help="local tests: a bundle from `secagg-aggregator init-consortium` (with --id)",
    )
    r.add_argument("--id", type=int, default=None, help="this member's id")
    r.add_argument(
        "--server-name",
        default=None,
        metavar="NAME",
        help="the name to check the aggregator's certificate against (default: HOST)",
    )
    r.add_argument(
        "--min-cohort",
        type=int,
        default=3,
        help="fewest clients a set this member releases for may hold (default: %(default)s)",
    )
    return ap


def _run(args: argparse.Namespace) -> int:
    agent = CommitteeAgent(
        args.aggregator,
        args.member,
        args.consortium,
        args.id,
        min_cohort=args.min_cohort,
        server_name=args.server_name,
    )
    try:  # SIGINT / SIGTERM end this via run_cli's clean stop
        released = agent.run()
    finally:
        agent.close()
    print(f"committee member {agent.member_id} stopped; {released} share sums released")
    return 0


def main(argv: list[str] | None = None) -> int:
    from protos.ops import run_cli

    return run_cli("secagg-committee", _parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
