"""``secagg-keyholder``: the key holder of the HE variant, a thin shell over
:class:`secagg.he.HeKeyHolder`.

It connects to the HE aggregator over mutual TLS with its own certificate (``issue-cert``
makes one, signed by the consortium CA) and answers the aggregator's tasks: issue a fresh key
set for a round (signing the public context so clients can tell it is genuine), release a
round's final sum, or forget a round's key. It refuses to decrypt anything but a round's final
sum: one decryption per (session, round) it issued, of a sum of at least ``--min-cohort``
distinct registered contributors, each counted once (their signed, sealed per-round tags).
The aggregator's bytes are parsed in a sandbox before they come near the key.
Secret keys live in this process's memory only: a restart forgets them and their rounds fail.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

import grpc

from aggregator._cli import stop_on_signals
from aggregator.he_material import issue_keyholder_cert, keyholder_material, sign_context
from protos import he_wire
from protos.consortium import load_consortium
from protos.ops import sigint_ignored_by_children
from protos.secagg.he.v1 import he_pb2 as pb
from protos.secagg.he.v1 import he_pb2_grpc as pb_grpc
from secagg import SecAggError
from secagg.he import HeKeyHolder, HeSumMessage, SafeDeserializer

__all__ = ["KeyHolderAgent", "main"]

log = logging.getLogger("secagg.keyholder")
_MAX_MESSAGE = 1 << 30


class KeyHolderAgent:
    """Polls the aggregator for tasks and answers them until it says it has finished."""

    def __init__(
        self,
        aggregator: str,
        consortium: Path,
        *,
        min_cohort: int = 3,
        workers: int = 1,
        retries: int = 30,
    ) -> None:
        cons = load_consortium(consortium)
        self._key, self._cert = keyholder_material(consortium)
        self.sandbox = SafeDeserializer(workers, timeout=120.0)
        self.holder = HeKeyHolder(cons.registry, min_cohort=min_cohort, backend=self.sandbox)
        self.retries = retries
        creds = grpc.ssl_channel_credentials(
            root_certificates=cons.ca, private_key=self._key, certificate_chain=self._cert
        )
        self.channel = grpc.secure_channel(
            aggregator,
            creds,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        self.stub = pb_grpc.HeAggregatorStub(self.channel)  # type: ignore[no-untyped-call]
        self.released = 0

    def close(self) -> None:
        self.channel.close()
        self.sandbox.close()

    def handle(self, task: pb.KeyHolderTask) -> pb.KeyHolderAnswer:
        """One task -> one answer; every refusal is a sentence, never a traceback."""
        ans = pb.KeyHolderAnswer(task_id=task.task_id)
        try:
            kind = task.WhichOneof("body")
            if kind == "open_round":
                cfg = he_wire.config_from_pb(task.open_round)
                keys = self.holder.open_round(cfg)
                ans.keys.CopyFrom(
                    pb.RoundKeys(
                        public_context=keys.public_context,
                        parameters_context=keys.parameters_context,
                        context_signature=sign_context(self._key, keys.digest),
                        keyholder_certificate=self._cert,
                        tag_key=keys.tag_key,
                    )
                )
                log.info("round %d: keys issued (%s)", cfg.round, cfg.params)
            elif kind == "release":
                cfg = he_wire.config_from_pb(task.release.config)
                assert cfg.session_id is not None
                rel = self.holder.release(
                    HeSumMessage(
                        cfg.session_id,
                        cfg.round,
                        tuple(bytes(c) for c in task.release.chunks),
                        tuple(task.release.included),
                        tuple(he_wire.contribution_from_pb(c) for c in task.release.contributions),
                    )
                )
                ans.release.CopyFrom(
                    pb.Release(
                        count=rel.count,
                        int_sum=he_wire.int_sum_to_bytes(rel.int_sum),
                        error_bound=rel.error_bound,
                        flood=rel.flood,
                    )
                )
                self.released += 1
                log.info("round %d: sum of %d released", cfg.round, rel.count)
            elif kind == "forget":
                cfg = he_wire.config_from_pb(task.forget)
                assert cfg.session_id is not None
                self.holder.forget(cfg.session_id, cfg.round)
                ans.done = True
            else:
                ans.done = True
        except SecAggError as exc:
            log.warning("task %d refused: %s", task.task_id, exc)
            ans.refusal.CopyFrom(pb.Refusal(reason=str(exc)))
        return ans

    def run(self, stop: threading.Event | None = None) -> int:
        """Serve tasks until the aggregator has finished; returns the number of sums released."""
        self.sandbox.start()
        failures, delay = 0, 0.2
        while stop is None or not stop.is_set():
            try:
                task = self.stub.NextTask(pb.TaskRequest(), timeout=30.0)
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
            answer = self.handle(task)
            self.stub.Answer(answer, timeout=60.0)
        return self.released


def _parser() -> argparse.ArgumentParser:
    from protos.ops import add_common_arguments, common_parent

    ap = argparse.ArgumentParser(
        prog="secagg-keyholder",
        description="The key holder of the homomorphic-encryption variant: it issues a fresh "
        "key per round (signing the public context) and decrypts only each round's final sum, "
        "for the HE aggregator it connects to. Its secret keys live in this process only.",
    )
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    i = sub.add_parser(
        "issue-cert",
        parents=[common_parent()],
        help="issue the key holder's certificate (local bundles: needs the CA key)",
    )
    i.add_argument("--consortium", type=Path, required=True, help="a bundle from init-consortium")
    i.add_argument("--force", action="store_true", help="replace an existing certificate")
    r = sub.add_parser("run", parents=[common_parent()], help="serve the HE aggregator's key tasks")
    r.add_argument(
        "--aggregator",
        default="127.0.0.1:50052",
        metavar="HOST:PORT",
        help="where the HE aggregator listens (default: %(default)s)",
    )
    r.add_argument(
        "--consortium", type=Path, required=True, help="a bundle holding keyholder.key/.pem"
    )
    r.add_argument(
        "--min-cohort",
        type=int,
        default=3,
        help="fewest contributions a released sum may hold (default: %(default)s)",
    )
    r.add_argument(
        "--workers", type=int, default=1, help="sandboxed parser processes (default: %(default)s)"
    )
    return ap


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "issue-cert":
        _, cert = issue_keyholder_cert(args.consortium, force=args.force)
        print(f"key holder certificate written to {cert}")
        return 0
    agent = KeyHolderAgent(
        args.aggregator, args.consortium, min_cohort=args.min_cohort, workers=args.workers
    )
    with sigint_ignored_by_children():
        agent.sandbox.start()  # workers that a Ctrl-C at the terminal leaves alone
    stop = stop_on_signals(on_stop=agent.channel.close)  # wakes the long-poll at once
    try:
        released = agent.run(stop)
    finally:
        agent.close()
    print(f"key holder stopped; {released} sums released")
    return 128 + stop.signum if stop.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    from protos.ops import run_cli

    return run_cli("secagg-keyholder", _parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
