"""``secagg-client``: join an aggregator and contribute a vector (statistics mode)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="secagg-client", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("join", help="take part in rounds")
    j.add_argument("--aggregator", default="127.0.0.1:50051")
    j.add_argument("--consortium", type=Path, required=True)
    j.add_argument("--id", type=int, required=True)
    j.add_argument("--input", type=Path, required=True, help="a 1-D float .npy file")
    j.add_argument("--rounds", type=int, default=1)
    j.add_argument("--insecure-dev", action="store_true")
    j.add_argument(
        "--require-verification",
        action="store_true",
        help="refuse rounds that do not verify contributions with norm proofs (protocol.md §7)",
    )
    j.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:ROUND:STAGE[:SECONDS]",
        help="testing only: 'kill' (SIGKILL itself) or 'delay' before sending STAGE in ROUND",
    )
    j.add_argument("-v", "--verbose", action="store_true")
    t = sub.add_parser("train", help="take part in federated DP-LoRA rounds")
    t.add_argument("--aggregator", default="127.0.0.1:50051")
    t.add_argument("--consortium", type=Path, required=True)
    t.add_argument("--id", type=int, required=True)
    t.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    t.add_argument("--cache", type=Path, default=None, help="where SmolLM2 is cached")
    t.add_argument("--slice", type=int, required=True, help="which slice of the local text")
    t.add_argument("--n-slices", type=int, required=True)
    t.add_argument("--max-blocks", type=int, default=None)
    t.add_argument("--ledger", type=Path, required=True, help="this client's privacy ledger")
    t.add_argument("--ledger-key", type=Path, required=True, help="Ed25519 PEM key for it")
    t.add_argument("--rounds", type=int, default=1)
    t.add_argument("--insecure-dev", action="store_true")
    t.add_argument(
        "--require-verification",
        action="store_true",
        help="refuse rounds that do not verify contributions with norm proofs (protocol.md §7)",
    )
    t.add_argument("--fault", action="append", default=[], help="testing only, as for join")
    t.add_argument("--dump-updates", type=Path, default=None, help=argparse.SUPPRESS)
    t.add_argument("-v", "--verbose", action="store_true")
    return ap


def _faults(specs: list[str]):  # type: ignore[no-untyped-def]
    """Parse --fault options into a hook the agent calls before each stage (tests only)."""
    import os
    import signal
    import time

    from secagg import Stage

    plan: dict[tuple[int, str], tuple[str, float]] = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (3, 4) or parts[0] not in ("kill", "delay"):
            raise ValueError(f"bad --fault {spec!r}: want kill|delay:ROUND:STAGE[:SECONDS]")
        if parts[2] not in Stage.__members__:
            raise ValueError(f"bad --fault stage {parts[2]!r}")
        plan[(int(parts[1]), parts[2])] = (parts[0], float(parts[3]) if len(parts) == 4 else 0.0)
    if not plan:
        return None

    def hook(rnd: int, stage: Stage) -> None:
        kind, seconds = plan.get((rnd, stage.name), ("", 0.0))
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "delay":
            time.sleep(seconds)

    return hook


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    from client.agent import AgentError, AgentOptions, ClientAgent
    from dp import PrivacyError
    from secagg import ClientPolicy

    try:
        contributor: Any
        if args.cmd == "train":
            import torch

            from client.fl import FlClientOptions, FlContributor

            torch.set_num_threads(1)
            contributor = FlContributor(
                FlClientOptions(
                    client_id=args.id,
                    model=args.model,
                    slice_index=args.slice,
                    n_slices=args.n_slices,
                    ledger=args.ledger,
                    ledger_key=args.ledger_key,
                    cache_dir=args.cache,
                    max_blocks=args.max_blocks,
                    dump_dir=args.dump_updates,
                )
            )
        else:
            vector = np.load(args.input, allow_pickle=False)
            if vector.ndim != 1 or vector.dtype.kind != "f":
                raise ValueError(f"{args.input} must hold a 1-D float vector")

            def provide(cfg):  # type: ignore[no-untyped-def]
                if vector.shape[0] != cfg.d:
                    raise ValueError(f"the round wants d={cfg.d}, the input has {vector.shape[0]}")
                return vector

            contributor = provide
        agent = ClientAgent(
            AgentOptions(
                aggregator=args.aggregator,
                consortium=args.consortium,
                client_id=args.id,
                rounds=args.rounds,
                insecure=args.insecure_dev,
                policy=ClientPolicy(require_norm_bound=args.require_verification),
            ),
            contributor,
            before_stage=_faults(args.fault),
        )
        try:
            reports = agent.run()
        finally:
            agent.close()
    except (AgentError, OSError, ValueError, PrivacyError) as exc:
        print(f"secagg-client: error: {exc}", file=sys.stderr)
        return 2
    done = sum(r.completed for r in reports)
    print(f"client {args.id}: {done}/{len(reports)} rounds completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
