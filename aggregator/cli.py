"""``secagg-aggregator``: create a consortium's material, or run the aggregator service."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="secagg-aggregator", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init-consortium", help="create CA, certificates, identities, registry")
    init.add_argument("--members", type=int, required=True)
    init.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("serve", help="run rounds of secure aggregation")
    s.add_argument("--listen", default="127.0.0.1:50051")
    s.add_argument("--consortium", type=Path, required=True)
    s.add_argument("--state", type=Path, required=True, help="folder for the SQLite state")
    s.add_argument("--output", type=Path, required=True, help="where round-<r>.npy/.json go")
    s.add_argument("--dimension", type=int, required=True)
    s.add_argument("--threshold", type=int, required=True)
    s.add_argument("--neighbors", type=int, default=None, help="SecAgg+ k (default: all)")
    s.add_argument("--rounds", type=int, default=1)
    s.add_argument("--stage-timeout", type=float, default=30.0)
    s.add_argument(
        "--first-round-wait",
        type=float,
        default=60.0,
        help="how long the first round waits for members to join",
    )
    s.add_argument("--clip", type=float, default=1.0)
    s.add_argument("--bits", type=int, default=None)
    s.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext, no client certificates: local demos only",
    )
    s.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.cmd == "init-consortium":
            from aggregator.consortium import init_consortium

            out = init_consortium(args.members, args.out)
            print(f"consortium of {args.members} members written to {out}")
            return 0
        from aggregator.consortium import load_consortium
        from aggregator.service import ServeOptions, serve

        options = ServeOptions(
            d=args.dimension,
            t=args.threshold,
            k=args.neighbors,
            clip=args.clip,
            bits=args.bits,
            rounds=args.rounds,
            stage_timeout=args.stage_timeout,
            first_round_wait=args.first_round_wait,
            output=args.output,
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        done = serve(
            options,
            load_consortium(args.consortium),
            args.state,
            args.listen,
            insecure=args.insecure_dev,
            stop_event=stop,
        )
        print(f"aggregator stopped; {done} rounds completed in total")
        return 0
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"secagg-aggregator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
