"""`make demo`: a real federated DP-LoRA fine-tuning over secure aggregation, on this machine.

A local consortium is enrolled (``init-consortium``: an administrator, the aggregator and each
member in a folder of its own, each member's keys made in its folder); the aggregator and 6 client
agents run as separate processes on 127.0.0.1 with mutual TLS. Each client trains FFA-LoRA with
DP-SGD on its own non-IID slice of text found on every machine (Python's own docstrings), adds
its distributed-DP noise share, commits to its encoded update and proves in zero knowledge that
its norm is within the bound the DP parameters imply (contribution verification, docs/protocol.md
§7; ``--no-verify`` turns it off), masks and uploads; one client is killed in the middle of round
1 and the round still completes. At the end: a report (markdown and PNG plots), the privacy
spent per client from the ledgers, and the aggregated adapter as a peft folder.

    python -m client.demo            # SmolLM2-135M (offline), 3 rounds, a few minutes
    python -m client.demo --quick    # a tiny model, about 1.5 minutes (what the e2e test runs)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MARKER = ".secagg-demo"
PROMPT = "Return the number of"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _fresh(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists():
            raise SystemExit(f"{workdir} exists and is not a demo folder; choose --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by python -m client.demo\n")


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "model": "tiny",
            "lora": {"mode": "ffa", "r": 8, "alpha": 16, "targets": None, "public_seed": 7},
            "train": {
                "steps": 10,
                "batch_size": 16,
                "lr": 2.0,
                "clip": 1.0,
                "noise_multiplier": 0.6,
                "record_budget": 20.0,
                "block_size": 64,
            },
            "max_blocks": 256,
            "held_out_blocks": 64,
            "l2_clip": 1.0,
            "user_noise": 0.05,
            "stage_timeout": 60.0,
            "grace": 8.0,
        }
    return {
        "model": "smollm2",
        "lora": {"mode": "ffa", "r": 8, "alpha": 16, "targets": None, "public_seed": 7},
        "train": {
            "steps": 3,
            "batch_size": 8,
            "lr": 1.0,
            "clip": 1.0,
            "noise_multiplier": 0.6,
            "record_budget": 20.0,
            "block_size": 64,
        },
        "max_blocks": 128,
        "held_out_blocks": 24,
        "l2_clip": 10.0,
        "user_noise": 0.005,
        "stage_timeout": 240.0,
        "grace": 15.0,
    }


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wd: Path = args.workdir.resolve()
        self.s = _settings(args.quick)
        if args.model is not None:  # your own model folder (or a shipped name)
            self.s["model"] = (
                str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
            )
        if args.targets:
            self.s["lora"] = {**self.s["lora"], "targets": args.targets.split(",")}
        if args.data is not None:
            self.s["data"] = str(Path(args.data).resolve())
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = self.wd / "logs"
        self._bars: dict[int, Any] = {}
        self._printed: dict[int, int] = {}

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.logs.mkdir(exist_ok=True)
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=self.wd,
        )

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    # -- the run --------------------------------------------------------------------------

    def run_oneshot(self) -> int:
        """``--protocol oneshot-stats``: statistics rounds of the one-shot variant (secagg/SPEC.md
        O1..O9) with real processes: members upload once and exit, a committee of three (of four
        candidates, chosen per round among those online) releases the sum; one client and one
        committee member are killed in the first round."""
        a = self.args
        n, d = max(a.clients, 5), 20_000
        _fresh(self.wd)
        print(f"== one-shot secure aggregation demo: {n} clients, committee of 3, d={d} ==")
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "aggregator.cli", "init-consortium", "--members", str(n + 4),
             "--out", str(self.wd / "consortium")],
            check=True, env=_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        committee = [n + 1, n + 2, n + 3, n + 4]  # three sit per round, from those alive
        port = _free_port()
        addr = f"127.0.0.1:{port}"
        out = self.wd / "aggregates"
        self._spawn("aggregator", [
            "-m", "aggregator.cli", "serve", "--protocol", "oneshot", "--listen", addr,
            "--consortium", "consortium", "--state", "aggregator-state", "--output", str(out),
            "--dimension", str(d), "--committee", ",".join(map(str, committee)),
            "--committee-size", "3", "--committee-threshold", "2", "--rounds", str(a.rounds),
            "--stage-timeout", "15", "--first-round-wait", "30", "--committee-timeout", "10",
        ])  # fmt: skip
        for m in committee:
            argv = ["-m", "client.committee_agent", "run", "--aggregator", addr]
            self._spawn(f"committee-{m}", [*argv, "--consortium", "consortium", "--id", str(m)])
        rng = np.random.default_rng(0)
        inputs = {}
        for i in range(1, n + 1):
            inputs[i] = rng.normal(0, 0.3, d)
            np.save(self.wd / f"x{i}.npy", inputs[i], allow_pickle=False)
            fault = ["--fault", "kill:0:UPLOAD"] if a.kill and i == n else []
            self._spawn(f"client-{i}", ["-m", "client.cli", "join", "--protocol", "oneshot",
                                        "--aggregator", addr, "--consortium", "consortium",
                                        "--id", str(i), "--input", f"x{i}.npy",
                                        "--rounds", str(a.rounds), *fault])  # fmt: skip
        deadline = time.monotonic() + a.timeout
        killed_member = False
        while self.procs["aggregator"].poll() is None and time.monotonic() < deadline:
            if a.kill and not killed_member and self.procs["client-1"].poll() is not None:
                self.procs[f"committee-{committee[-1]}"].kill()
                killed_member = True
                print(f"client 1 made its last upload and left; member {committee[-1]} killed")
            time.sleep(0.5)
        ok = True
        for js in sorted(out.glob("round-*.json")):
            summary = json.loads(js.read_text())
            agg = np.load(js.with_suffix(".npy"), allow_pickle=False)
            want = sum(np.clip(inputs[i], -1, 1) for i in summary["included"])
            err = float(np.abs(agg - want).max())
            ok &= err <= summary["error_bound"]
            print(
                f"round {summary['round']}: {len(summary['included'])} of {n} clients included, "
                f"decrypted by members {summary['decryptors']}; max error {err:.2e} "
                f"(bound {summary['error_bound']:.2e}); upload {summary['upload_vs_float32']:.2f}x "
                "float32"
            )
        rounds = len(list(out.glob("round-*.json")))
        print(f"{rounds} of {a.rounds} rounds published; logs in {self.logs}")
        return 0 if ok and rounds == a.rounds else 1

    def run(self) -> int:
        if getattr(self.args, "protocol", "pairwise") == "oneshot-stats":
            return self.run_oneshot()
        import torch

        from client import training as tr
        from dp.ledger import generate_signing_key, save_signing_key

        torch.set_num_threads(1)
        a, s = self.args, self.s
        n, rounds = a.clients, a.rounds
        t = max(2, (2 * (n - 1)) // 3 + 1)
        # One-shot rounds (SPEC.md O9): four more members are the decryptor committee's
        # candidates (three sit per round); the DP noise is calibrated for sets of t clients,
        # the fewest the committee releases. No norm proofs there yet (R4).
        oneshot = getattr(a, "protocol", "pairwise") == "oneshot"
        committee = list(range(n + 1, n + 5)) if oneshot else []
        verify = a.verify and not oneshot
        _fresh(self.wd)
        say = print
        say(
            f"== federated DP-LoRA demo: {n} clients, {rounds} rounds, model {s['model']}"
            + (", one-shot aggregation ==" if oneshot else " ==")
        )
        say(f"workdir {self.wd}")
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "aggregator.cli",
                "init-consortium",
                "--members",
                str(n + len(committee)),
                "--out",
                str(self.wd / "consortium"),
            ],
            check=True,
            env=_env(),
            stdout=subprocess.DEVNULL,
        )
        say(f"consortium: CA, aggregator certificate, {n} member certificates and identities")
        keys = self.wd / "keys"
        keys.mkdir()
        for name in ["aggregator", *[f"client-{i}" for i in range(1, n + 1)]]:
            save_signing_key(generate_signing_key(), keys / f"{name}.ledger.pem")

        cache = a.cache.resolve() if a.cache else None
        t0 = time.monotonic()
        base, tok = tr.load_base_model(s["model"], cache)
        net = tr.attach_lora(base, **s["lora"])
        vec0, spec = tr.adapter_to_vector(net)
        (self.wd / "initial-adapter.npy").write_bytes(b"")
        np.save(self.wd / "initial-adapter.npy", vec0, allow_pickle=False)
        (self.wd / "adapter-spec.json").write_text(spec.to_json())
        held = tr.tokenize_blocks(
            tr.held_out_corpus(), tok, s["train"]["block_size"], max_blocks=s["held_out_blocks"]
        )
        loss0 = tr.evaluate_loss(net, held)
        sample0 = tr.generate(net, tok, PROMPT, max_new_tokens=24)
        say(
            f"base model loaded ({time.monotonic() - t0:.1f} s): adapter of {spec.size:,} "
            f"parameters (FFA-LoRA r={s['lora']['r']}), held-out loss {loss0:.3f}"
        )

        job = {
            "l2_clip": s["l2_clip"],
            "noise_multiplier": s["user_noise"],
            "mechanism": "gaussian",
            "user_budget": 1e6,
            "delta": 1e-5,
            "train": {**s["train"], "lora": s["lora"]},
        }
        (self.wd / "job.json").write_text(json.dumps(job, indent=1))
        port = _free_port()
        out = self.wd / "aggregates"
        self._spawn(
            "aggregator",
            [
                "-m",
                "aggregator.cli",
                "serve-fl",
                "--listen",
                f"127.0.0.1:{port}",
                "--consortium",
                "consortium",
                "--state",
                "aggregator-state",
                "--output",
                str(out),
                "--threshold",
                str(t),
                "--rounds",
                str(rounds),
                "--stage-timeout",
                str(s["stage_timeout"]),
                "--first-round-wait",
                "600",
                "--straggler-grace",
                str(s["grace"]),
                "--initial-adapter",
                "initial-adapter.npy",
                "--adapter-spec",
                "adapter-spec.json",
                "--job",
                "job.json",
                "--run-id",
                "demo",
                "--ledger",
                "aggregator-ledger.db",
                "--ledger-key",
                str(keys / "aggregator.ledger.pem"),
                *(["--verify"] if verify else []),
                *(
                    [
                        "--protocol", "oneshot",
                        "--committee", ",".join(map(str, committee)),
                        "--committee-size", "3",
                        "--committee-threshold", "2",
                        "--min-cohort", str(t),
                        "--committee-timeout", "30",
                    ]
                    if oneshot
                    else []
                ),
            ],
        )  # fmt: skip
        for m in committee:
            self._spawn(
                f"committee-{m}",
                ["-m", "client.committee_agent", "run", "--aggregator", f"127.0.0.1:{port}",
                 "--consortium", "consortium", "--id", str(m)],
            )  # fmt: skip
        victim = n if a.kill else None
        for i in range(1, n + 1):
            argv = [
                "-m",
                "client.cli",
                "train",
                "--aggregator",
                f"127.0.0.1:{port}",
                "--consortium",
                "consortium",
                "--id",
                str(i),
                "--model",
                s["model"],
                "--slice",
                str(i - 1),
                "--n-slices",
                str(n),
                "--max-blocks",
                str(s["max_blocks"]),
                "--ledger",
                f"clients/{i}/ledger.db",
                "--ledger-key",
                str(keys / f"client-{i}.ledger.pem"),
                "--rounds",
                str(rounds),
            ]
            if cache:
                argv += ["--cache", str(cache)]
            if "data" in s:  # each client trains on its own slice of your dataset
                argv += ["--data", s["data"]]
            if oneshot:
                argv += ["--protocol", "oneshot"]
            if verify:
                argv += ["--require-verification"]
            if victim == i:
                argv += ["--fault", "kill:1:UPLOAD" if oneshot else "kill:1:MASKED_INPUT"]
            if a.dump_updates:
                argv += ["--dump-updates", f"clients/{i}/updates"]
            (self.wd / "clients" / str(i)).mkdir(parents=True, exist_ok=True)
            self._spawn(f"client-{i}", argv)
        say(
            f"aggregator on 127.0.0.1:{port} (mutual TLS), {n} clients started, threshold t={t}"
            + (f"; client {victim} will be killed in round 1" if victim else "")
        )
        say(
            "contribution verification: "
            + (
                "on (each update committed and norm-proven; the aggregate checked against the "
                "commitments)"
                if verify
                else "off (not yet bound to one-shot uploads)"
                if oneshot
                else "off (--no-verify)"
            )
        )
        if oneshot:
            say(
                f"one-shot aggregation: each client uploads once a round and may leave; a "
                f"committee of 3 of members {committee} (2 to decrypt) releases only the sum"
            )

        history = [{"round": "base", "loss": loss0, "ppl": math.exp(loss0)}]
        eps_rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + a.timeout
        r = 0
        while r < rounds and time.monotonic() < deadline:
            js = out / f"round-{r}.json"
            self._progress(r, n)
            if not js.exists():
                if self.procs["aggregator"].poll() is not None:
                    break
                time.sleep(0.5)
                continue
            summary = json.loads(js.read_text())
            self._progress(r, n)  # the stages that closed since the last look
            self._close_bars()
            adapter = np.load(summary["adapter_npy"], allow_pickle=False)
            tr.vector_to_adapter(net, adapter, spec)
            loss = tr.evaluate_loss(net, held)
            eps = self._epsilons(n, r)
            eps_rows += [{"round": r, **e} for e in eps]
            rec_eps = [e["record_epsilon"] for e in eps if e["record_epsilon"] is not None]
            up = self._upload_bytes(summary)
            summary["dropped"] = [u for u in summary["dropped"] if u <= n]  # not the committee
            say(
                f"round {r}: {len(summary['included'])}/{n} survivors "
                f"(dropped {summary['dropped'] or 'none'}), ~{up / 1e3:,.0f} kB up per client, "
                f"{summary['timings']['round_s']:.1f} s, held-out loss {loss:.3f} "
                f"(ppl {math.exp(loss):.1f}), record-level epsilon so far "
                f"{max(rec_eps) if rec_eps else float('nan'):.2f}"
            )
            history.append(
                {
                    "round": r,
                    "loss": loss,
                    "ppl": math.exp(loss),
                    "included": summary["included"],
                    "dropped": summary["dropped"],
                    "seconds": summary["timings"]["round_s"],
                    "noise_stddev": summary["noise_stddev"],
                    "mean_update_l2": summary["mean_update_l2"],
                    "norm_bound": summary.get("norm_bound"),
                }
            )
            r += 1
        self._close_bars()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.procs["aggregator"].wait(timeout=60)
        self.stop_all()
        if r < rounds:
            say(f"the demo stopped after {r} of {rounds} rounds; logs in {self.logs}")
            return 1
        adapter_dir = tr.save_adapter(net, self.wd / "adapter")
        sample1 = tr.generate(net, tok, PROMPT, max_new_tokens=24)
        loads = _check_peft_load(s["model"], cache, adapter_dir, net, held)
        self._report(history, eps_rows, sample0, sample1, adapter_dir, loads, n, t)
        say(
            f"held-out loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}; "
            f"perplexity {history[0]['ppl']:.1f} -> {history[-1]['ppl']:.1f}"
        )
        say(f"base model:      {PROMPT!r} -> {sample0!r}")
        say(f"after {rounds} rounds: {PROMPT!r} -> {sample1!r}")
        say(f"adapter saved to {adapter_dir} (loads with PeftModel.from_pretrained: {loads})")
        say(f"report: {self.wd / 'report.md'}")
        return 0

    def _round_events(self, r: int, n: int) -> tuple[int, list[str]]:
        """From the processes' logs: how many clients finished round ``r``'s local training,
        and the protocol stages the aggregator closed (``"STAGE k/n"``)."""
        trained = 0
        for i in range(1, n + 1):
            log = self.logs / f"client-{i}.log"
            if log.exists() and f"round {r} trained" in log.read_text(errors="replace"):
                trained += 1
        agg = self.logs / "aggregator.log"
        closed = []
        if agg.exists():
            for line in agg.read_text(errors="replace").splitlines():
                m = re.search(rf"round {r} (\w+)\s+closed: (\d+/\d+) answered", line)
                if m:
                    closed.append(f"{m.group(1)} {m.group(2)}")
        return trained, closed

    def _progress(self, r: int, n: int) -> None:
        """On a terminal, two progress bars per round (clients that finished local DP training,
        protocol stages the aggregator closed); in a log, one line per event instead."""
        if not sys.stdout.isatty():
            trained, closed = self._round_events(r, n)
            seen = self._printed.setdefault(r, 0)
            if closed and seen == 0:  # the first stage closes once local training is over
                print(f"round {r}: {trained}/{n} clients finished local DP training", flush=True)
            for stage in closed[seen:]:
                print(f"round {r}: stage {stage} answered", flush=True)
            self._printed[r] = len(closed)
            return
        from tqdm import tqdm

        bars = self._bars
        if r not in bars:
            for old in bars.values():
                for b in old:
                    b.close()
            bars.clear()
            bars[r] = (
                tqdm(total=n, desc=f"round {r} local DP training", unit="client", leave=False),
                tqdm(total=5, desc=f"round {r} secure aggregation", unit="stage", leave=False),
            )
        train_bar, stage_bar = bars[r]
        trained, closed = self._round_events(r, n)
        train_bar.update(trained - train_bar.n)
        stage_bar.update(len(closed) - stage_bar.n)
        if closed:
            stage_bar.set_postfix_str(closed[-1])

    def _close_bars(self) -> None:
        for pair in self._bars.values():
            for b in pair:
                b.close()
        self._bars.clear()

    def _corpus(self) -> str:
        return f"`{self.s['data']}`" if "data" in self.s else "Python's docstrings"

    def _upload_bytes(self, summary: dict[str, Any]) -> float:
        if summary.get("mode") == "oneshot":
            return float(summary["upload_bytes_median"])
        return float(summary.get("upload_dim", summary["d"]) * summary["ring_bits"] / 8)

    def _epsilons(self, n: int, upto: int) -> list[dict[str, Any]]:
        """Each client's epsilon after round ``upto``, from its own ledger (clients may already
        have charged the next round: only events of rounds <= upto count)."""
        from dp.accounting import PrivacyUnit, account
        from dp.ledger import PrivacyLedger

        rows = []
        for i in range(1, n + 1):
            path = self.wd / "clients" / str(i) / "ledger.db"
            eps: dict[PrivacyUnit, float | None] = {
                PrivacyUnit.RECORD: None,
                PrivacyUnit.USER: None,
            }
            ok = False
            if path.exists():
                led = PrivacyLedger.open(path, verify=True)
                ok = True
                try:
                    entries = [
                        e
                        for e in led.entries(client_id=str(i), run_id="demo")
                        if e.round_index <= upto
                    ]
                finally:
                    led.close()
                for unit in eps:
                    evs = [e.event for e in entries if e.event.unit is unit]
                    if evs:
                        eps[unit] = account(evs, 1e-5).epsilon
            rows.append(
                {
                    "client": i,
                    "record_epsilon": eps[PrivacyUnit.RECORD],
                    "user_epsilon": eps[PrivacyUnit.USER],
                    "ledger_verifies": ok,
                }
            )
        return rows

    def _report(
        self,
        history: list[dict[str, Any]],
        eps_rows: list[dict[str, Any]],
        sample0: str,
        sample1: str,
        adapter_dir: Path,
        loads: bool,
        n: int,
        t: int,
    ) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(range(len(history)), [h["loss"] for h in history], marker="o")
        ax.set_xticks(range(len(history)), ["base"] + [str(h["round"]) for h in history[1:]])
        ax.set_xlabel("round")
        ax.set_ylabel("held-out loss")
        ax.set_title("held-out loss per round")
        fig.tight_layout()
        fig.savefig(self.wd / "loss.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        markers = "osD^v<>pPX*h"
        styles = ["-", "--", "-.", ":"]
        for i in range(1, n + 1):
            pts = [
                (e["round"], e["record_epsilon"])
                for e in eps_rows
                if e["client"] == i and e["record_epsilon"] is not None
            ]
            if pts:
                # Clients that spent the same epsilon would hide each other: dodge each one a
                # little along x, with its own marker and dash pattern.
                dodge = (i - (n + 1) / 2) * 0.04
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    [x + dodge for x in xs],
                    ys,
                    marker=markers[(i - 1) % len(markers)],
                    linestyle=styles[(i - 1) % len(styles)],
                    markersize=5,
                    alpha=0.85,
                    label=f"client {i}",
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round (clients dodged slightly apart)")
        ax.set_ylabel("record-level epsilon (delta=1e-5)")
        ax.set_title("epsilon spent per client")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(self.wd / "epsilon.png", dpi=110)
        plt.close(fig)
        budget = self.s["train"]["record_budget"]
        final = {e["client"]: e for e in eps_rows if e["round"] == len(history) - 2}
        lines = [
            "# Federated DP-LoRA demo report",
            "",
            f"{n} clients, threshold t={t}, {len(history) - 1} rounds, model "
            f"`{self.s['model']}`, FFA-LoRA r={self.s['lora']['r']}; each client trains with "
            f"DP-SGD on its own slice of {self._corpus()} and adds a distributed discrete "
            f"Gaussian share (user-level noise multiplier {self.s['user_noise']}).",
            "",
            "Secure aggregation: "
            + (
                "one-shot (secagg/SPEC.md O1..O9): one upload per client and round; a committee "
                "of 3 of 4 members, 2 needed to decrypt, released only each round's sum."
                if getattr(self.args, "protocol", "pairwise") == "oneshot"
                else "pairwise masking (SecAgg+, docs/protocol.md)."
            ),
            "",
            "Contribution verification (docs/protocol.md §7): "
            + (
                f"on: every update was committed and proven to have squared L2 norm <= "
                f"{history[1].get('norm_bound')} (encoded units), and each aggregate was checked "
                "against the sum of the commitments before it was published."
                if len(history) > 1 and history[1].get("norm_bound") is not None
                else "off."
            ),
            "",
            "| round | survivors | dropped | held-out loss | perplexity | seconds |",
            "|---|---|---|---|---|---|",
            f"| base | - | - | {history[0]['loss']:.4f} | {history[0]['ppl']:.2f} | - |",
        ]
        for h in history[1:]:
            lines.append(
                f"| {h['round']} | {len(h['included'])} | {h['dropped'] or '-'} | "
                f"{h['loss']:.4f} | {h['ppl']:.2f} | {h['seconds']:.1f} |"
            )
        lines += [
            "",
            "![held-out loss](loss.png) ![epsilon](epsilon.png)",
            "",
            "## Privacy spent (from each client's own ledger)",
            "",
            "| client | record-level epsilon | budget | remaining | user-level epsilon | "
            "ledger verifies |",
            "|---|---|---|---|---|---|",
        ]
        for i in range(1, n + 1):
            e = final.get(i, {})
            rec = e.get("record_epsilon")
            usr = e.get("user_epsilon")
            lines.append(
                f"| {i} | {rec if rec is None else f'{rec:.3f}'} | {budget} | "
                f"{'-' if rec is None else f'{budget - rec:.3f}'} | "
                f"{usr if usr is None else f'{usr:.3g}'} | {e.get('ledger_verifies')} |"
            )
        lines += [
            "",
            "## Samples (greedy, same prompt)",
            "",
            f"- base model: `{PROMPT!r}` -> `{sample0!r}`",
            f"- fine-tuned: `{PROMPT!r}` -> `{sample1!r}`",
            "",
            *_sample_note(sample0, sample1, history),
            f"Aggregated adapter: `{adapter_dir}` (loads with `PeftModel.from_pretrained`: "
            f"{loads}).",
            "",
            "Settings: " + json.dumps(self.s),
        ]
        (self.wd / "report.md").write_text("\n".join(lines) + "\n")
        (self.wd / "report.json").write_text(
            json.dumps(
                {
                    "history": history,
                    "epsilon": eps_rows,
                    "sample_base": sample0,
                    "sample_tuned": sample1,
                    "adapter": str(adapter_dir),
                    "adapter_loads": loads,
                    "record_budget": budget,
                },
                indent=1,
            )
        )


def _sample_note(sample0: str, sample1: str, history: list[dict[str, Any]]) -> list[str]:
    """Say so when greedy decoding gives the same text before and after, and why."""
    if sample0 != sample1:
        return ["The fine-tuned model continues the prompt differently from the base model.", ""]
    drop = history[0]["loss"] - history[-1]["loss"]
    moved = [float(h["mean_update_l2"]) for h in history[1:] if h.get("mean_update_l2") is not None]
    return [
        "The samples are the same: greedy decoding takes the most likely token at each step, "
        f"and {len(history) - 1} rounds of a few noised DP-SGD steps moved the adapter "
        f"(mean update L2 {max(moved) if moved else float('nan'):.3g} per round) too little to "
        "change which token is most likely on this prompt. The change shows in the held-out "
        f"loss ({history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}, "
        f"{'down' if drop > 0 else 'not down'} by {abs(drop):.4f}); more rounds, more local "
        "steps or less noise change the samples too.",
        "",
    ]


def _check_peft_load(
    model: str, cache: Path | None, adapter_dir: Path, net: Any, held: Any
) -> bool:
    """Reload the saved folder on a fresh base with PeftModel.from_pretrained; same loss?"""
    from peft import PeftModel

    from client import training as tr

    base, _ = tr.load_base_model(model, cache)
    loaded = PeftModel.from_pretrained(base, str(adapter_dir))
    return bool(abs(tr.evaluate_loss(loaded, held) - tr.evaluate_loss(net, held)) < 1e-4)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="secagg-demo",
        description="Federated DP-LoRA fine-tuning over secure aggregation on this machine: an "
        "aggregator and client processes over mutual TLS, a report at the end.",
    )
    ap.add_argument("--quick", action="store_true", help="tiny model (about 1.5 minutes)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo-out"),
        help="where everything goes (emptied first; default: %(default)s)",
    )
    ap.add_argument(
        "--clients", type=int, default=6, help="client processes (default: %(default)s)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "secagg-dplora",
        help="where SmolLM2 is cached (default: %(default)s)",
    )
    ap.add_argument(
        "--no-kill", dest="kill", action="store_false", help="do not kill a client in round 1"
    )
    ap.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not verify contributions (no commitments or norm proofs; faster)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds before the demo gives up (default: %(default)s)",
    )
    ap.add_argument(
        "--protocol",
        choices=["pairwise", "oneshot", "oneshot-stats"],
        default="pairwise",
        help="pairwise: the federated DP-LoRA demo over SecAgg+; oneshot: the same over "
        "one-shot aggregation (one upload per client and round, a decryptor committee; no "
        "norm proofs); oneshot-stats: plain statistics rounds of the one-shot variant "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--model",
        default=None,
        help="the base model: tiny, smollm2 or a local model folder (default: smollm2, or tiny "
        "with --quick)",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="your own text (JSON Lines, plain text, or a datasets folder), split into one "
        "slice per client (default: Python's docstrings)",
    )
    ap.add_argument(
        "--targets",
        default=None,
        metavar="NAME,NAME",
        help="LoRA target modules (needed for model types without defaults, e.g. q_proj,v_proj)",
    )
    ap.add_argument("--dump-updates", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    demo = Demo(args)
    try:
        return demo.run()
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())
