"""``secagg-aggregator``: the aggregator operator's commands (request a certificate, install the
administrator's material, run the service), and a whole local consortium for tests."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggregator._cli import add_serve_arguments, stop_on_signals
from protos.ops import EXIT_INCOMPLETE, EXIT_OK, add_common_arguments, common_parent, run_cli

__all__ = ["main"]

log = logging.getLogger("secagg.aggregator")

_DESCRIPTION = (
    "The aggregator operator's commands. Deployment: request-cert (makes the TLS key here and "
    "a request naming this host), then install (the administrator's certificate and public "
    "bundle), then serve. init-consortium makes every role's folder on one machine, for local "
    "tests only. Exit status: 0 every round asked for completed, 1 some did not, 2 bad input "
    "or material, 130/143 stopped by SIGINT/SIGTERM."
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="secagg-aggregator", description=_DESCRIPTION)
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    common = common_parent()
    init = sub.add_parser(
        "init-consortium",
        parents=[common],
        help="local tests only: an administrator, an aggregator and members in one folder",
        description="Run the whole enrolment on this machine: OUT/admin (the administrator), "
        "OUT/aggregator (pass OUT to serve --consortium) and OUT/members/member-<id> (pass "
        "OUT and --id to secagg-client). Never hand such a folder to anyone: it holds every "
        "role's keys.",
    )
    init.add_argument(
        "--members", type=int, required=True, help="how many members (ids 1..N), 2 to 100000"
    )
    init.add_argument("--out", type=Path, required=True, help="the folder to create")
    _names(init, dns_default=["localhost"], ip_default=["127.0.0.1"])
    req = sub.add_parser(
        "request-cert",
        parents=[common],
        help="make this aggregator's TLS key and a certificate request naming its host",
    )
    req.add_argument(
        "--dir", type=Path, required=True, help="the aggregator's folder (the key stays there)"
    )
    _names(req, dns_default=None, ip_default=None)
    inst = sub.add_parser(
        "install",
        parents=[common],
        help="install the administrator's public bundle (and this aggregator's certificate)",
        description="Copy ca.pem, registry.pub and registry.json from the published bundle "
        "into the aggregator's folder (the CA and the administrator's key are pinned the first "
        "time), checking the registry's signature and that it is not older than the installed "
        "one. Run it again whenever the administrator publishes a new registry: a running "
        "service adopts it before its next round.",
    )
    inst.add_argument("--dir", type=Path, required=True, help="the aggregator's folder")
    inst.add_argument(
        "--public", type=Path, required=True, help="the administrator's published folder"
    )
    inst.add_argument(
        "--cert", type=Path, default=None, help="the certificate the administrator issued"
    )
    s = sub.add_parser(
        "serve",
        parents=[common, _common_serve(straggler_grace=False)],
        help="run rounds of secure aggregation",
    )
    s.add_argument(
        "--dimension",
        type=int,
        required=True,
        help="the length d of every member's vector (at most 2^28)",
    )
    _oneshot_args(s)
    s.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="each coordinate is clipped to [-clip, clip] before encoding (default: %(default)s)",
    )
    s.add_argument(
        "--bits",
        type=int,
        default=None,
        help="ring size b in bits, 2^b modulus (default: the smallest that cannot wrap)",
    )
    s.add_argument(
        "--norm-bound",
        type=int,
        default=None,
        help="verify contributions (docs/protocol.md §7): every member proves that the squared "
        "L2 norm of its encoded vector is at most this (default: off)",
    )
    for name, what in (
        ("cheaters", "list the members suspended for a false contribution"),
        ("clear-cheater", "lift a member's suspension (an operator's decision)"),
    ):
        c = sub.add_parser(name, parents=[common], help=what, description=what)
        c.add_argument("--state", type=Path, required=True, help="the aggregator's state folder")
        if name == "clear-cheater":
            c.add_argument("--id", type=int, required=True, help="the member id to clear")
    f = sub.add_parser(
        "serve-fl",
        parents=[common, _common_serve(straggler_grace=True)],
        help="run rounds of federated DP-LoRA (secure sum of distributed-DP adapter updates)",
    )
    _oneshot_args(f)
    f.add_argument(
        "--initial-adapter",
        type=Path,
        default=None,
        help="the starting adapter (float32 .npy; default: built from the job's model)",
    )
    f.add_argument(
        "--adapter-spec",
        type=Path,
        default=None,
        help="the adapter's spec (JSON; default: built from the job's model)",
    )
    f.add_argument(
        "--job",
        type=Path,
        required=True,
        help="JSON: l2_clip, noise_multiplier, mechanism, user_budget, delta, train{steps, "
        "batch_size, lr, clip, noise_multiplier, record_budget, block_size, lora{mode, r, "
        "alpha, targets, public_seed}}; optionally model (tiny, smollm2 or a model folder) and "
        "tokenizer, from which the initial adapter and its spec are built when "
        "--initial-adapter/--adapter-spec are not given (that needs the train extra here)",
    )
    f.add_argument("--run-id", required=True, help="names this training run in the ledgers")
    f.add_argument(
        "--ledger", type=Path, help="the consortium's privacy ledger (SQLite; default: none)"
    )
    f.add_argument(
        "--ledger-key", type=Path, help="Ed25519 PEM key that signs the ledger (default: none)"
    )
    f.add_argument(
        "--verify",
        action="store_true",
        help="verify contributions (docs/protocol.md §7): every member proves a norm bound "
        "computed from the DP parameters (aggregator.fl.verification_norm_bound)",
    )
    return ap


def _oneshot_args(p: argparse.ArgumentParser) -> None:
    """The protocol switch and the one-shot committee's options (``serve`` and ``serve-fl``)."""
    p.add_argument(
        "--protocol",
        choices=["pairwise", "oneshot"],
        default="pairwise",
        help="pairwise: SecAgg+ masking (four messages per member); oneshot: one message per "
        "member, RLWE masks and a decryptor committee (secagg/SPEC.md O1..O9). The HE variant "
        "is `secagg-he-aggregator` (default: %(default)s)",
    )
    p.add_argument(
        "--committee",
        default=None,
        metavar="IDS",
        help="oneshot: comma-separated member ids that may sit on the decryptor committee, each "
        "running `secagg-committee run` (default: every registered member)",
    )
    p.add_argument(
        "--committee-size",
        type=int,
        default=None,
        help="oneshot: members on each round's committee (default: every candidate)",
    )
    p.add_argument(
        "--committee-threshold",
        type=int,
        default=None,
        help="oneshot: members that must release, t_c > c/2 (default: floor(2c/3) + 1)",
    )
    p.add_argument(
        "--committee-timeout",
        type=float,
        default=60.0,
        help="oneshot: seconds to wait for each committee step (default: %(default)s)",
    )
    p.add_argument(
        "--min-cohort",
        type=int,
        default=3,
        help="oneshot: fewest uploads a released sum may hold (default: %(default)s)",
    )


def _names(p: argparse.ArgumentParser, *, dns_default: Any, ip_default: Any) -> None:
    p.add_argument(
        "--dns",
        action="append",
        default=None,
        metavar="NAME",
        help="a DNS name clients dial this aggregator by; repeat for several"
        + (f" (default: {', '.join(dns_default)})" if dns_default else ""),
    )
    p.add_argument(
        "--ip",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="an IP address clients dial this aggregator at; repeat for several"
        + (f" (default: {', '.join(ip_default)})" if ip_default else ""),
    )
    p.set_defaults(dns_default=dns_default or [], ip_default=ip_default or [])


def _common_serve(*, straggler_grace: bool) -> argparse.ArgumentParser:
    """What ``serve`` and ``serve-fl`` share; only ``serve-fl`` takes ``--straggler-grace``."""
    p = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(p, listen="127.0.0.1:50051")
    p.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="Shamir threshold t (default: chosen for the registry's corruption assumption and "
        "--expected-dropout, and accepted by every member's default policy; a threshold "
        "members would refuse is refused at start-up)",
    )
    p.add_argument(
        "--neighbors",
        type=int,
        default=None,
        help="SecAgg+ degree k, even (default: chosen with t; the complete graph if none "
        "smaller meets the targets)",
    )
    p.add_argument(
        "--expected-dropout",
        type=float,
        default=0.1,
        help="the fraction of members expected to drop out of a round, for choosing k and t "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="rounds to run, then stop (default: %(default)s)"
    )
    p.add_argument(
        "--stage-timeout",
        type=float,
        default=30.0,
        help="seconds each stage waits for members before closing (default: %(default)s)",
    )
    p.add_argument(
        "--first-round-wait",
        type=float,
        default=60.0,
        help="seconds the first round waits for members to join (default: %(default)s)",
    )
    if straggler_grace:
        p.add_argument(
            "--straggler-grace",
            type=float,
            default=None,
            help="once t+1 members answered a stage (one-shot: once --min-cohort clients "
            "uploaded), wait at most this many more seconds for the others (default: until the "
            "stage timeout)",
        )
    p.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at /metrics and a health probe at /healthz over plain "
        "HTTP on this address (needs the 'metrics' extra; default: off)",
    )
    p.add_argument(
        "--transport",
        choices=("aio", "threads"),
        default="aio",
        help="aio: one asyncio event loop serves every member (no thread per waiting member); "
        "threads: the former server, one worker thread per long-poll (default: %(default)s)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where the running sum and the unmasking run: local (this process) or ray "
        "(accumulation actors and unmasking tasks on a Ray cluster; needs the 'ray' extra) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="with --engine ray: the Ray cluster to join (default: start a local one)",
    )
    p.add_argument(
        "--ray-shards",
        type=int,
        default=2,
        help="with --engine ray: accumulation actors, each summing one client id range "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--ray-chunk",
        type=int,
        default=1 << 18,
        help="with --engine ray: coordinates per unmasking task (default: %(default)s)",
    )
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext, no client certificates: local demos only",
    )
    return p


def _fl_task(  # type: ignore[no-untyped-def]
    args: argparse.Namespace, n: int, t: int | None = None, degree: int | None = None
):
    import json

    import numpy as np

    from aggregator.fl import DpLoraTask, FlParams
    from dp.ledger import load_signing_key

    job = json.loads(args.job.read_text())
    if not isinstance(job, dict):
        raise ValueError(f"{args.job} must hold a JSON object")
    model = job.pop("model", None)  # for `secagg-client init-adapter`, below
    job.pop("tokenizer", None)
    params = FlParams(**job)
    if (args.initial_adapter is None) != (args.adapter_spec is None):
        raise ValueError("give both --initial-adapter and --adapter-spec, or neither")
    if args.initial_adapter is not None:
        initial = np.load(args.initial_adapter, allow_pickle=False)
        spec_json = args.adapter_spec.read_text()
    elif model is None:
        raise ValueError("the job names no model: give --initial-adapter and --adapter-spec")
    else:
        # Built by the member side's own command in a child process: the aggregator package
        # never imports the training code (docs/architecture.md), and needs torch only here.
        import subprocess
        import sys
        import tempfile

        with tempfile.TemporaryDirectory(prefix="secagg-init-adapter.") as tmp:
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "client.cli",
                    "init-adapter",
                    "--job",
                    str(args.job),
                    "--out",
                    tmp,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ValueError(
                    f"cannot build the initial adapter of {model!r}: {done.stderr.strip()[-500:]}"
                )
            initial = np.load(Path(tmp) / "initial-adapter.npy", allow_pickle=False)
            spec_json = (Path(tmp) / "adapter-spec.json").read_text()
    key = load_signing_key(args.ledger_key) if args.ledger_key else None
    return DpLoraTask(
        initial,
        spec_json,
        n=n,
        t=args.threshold if t is None else t,
        params=params,
        run_id=args.run_id,
        ledger_path=args.ledger,
        ledger_key=key,
        verify=args.verify,
        degree=args.neighbors if degree is None else degree,
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


def _serve(args: argparse.Namespace) -> int:
    from aggregator.metrics import Metrics
    from aggregator.parameters import resolve
    from aggregator.service import ServeOptions, serve
    from protos.consortium import load_consortium

    consortium = load_consortium(args.consortium)
    automatic = args.threshold is None and args.neighbors is None
    task = None
    dimension: int = getattr(args, "dimension", 0)
    norm_bound: int | None = getattr(args, "norm_bound", None)

    def choose(d: int, nb: int | None) -> None:
        params = resolve(
            consortium.signed,
            d=d,
            threshold=args.threshold,
            neighbors=args.neighbors,
            expected_dropout=args.expected_dropout,
            clip=getattr(args, "clip", 1.0),
            bits=getattr(args, "bits", None),
            norm_bound=nb,
        )
        print(params.note)
        if params.warning:
            print(f"warning: {params.warning}")
        args.threshold, args.neighbors = params.t, params.k

    if args.cmd == "serve-fl":
        # The task's DP calibration needs t first; its encoded length is checked after.
        choose(1, None)
        task = _fl_task(args, n=len(consortium.registry))
        dimension = task.dp_cfg.encoded_dim
        norm_bound = task.norm_bound
        resolve(
            consortium.signed,
            d=dimension,
            threshold=args.threshold,
            neighbors=args.neighbors,
            expected_dropout=args.expected_dropout,
            norm_bound=norm_bound,
            bits=task.dp_cfg.bits,
        )
        if norm_bound is not None:
            print(f"contributions verified: squared L2 norm <= {norm_bound}")
    else:
        choose(dimension, norm_bound)
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
        auto_dropout=args.expected_dropout if automatic and task is None else None,
        max_members=len(consortium.registry) if task is not None else None,
        engine=args.engine,
        ray_address=args.ray_address,
        ray_shards=args.ray_shards,
        ray_chunk=args.ray_chunk,
    )
    metrics = Metrics() if args.metrics_listen else None
    stop = stop_on_signals()
    if args.transport == "aio":
        from aggregator.aio_service import serve_aio as serve
    done = serve(
        options,
        consortium,
        args.state,
        args.listen,
        insecure=args.insecure_dev,
        stop_event=stop,
        task=task,
        metrics=metrics,
        metrics_listen=args.metrics_listen,
    )
    print(f"aggregator stopped; {done} of {args.rounds} rounds completed")
    if stop.is_set():
        return 128 + stop.signum
    return EXIT_OK if done >= args.rounds else EXIT_INCOMPLETE


def _serve_oneshot(args: argparse.Namespace) -> int:
    from aggregator.lifecycle import StateLock
    from aggregator.oneshot_service import OneShotServeOptions, serve_oneshot
    from protos.consortium import load_consortium

    if getattr(args, "norm_bound", None) is not None or getattr(args, "verify", False):
        raise ValueError(
            "contribution verification (--norm-bound, --verify) is not available with "
            "--protocol oneshot: the norm proof is not yet bound to the one-shot upload "
            "(threat_models/oneshot.md, R4)"
        )
    if args.insecure_dev:
        raise ValueError("--protocol oneshot runs over mutual TLS only")
    committee = tuple(int(x) for x in args.committee.split(",")) if args.committee else ()
    consortium = load_consortium(args.consortium)
    task = None
    if args.cmd == "serve-fl":
        # The DP noise is calibrated to the smallest set the committee releases, with the
        # default client policy's corrupt bound for a cohort of that size (SPEC.md O9).
        task = _fl_task(args, n=len(consortium.registry), t=args.min_cohort, degree=args.min_cohort)
        print(
            f"federated DP-LoRA over one-shot rounds: {task.dp_cfg.encoded_dim} coordinates, "
            f"{task.dp_cfg.bits}-bit DP ring, noise for sets of {args.min_cohort} with "
            f"{task.dp_cfg.max_corrupt} corrupt"
        )
    options = OneShotServeOptions(
        d=task.dp_cfg.encoded_dim if task is not None else args.dimension,
        committee=committee,
        committee_size=args.committee_size,
        threshold=args.committee_threshold,
        clip=getattr(args, "clip", 1.0),
        bits=getattr(args, "bits", None),
        rounds=args.rounds,
        upload_timeout=args.stage_timeout,
        first_round_wait=args.first_round_wait,
        committee_timeout=args.committee_timeout,
        min_cohort=args.min_cohort,
        output=args.output,
        straggler_grace=getattr(args, "straggler_grace", None),
    )
    stop = stop_on_signals()
    with StateLock(args.state):
        done = serve_oneshot(
            options, consortium, args.state, args.listen, stop_event=stop, task=task
        )
    print(f"one-shot aggregator stopped; {done} of {args.rounds} rounds completed")
    if stop.is_set():
        return 128 + stop.signum
    return EXIT_OK if done >= args.rounds else EXIT_INCOMPLETE


def _run(args: argparse.Namespace) -> int:
    if args.cmd in ("serve", "serve-fl") and args.protocol == "oneshot":
        return _serve_oneshot(args)
    if args.cmd == "init-consortium":
        from aggregator.consortium import init_consortium

        out = init_consortium(
            args.members,
            args.out,
            dns=args.dns or args.dns_default,
            ips=args.ip or args.ip_default,
        )
        print(
            f"consortium of {args.members} members written to {out} (local tests only: it "
            "holds every role's keys)"
        )
        return EXIT_OK
    if args.cmd == "request-cert":
        from protos.consortium import AggregatorFolder

        csr = AggregatorFolder(args.dir).request(args.dns or [], args.ip or [])
        print(f"request {csr} written; send it to the administrator (the key stays in {args.dir})")
        return EXIT_OK
    if args.cmd == "install":
        from protos.consortium import AggregatorFolder

        reg = AggregatorFolder(args.dir).install(args.public, args.cert)
        print(
            f"installed registry v{reg.version} of {reg.consortium!r} ({len(reg.members)} "
            f"members) in {args.dir}"
        )
        return EXIT_OK
    if args.cmd in ("cheaters", "clear-cheater"):
        return _suspensions(args)
    return _serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("secagg-aggregator", _parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
