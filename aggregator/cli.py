"""``secagg-aggregator``: create a consortium's material, or run the aggregator service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

from aggregator._cli import add_serve_arguments, setup_logging, stop_on_signals
from secagg import SecAggError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="secagg-aggregator", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init-consortium", help="create CA, certificates, identities, registry")
    init.add_argument("--members", type=int, required=True)
    init.add_argument("--out", type=Path, required=True)
    s = sub.add_parser(
        "serve",
        parents=[_common_serve(straggler_grace=False)],
        help="run rounds of secure aggregation",
    )
    s.add_argument("--dimension", type=int, required=True)
    s.add_argument("--clip", type=float, default=1.0)
    s.add_argument("--bits", type=int, default=None)
    s.add_argument(
        "--norm-bound",
        type=int,
        default=None,
        help="verify contributions (protocol.md §7): every client proves that the squared L2 "
        "norm of its encoded vector is at most this; off by default",
    )
    for name, what in (
        ("cheaters", "list the members suspended for a false contribution"),
        ("clear-cheater", "lift a member's suspension (an operator's decision)"),
    ):
        c = sub.add_parser(name, help=what, description=what)
        c.add_argument("--state", type=Path, required=True, help="the aggregator's state folder")
        if name == "clear-cheater":
            c.add_argument("--id", type=int, required=True, help="the member id to clear")
    f = sub.add_parser(
        "serve-fl",
        parents=[_common_serve(straggler_grace=True)],
        help="run rounds of federated DP-LoRA (secure sum of distributed-DP adapter updates)",
    )
    f.add_argument("--initial-adapter", type=Path, required=True, help="float32 .npy vector")
    f.add_argument("--adapter-spec", type=Path, required=True, help="the adapter's spec JSON")
    f.add_argument(
        "--job",
        type=Path,
        required=True,
        help="JSON: l2_clip, noise_multiplier, mechanism, user_budget, delta, train{...}",
    )
    f.add_argument("--run-id", required=True)
    f.add_argument("--ledger", type=Path, help="the consortium's privacy ledger (SQLite)")
    f.add_argument("--ledger-key", type=Path, help="Ed25519 PEM key that signs the ledger")
    f.add_argument(
        "--verify",
        action="store_true",
        help="verify contributions (protocol.md §7): every client proves a norm bound computed "
        "from the DP parameters (aggregator.fl.verification_norm_bound)",
    )
    return ap


def _common_serve(*, straggler_grace: bool) -> argparse.ArgumentParser:
    """What ``serve`` and ``serve-fl`` share; only ``serve-fl`` takes ``--straggler-grace``."""
    p = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(p, listen="127.0.0.1:50051")
    p.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="Shamir threshold t (default: from --expected-dropout and "
        "--corrupt-fraction, secagg.params.choose_parameters)",
    )
    p.add_argument("--neighbors", type=int, default=None, help="SecAgg+ k (default: all)")
    p.add_argument("--expected-dropout", type=float, default=0.1)
    p.add_argument("--corrupt-fraction", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--stage-timeout", type=float, default=30.0)
    p.add_argument(
        "--first-round-wait",
        type=float,
        default=60.0,
        help="how long the first round waits for members to join",
    )
    if straggler_grace:
        p.add_argument(
            "--straggler-grace",
            type=float,
            default=None,
            help="once t+1 clients answered a stage, wait at most this long for others",
        )
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext, no client certificates: local demos only",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _fl_task(args: argparse.Namespace, n: int):  # type: ignore[no-untyped-def]
    import json

    import numpy as np

    from aggregator.fl import DpLoraTask, FlParams
    from dp.ledger import load_signing_key

    job = json.loads(args.job.read_text())
    params = FlParams(**job)
    initial = np.load(args.initial_adapter, allow_pickle=False)
    key = load_signing_key(args.ledger_key) if args.ledger_key else None
    return DpLoraTask(
        initial,
        args.adapter_spec.read_text(),
        n=n,
        t=args.threshold,
        params=params,
        run_id=args.run_id,
        ledger_path=args.ledger,
        ledger_key=key,
        verify=args.verify,
        degree=args.neighbors,
    )


def _suspensions(args: argparse.Namespace) -> int:
    from aggregator.store import AggregatorStore

    db = args.state / "aggregator.db"
    if not db.exists():
        raise ValueError(f"no aggregator state in {args.state}")
    store = AggregatorStore(db)
    try:
        if args.cmd == "clear-cheater":
            if not store.clear(args.id):
                print(f"member {args.id} was not suspended")
                return 1
            print(f"member {args.id} cleared: it may take part from the next round")
            return 0
        rows = store.suspended()
        for u, rnd, why in rows:
            print(f"{u}\tround {rnd}\t{why}")
        if not rows:
            print("no member is suspended")
        return 0
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        if args.cmd == "init-consortium":
            from aggregator.consortium import init_consortium

            out = init_consortium(args.members, args.out)
            print(f"consortium of {args.members} members written to {out}")
            return 0
        if args.cmd in ("cheaters", "clear-cheater"):
            return _suspensions(args)
        from aggregator.consortium import load_consortium
        from aggregator.service import ServeOptions, serve

        consortium = load_consortium(args.consortium)
        if args.threshold is None:
            from secagg.params import choose_parameters

            n = len(consortium.registry)
            try:
                choice = choose_parameters(n, args.expected_dropout, args.corrupt_fraction)
            except SecAggError as exc:
                raise SecAggError(f"{exc}; pass --threshold (and --neighbors) explicitly") from exc
            args.threshold = choice.t
            if args.neighbors is None and choice.k < n - 1:
                args.neighbors = choice.k
            print(
                f"parameters for n={n}, {args.expected_dropout:.0%} dropout, "
                f"{args.corrupt_fraction:.0%} corrupt: k={choice.k}, t={choice.t} "
                f"(failure <= {choice.failure_probability:.2g}, "
                f"privacy failure <= {choice.privacy_failure_probability:.2g})"
            )
        task = None
        dimension: int = getattr(args, "dimension", 0)
        norm_bound: int | None = getattr(args, "norm_bound", None)
        if args.cmd == "serve-fl":
            task = _fl_task(args, n=len(consortium.registry))
            dimension = task.dp_cfg.encoded_dim
            norm_bound = task.norm_bound
            if norm_bound is not None:
                print(f"contributions verified: squared L2 norm <= {norm_bound}")
        options = ServeOptions(
            d=dimension,
            t=args.threshold,
            k=args.neighbors,
            clip=getattr(args, "clip", 1.0),
            bits=getattr(args, "bits", None),
            rounds=args.rounds,
            stage_timeout=args.stage_timeout,
            first_round_wait=args.first_round_wait,
            straggler_grace=getattr(args, "straggler_grace", None),
            output=args.output,
            norm_bound=norm_bound,
        )
        stop = stop_on_signals()
        done = serve(
            options,
            consortium,
            args.state,
            args.listen,
            insecure=args.insecure_dev,
            stop_event=stop,
            task=task,
        )
        print(f"aggregator stopped; {done} rounds completed in total")
        return 0
    except (OSError, ValueError, RuntimeError, SecAggError) as exc:
        print(f"secagg-aggregator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
