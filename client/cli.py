"""``secagg-client``: a member's commands: enrol (make keys here, request a certificate),
install (the administrator's certificate and public bundle), rotate (new keys), and join or
train (take part in rounds)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protos.ops import EXIT_INCOMPLETE, EXIT_OK, add_common_arguments, common_parent, run_cli

__all__ = ["main"]

_DESCRIPTION = (
    "A consortium member's commands. Enrolment: enrol (makes this member's TLS key and "
    "Ed25519 identity in its own folder, and a request for the administrator), then install "
    "(the certificate the administrator returns, and the published bundle). Then join "
    "(statistics) or train (federated DP-LoRA). rotate makes new keys (the old ones work "
    "until the new certificate is installed). Exit status: 0 every round asked for "
    "completed, 1 some did not, 2 bad input or material, 130/143 stopped by SIGINT/SIGTERM."
)


def _member_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--member",
        type=Path,
        default=None,
        help="this member's own folder (from `enrol`); only this member ever reads it",
    )
    p.add_argument(
        "--consortium",
        type=Path,
        default=None,
        help="local tests: a bundle from `secagg-aggregator init-consortium` (with --id)",
    )
    p.add_argument(
        "--id", type=int, default=None, help="this member's id (checked against its folder)"
    )


def _round_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--aggregator",
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="where the aggregator listens (default: %(default)s)",
    )
    p.add_argument(
        "--server-name",
        default=None,
        metavar="NAME",
        help="the name to check the aggregator's certificate against when it differs from "
        "HOST (e.g. dialling an IP the certificate does not list; default: HOST)",
    )
    _member_args(p)
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="how many rounds must complete before this member stops (default: %(default)s)",
    )
    p.add_argument(
        "--max-failed-rounds",
        type=int,
        default=3,
        help="give up after this many rounds failed (aborted, lost to an aggregator restart, "
        "declined) (default: %(default)s)",
    )
    p.add_argument(
        "--reconnect-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for an unreachable (e.g. restarting) aggregator before giving "
        "up (default: %(default)s)",
    )
    p.add_argument(
        "--insecure-dev", action="store_true", help="plaintext, no certificates: local demos only"
    )
    p.add_argument(
        "--require-verification",
        action="store_true",
        help="refuse rounds that do not verify contributions with norm proofs "
        "(docs/protocol.md §7)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:ROUND:STAGE[:SECONDS]",
        help="testing only: 'kill' (SIGKILL itself) or 'delay' before sending STAGE in ROUND",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="secagg-client", description=_DESCRIPTION)
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    common = common_parent()
    e = sub.add_parser(
        "enrol",
        parents=[common],
        help="make this member's keys and a certificate request for the administrator",
    )
    e.add_argument("--member", type=Path, required=True, help="this member's folder, to create")
    e.add_argument("--id", type=int, required=True, help="the member id the administrator assigned")
    i = sub.add_parser(
        "install",
        parents=[common],
        help="install the administrator's public bundle (and this member's certificate)",
        description="Copy ca.pem, registry.pub and registry.json from the published bundle "
        "(the CA and the administrator's key are pinned the first time) and, with --cert, the "
        "certificate the administrator issued (after enrol or rotate). The registry must be "
        "signed by the administrator, not older than the installed one, and list this "
        "member's own keys.",
    )
    i.add_argument("--member", type=Path, required=True, help="this member's folder")
    i.add_argument(
        "--public", type=Path, required=True, help="the administrator's published folder"
    )
    i.add_argument(
        "--cert", type=Path, default=None, help="the certificate the administrator issued"
    )
    r = sub.add_parser(
        "rotate", parents=[common], help="make new keys and a request for the administrator"
    )
    r.add_argument("--member", type=Path, required=True, help="this member's folder")
    a = sub.add_parser(
        "init-adapter",
        parents=[common],
        help="build a DP-LoRA job's initial adapter and its spec from the model the job names",
        description="Read a serve-fl job file naming its model (tiny, smollm2 or a model "
        "folder; optionally tokenizer) and train.lora (mode, r, alpha, targets, public_seed); "
        "write initial-adapter.npy and adapter-spec.json into --out, for secagg-aggregator "
        "serve-fl --initial-adapter/--adapter-spec. Every member builds the same adapter.",
    )
    a.add_argument("--job", type=Path, required=True, help="the serve-fl job file (JSON)")
    a.add_argument("--out", type=Path, required=True, help="the folder to write into")
    a.add_argument(
        "--cache", type=Path, default=None, help="where SmolLM2 is cached (default: none)"
    )
    j = sub.add_parser("join", parents=[common], help="take part in statistics rounds")
    _round_args(j)
    j.add_argument(
        "--protocol",
        choices=["pairwise", "oneshot"],
        default="pairwise",
        help="the aggregator's protocol: pairwise (SecAgg+, four messages) or oneshot (one "
        "message, then this command exits) (default: %(default)s)",
    )
    j.add_argument("--input", type=Path, required=True, help="a 1-D float .npy file, length d")
    t = sub.add_parser("train", parents=[common], help="take part in federated DP-LoRA rounds")
    _round_args(t)
    t.add_argument(
        "--protocol",
        choices=["pairwise", "oneshot"],
        default="pairwise",
        help="the aggregator's protocol: pairwise (SecAgg+, four messages a round) or oneshot "
        "(one message a round: train, upload, next round) (default: %(default)s)",
    )
    t.add_argument(
        "--model",
        default="tiny",
        metavar="tiny|smollm2|PATH",
        help="the base model: a shipped one, or a local folder any causal LM transformers can "
        "load from (config.json + weights + tokenizer) (default: %(default)s)",
    )
    t.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="a folder holding the tokenizer, when it is not beside the model (default: the "
        "model's)",
    )
    t.add_argument(
        "--data",
        type=Path,
        default=None,
        help="this member's own text: a .jsonl file (one string or {TEXT_FIELD: ...} object "
        "a line), a plain-text file, a folder of them, or a `datasets` save_to_disk folder "
        "(default: the built-in docstring corpus, with --slice/--n-slices)",
    )
    t.add_argument(
        "--text-field",
        default="text",
        help="the JSON Lines key or dataset column holding the text (default: %(default)s)",
    )
    t.add_argument(
        "--cache", type=Path, default=None, help="where SmolLM2 is cached (default: none)"
    )
    t.add_argument(
        "--slice", type=int, default=None, help="which slice of the text (needed without --data)"
    )
    t.add_argument(
        "--n-slices", type=int, default=None, help="how many slices there are (with --slice)"
    )
    t.add_argument(
        "--max-blocks",
        type=int,
        default=None,
        help="train on at most this many text blocks (default: all)",
    )
    t.add_argument("--ledger", type=Path, required=True, help="this member's privacy ledger")
    t.add_argument(
        "--ledger-key", type=Path, required=True, help="Ed25519 PEM key that signs the ledger"
    )
    t.add_argument("--dump-updates", type=Path, default=None, help=argparse.SUPPRESS)
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


def _contributor(args: argparse.Namespace) -> Any:
    if args.cmd == "train":
        import torch

        from client.fl import FlClientOptions, FlContributor

        torch.set_num_threads(1)
        return FlContributor(
            FlClientOptions(
                client_id=args.id,
                model=args.model,
                slice_index=args.slice,
                n_slices=args.n_slices,
                data=args.data,
                tokenizer=args.tokenizer,
                text_field=args.text_field,
                ledger=args.ledger,
                ledger_key=args.ledger_key,
                cache_dir=args.cache,
                max_blocks=args.max_blocks,
                dump_dir=args.dump_updates,
            )
        )
    try:
        vector = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.input} is not a .npy file: {exc}") from None
    if vector.ndim != 1 or vector.dtype.kind != "f":
        raise ValueError(f"{args.input} must hold a 1-D float vector")

    def provide(cfg):  # type: ignore[no-untyped-def]
        if vector.shape[0] != cfg.d:
            raise ValueError(f"the round wants d={cfg.d}, the input has {vector.shape[0]}")
        return vector

    return provide


def _oneshot_rounds(args: argparse.Namespace) -> int:
    from client.oneshot_agent import OneShotAgentOptions, OneShotClientAgent

    if args.insecure_dev or args.require_verification:
        raise ValueError(
            "--protocol oneshot runs over mutual TLS only and without norm proofs "
            "(threat_models/oneshot.md, R4)"
        )
    agent = OneShotClientAgent(
        OneShotAgentOptions(
            aggregator=args.aggregator,
            member=args.member,
            consortium=args.consortium,
            client_id=args.id,
            rounds=args.rounds,
            server_name=args.server_name,
        ),
        _contributor(args),
        before_upload=_oneshot_faults(args.fault),
    )
    try:
        reports = agent.run()
    finally:
        agent.close()
    done = sum(r.completed for r in reports)
    print(f"client {agent.client_id}: {done}/{args.rounds} one-shot uploads sent")
    return EXIT_OK if done >= args.rounds else EXIT_INCOMPLETE


def _oneshot_faults(specs: list[str]):  # type: ignore[no-untyped-def]
    """``kill:ROUND:UPLOAD``: SIGKILL itself just before uploading in ROUND (tests only)."""
    import os
    import signal

    rounds = set()
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] != "kill" or parts[2] != "UPLOAD":
            raise ValueError(f"bad --fault {spec!r} for oneshot: want kill:ROUND:UPLOAD")
        rounds.add(int(parts[1]))
    if not rounds:
        return None

    def hook(rnd: int) -> None:
        if rnd in rounds:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _rounds(args: argparse.Namespace) -> int:
    from client.agent import AgentOptions, ClientAgent

    if getattr(args, "protocol", "pairwise") == "oneshot":
        return _oneshot_rounds(args)
    from protos.consortium import member_folder

    folder = member_folder(args.member, args.consortium, args.id)
    if args.id is None:
        args.id = folder.member_id
    agent = ClientAgent(
        AgentOptions(
            aggregator=args.aggregator,
            member=folder.path,
            client_id=folder.member_id,
            rounds=args.rounds,
            insecure=args.insecure_dev,
            server_name=args.server_name,
            max_failed_rounds=args.max_failed_rounds,
            reconnect_timeout=args.reconnect_timeout,
            require_norm_bound=args.require_verification,
        ),
        _contributor(args),
        before_stage=_faults(args.fault),
    )
    try:
        reports = agent.run()
    finally:
        agent.close()
    done = sum(r.completed for r in reports)
    print(f"client {args.id}: {done}/{args.rounds} rounds completed")
    return EXIT_OK if done >= args.rounds else EXIT_INCOMPLETE


def init_adapter(job_file: Path, out: Path, cache: Path | None = None) -> tuple[Path, Path]:
    """``secagg-client init-adapter``: the initial adapter and spec of a job naming a model."""
    import json

    import torch

    from client.training import initial_adapter

    torch.set_num_threads(1)
    job = json.loads(job_file.read_text())
    if not isinstance(job, dict) or not isinstance(job.get("model"), str):
        raise ValueError(f'{job_file} names no model ("model": tiny, smollm2 or a folder)')
    lora = job.get("train", {}).get("lora") if isinstance(job.get("train"), dict) else None
    if not isinstance(lora, dict):
        raise ValueError(f"{job_file} has no train.lora object (mode, r, alpha, targets, ...)")
    tok = job.get("tokenizer")
    vec, spec = initial_adapter(
        job["model"], lora, cache_dir=cache, tokenizer=None if tok is None else Path(tok)
    )
    out.mkdir(parents=True, exist_ok=True)
    npy, spec_path = out / "initial-adapter.npy", out / "adapter-spec.json"
    np.save(npy, vec, allow_pickle=False)
    spec_path.write_text(spec.to_json())
    return npy, spec_path


def _run(args: argparse.Namespace) -> int:
    from protos.consortium import MemberFolder

    if args.cmd == "enrol":
        csr = MemberFolder(args.member).enrol(args.id)
        print(
            f"member {args.id}: keys made in {args.member} (they never leave it); send {csr} "
            "to the administrator"
        )
        return EXIT_OK
    if args.cmd == "init-adapter":
        out = init_adapter(args.job, args.out, args.cache)
        print(f"wrote {out[0]} and {out[1]}")
        return EXIT_OK
    if args.cmd == "rotate":
        csr = MemberFolder(args.member).rotate()
        print(
            f"new keys made in {csr.parent}; send {csr} to the administrator, then install "
            "the certificate it returns (the current keys stay in use until then)"
        )
        return EXIT_OK
    if args.cmd == "install":
        reg = MemberFolder(args.member).install(args.public, args.cert)
        print(
            f"installed registry v{reg.version} of {reg.consortium!r} ({len(reg.members)} "
            f"members) in {args.member}"
        )
        return EXIT_OK
    return _rounds(args)


def main(argv: Sequence[str] | None = None) -> int:
    from dp import PrivacyError

    return run_cli("secagg-client", _parser, _run, argv, expected=(PrivacyError,))


if __name__ == "__main__":
    sys.exit(main())
