"""``secagg-audit``: read a privacy ledger, verify it, and report what each client has spent.

Usage (also ``python -m dp.audit``)::

    secagg-audit report --ledger FILE [--format md|json|html] [--plot FILE.png]
                        [--public-key PEM] [--output FILE] [--no-recompute]
    secagg-audit verify --ledger FILE [--public-key PEM] [--expect-head HEX]
    secagg-audit keygen --out KEY.pem [--public-out PUB.pem]

``report`` shows, per client, run and privacy unit, epsilon after every round, the budget and
what remains, every mechanism's parameters, which accountant gave each bound, and whether that
run's chain verifies; ledger-wide problems are listed first, then guarantees too weak to mean
much (epsilon above 10 or 100, a budget that limits nothing, a large delta). Each chain's last
epsilon is also recomputed from the recorded parameters (``--no-recompute`` skips it): a value
that cannot be recomputed, or differs, fails the audit. ``verify`` prints one line per problem.
Exit status: 0 verified, 1 verification failed (the report is still written), 2 the file
cannot be read as a ledger or the arguments are wrong.

Pin the writer with ``--public-key``: without it a ledger only proves it is self-consistent.
This module is a thin shell over :mod:`dp.ledger` and :mod:`dp.accounting`.
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from dp.accounting import ASSUMPTIONS, AccountingError, account, event_to_params
from dp.ledger import (
    BudgetScope,
    Diagnosis,
    LedgerEntry,
    LedgerError,
    PrivacyLedger,
    Problem,
    generate_signing_key,
    key_fingerprint,
    load_public_key,
    save_public_key,
    save_signing_key,
)

__all__ = [
    "EXIT_OK",
    "EXIT_TAMPERED",
    "EXIT_UNREADABLE",
    "build_report",
    "main",
    "plot_report",
    "render",
]

EXIT_OK: Final = 0
EXIT_TAMPERED: Final = 1
EXIT_UNREADABLE: Final = 2
# A recomputed epsilon differing from the signed one by more than this is flagged.
_RECOMPUTE_RTOL: Final = 1e-6
# Epsilons above these say little (a likelihood ratio of e^10 ~ 22,000) or nothing at all.
WEAK_EPSILON: Final = 10.0
VOID_EPSILON: Final = 100.0
# A delta above this is a sizeable chance that the epsilon bound simply fails.
WEAK_DELTA: Final = 1e-3


@dataclass(frozen=True, slots=True)
class _ChainKey:
    client_id: str
    run_id: str
    unit: str


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"message": p.message, "seq": p.seq, "client": p.client_id, "run": p.run_id}


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def _recompute(
    entries: Sequence[LedgerEntry], last: LedgerEntry, accountants: Sequence[str]
) -> dict[str, Any]:
    if last.budget.scope is BudgetScope.CLIENT:
        events = [
            e.event
            for e in entries
            if e.client_id == last.client_id and e.unit is last.unit and e.seq <= last.seq
        ]
    else:
        events = [
            e.event
            for e in entries
            if (e.client_id, e.run_id) == (last.client_id, last.run_id)
            and e.unit is last.unit
            and e.seq <= last.seq
        ]
    names = [name for name, _ in last.bounds] or list(accountants)
    try:
        rep = account(events, last.budget.delta, names, strict=False)
    except ModuleNotFoundError as exc:
        why = f"the accountant needs module {exc.name!r}: pip install 'secagg-dplora[audit]'"
        return {"epsilon": None, "accountant": None, "matches": False, "error": why}
    except (AccountingError, ValueError) as exc:
        why = str(exc)
        if "No module named" in why or "ModuleNotFoundError" in why:
            why += " (pip install 'secagg-dplora[audit]')"
        return {"epsilon": None, "accountant": None, "matches": False, "error": why}
    stored = last.epsilon_after
    matches = math.isclose(rep.epsilon, stored, rel_tol=_RECOMPUTE_RTOL, abs_tol=1e-12)
    return {"epsilon": _num(rep.epsilon), "accountant": rep.accountant, "matches": matches}


def _warnings(spent: float, budget_eps: float, delta: float, unit: str) -> list[str]:
    """What makes a verified guarantee too weak to mean much, in plain words."""
    out = []
    if not math.isfinite(spent):
        out.append(f"{unit}-level epsilon is infinite: no privacy guarantee at all")
    elif spent > VOID_EPSILON:
        out.append(
            f"{unit}-level epsilon {spent:.3g} is far above {VOID_EPSILON:g}: the bound holds "
            "but protects nothing in practice"
        )
    elif spent > WEAK_EPSILON:
        out.append(f"{unit}-level epsilon {spent:.3g} is above {WEAK_EPSILON:g}: a weak guarantee")
    if budget_eps > VOID_EPSILON:
        out.append(
            f"the {unit}-level budget epsilon={budget_eps:.3g} does not limit spending in any "
            "meaningful way"
        )
    if delta > WEAK_DELTA:
        out.append(f"delta {delta:g} is above {WEAK_DELTA:g}: the bound may simply fail")
    return out


def build_report(
    ledger: PrivacyLedger, diagnosis: Diagnosis, *, recompute: bool = True
) -> dict[str, Any]:
    """The audit as plain data (what ``--format json`` prints)."""
    entries, unreadable = ledger.readable_entries()
    broken = diagnosis.broken_chains
    by_chain: dict[_ChainKey, list[LedgerEntry]] = {}
    for e in entries:
        by_chain.setdefault(_ChainKey(e.client_id, e.run_id, e.unit.value), []).append(e)
    chain_problems: dict[tuple[str, str], list[Problem]] = {}
    for p in (*diagnosis.problems, *unreadable):
        if (c := p.chain) is not None:
            chain_problems.setdefault(c, []).append(p)
    bad_seqs = {p.seq for p in (*diagnosis.problems, *unreadable) if p.seq is not None}
    problem_keys = {(p.seq, p.message) for p in diagnosis.problems}
    extra_problems = [p for p in unreadable if (p.seq, p.message) not in problem_keys]

    chains: list[dict[str, Any]] = []
    for key in sorted(by_chain, key=lambda k: (k.client_id, k.run_id, k.unit)):
        rows = by_chain[key]
        last = rows[-1]
        run = (key.client_id, key.run_id)
        chains.append(
            {
                "client": key.client_id,
                "run": key.run_id,
                "unit": key.unit,
                "verified": run not in broken and not chain_problems.get(run),
                "problems": [_problem_json(p) for p in chain_problems.get(run, [])],
                "budget": {
                    "epsilon": last.budget.epsilon,
                    "delta": last.budget.delta,
                    "scope": last.budget.scope.value,
                },
                "spent": _num(last.epsilon_after),
                "remaining": _num(last.remaining),
                "accountant": last.accountant,
                "bounds": {k: _num(v) for k, v in last.bounds},
                "recomputed": (
                    _recompute(entries, last, ledger.accountants) if recompute else None
                ),
                "warnings": _warnings(
                    last.epsilon_after, last.budget.epsilon, last.budget.delta, key.unit
                ),
                "rounds": [
                    {
                        "seq": e.seq,
                        "verified": e.seq not in bad_seqs,
                        "round": e.round_index,
                        "kind": e.kind,
                        "params": event_to_params(e.event),
                        "epsilon_after": _num(e.epsilon_after),
                        "remaining": _num(e.remaining),
                        "accountant": e.accountant,
                        "bounds": {k: _num(v) for k, v in e.bounds},
                        "timestamp": e.timestamp,
                    }
                    for e in rows
                ],
            }
        )
    # Runs known only from problems (every row deleted, or unreadable rows).
    seen_runs = {(c["client"], c["run"]) for c in chains}
    for run, probs in sorted(chain_problems.items()):
        if run not in seen_runs:
            chains.append(
                {
                    "client": run[0],
                    "run": run[1],
                    "unit": None,
                    "verified": False,
                    "problems": [_problem_json(p) for p in probs],
                    "budget": None,
                    "spent": None,
                    "remaining": None,
                    "accountant": None,
                    "bounds": {},
                    "recomputed": None,
                    "warnings": [],
                    "rounds": [],
                }
            )
    unrecomputed = [
        f"client {c['client']}, run {c['run']}: "
        + (c["recomputed"].get("error") or "the recomputed epsilon differs from the signed one")
        for c in chains
        if c["recomputed"] is not None and not c["recomputed"]["matches"]
    ]
    kinds = sorted({e.kind for e in entries})
    if any(getattr(e.event, "participation_rate", 1.0) < 1.0 for e in entries):
        kinds.append("participation")
    return {
        "ledger": {
            "path": str(ledger.path),
            "ledger_id": diagnosis.ledger_id,
            "writer_key": key_fingerprint(ledger.public_key),
            "pinned": diagnosis.pinned,
            "events": diagnosis.events,
            "head": diagnosis.head.hex() if diagnosis.head else None,
            "accountants": list(ledger.accountants),
            "verified": diagnosis.ok and not extra_problems,
            # PASS needs every chain verified and, unless skipped, every epsilon recomputed.
            "pass": diagnosis.ok and not extra_problems and not unrecomputed,
            "unrecomputed": unrecomputed,
            "problems": [
                _problem_json(p)
                for p in (*diagnosis.ledger_problems, *extra_problems)
                if p.chain is None
            ],
        },
        "chains": chains,
        "assumptions": {k: ASSUMPTIONS[k] for k in kinds},
    }


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _fmt(x: object, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _md_cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _render_md(rep: dict[str, Any]) -> str:
    led = rep["ledger"]
    out: list[str] = ["# Privacy ledger audit", ""]
    status = "PASS" if led["pass"] else "FAIL"
    if led["verified"] and not led["pass"]:
        status += " (a value could not be recomputed; see below)"
    pin = "pinned" if led["pinned"] else "NOT pinned (pass --public-key to check who wrote it)"
    out += [
        f"- Ledger: `{_md_cell(led['path'])}` (id `{led['ledger_id']}`)",
        f"- Writer key: `{led['writer_key']}`, {pin}",
        f"- Events: {led['events']}; head: `{led['head'] or '-'}`",
        f"- Accountants compared: {', '.join(led['accountants'])}",
        f"- **Verification: {status}**",
        "",
    ]
    if led["problems"]:
        out += ["## Ledger-wide problems", ""]
        out += [f"- {_md_cell(p['message'])}" for p in led["problems"]]
        out.append("")
    if led["unrecomputed"]:
        out += ["## Not recomputed (verification FAILS)", ""]
        out += [f"- {_md_cell(m)}" for m in led["unrecomputed"]]
        out.append("")
    weak = [(c, w) for c in rep["chains"] for w in c["warnings"]]
    if weak:
        out += ["## Weak guarantees", ""]
        out += [
            f"- client `{_md_cell(c['client'])}`, run `{_md_cell(c['run'])}`: {w}" for c, w in weak
        ]
        out.append("")
    out += [
        "## Summary",
        "",
        "| client | run | unit | chain | rounds | epsilon spent | budget | remaining | delta "
        "| accountant |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rep["chains"]:
        b = c["budget"] or {}
        out.append(
            "| "
            + " | ".join(
                _md_cell(v)
                for v in (
                    c["client"],
                    c["run"],
                    c["unit"] or "-",
                    "verified" if c["verified"] else "**BROKEN**",
                    len(c["rounds"]),
                    _fmt(c["spent"]),
                    _fmt(b.get("epsilon")),
                    _fmt(c["remaining"]),
                    _fmt(b.get("delta")),
                    c["accountant"] or "-",
                )
            )
            + " |"
        )
    out.append("")
    for c in rep["chains"]:
        out += [
            f"## Client `{_md_cell(c['client'])}`, run `{_md_cell(c['run'])}`, "
            f"{c['unit'] or 'unknown'}-level",
            "",
        ]
        if c["verified"]:
            out.append("Chain: verified.")
        else:
            out.append("Chain: **BROKEN**")
            out += [f"- {_md_cell(p['message'])}" for p in c["problems"]]
        out.append("")
        if c["budget"] is not None:
            b = c["budget"]
            bounds = ", ".join(f"{k}={_fmt(v)}" for k, v in c["bounds"].items())
            out.append(
                f"Budget epsilon={_fmt(b['epsilon'])}, delta={_fmt(b['delta'])} ({b['scope']} "
                f"scope); spent {_fmt(c['spent'])} by {c['accountant']} ({bounds}); remaining "
                f"{_fmt(c['remaining'])}."
            )
            rc = c["recomputed"]
            if rc is not None:
                verdict = "matches" if rc["matches"] else "**DOES NOT MATCH** the signed value"
                out.append(
                    f"Recomputed from the recorded parameters: {_fmt(rc['epsilon'])} "
                    f"({rc['accountant'] or rc.get('error')}), {verdict}."
                )
            out.append("")
        if c["rounds"]:
            out += [
                "| round | seq | mechanism | parameters | epsilon after | remaining | "
                "accountant | timestamp | row |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in c["rounds"]:
                params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None)
                out.append(
                    "| "
                    + " | ".join(
                        _md_cell(v)
                        for v in (
                            r["round"],
                            r["seq"],
                            r["kind"],
                            params,
                            _fmt(r["epsilon_after"]),
                            _fmt(r["remaining"]),
                            r["accountant"],
                            r["timestamp"] or "-",
                            "ok" if r["verified"] else "**FAILS**",
                        )
                    )
                    + " |"
                )
            out.append("")
    if rep["assumptions"]:
        out += ["## What the bounds assume", ""]
        out += [f"- **{k}**: {v}" for k, v in rep["assumptions"].items()]
        out.append("")
    return "\n".join(out)


_CSS: Final = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}.bad{color:#b00;"
    "font-weight:bold}.ok{color:#070}"
)


def _render_html(rep: dict[str, Any]) -> str:
    e = html.escape
    led = rep["ledger"]

    def status(ok: bool) -> str:
        return '<span class="ok">verified</span>' if ok else '<span class="bad">BROKEN</span>'

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Privacy ledger audit</title>"
        f"<style>{_CSS}</style></head><body><h1>Privacy ledger audit</h1><ul>",
        f"<li>Ledger: <code>{e(led['path'])}</code> (id <code>{e(str(led['ledger_id']))}"
        "</code>)</li>",
        f"<li>Writer key: <code>{e(led['writer_key'])}</code>, "
        f"{'pinned' if led['pinned'] else '<b>not pinned</b>'}</li>",
        f"<li>Events: {led['events']}; head: <code>{e(str(led['head']))}</code></li>",
        f"<li>Verification: {'<span class=ok>PASS</span>' if led['pass'] else '<span class=bad>FAIL</span>'}</li></ul>",  # noqa: E501
    ]
    if led["unrecomputed"]:
        parts.append("<h2>Not recomputed (verification FAILS)</h2><ul>")
        parts += [f"<li class='bad'>{e(m)}</li>" for m in led["unrecomputed"]]
        parts.append("</ul>")
    weak = [(c, w) for c in rep["chains"] for w in c["warnings"]]
    if weak:
        parts.append("<h2>Weak guarantees</h2><ul>")
        parts += [
            f"<li class='bad'>client <code>{e(c['client'])}</code>, run "
            f"<code>{e(c['run'])}</code>: {e(w)}</li>"
            for c, w in weak
        ]
        parts.append("</ul>")
    if led["problems"]:
        parts.append("<h2>Ledger-wide problems</h2><ul>")
        parts += [f"<li class='bad'>{e(p['message'])}</li>" for p in led["problems"]]
        parts.append("</ul>")
    parts.append(
        "<h2>Summary</h2><table><tr><th>client</th><th>run</th><th>unit</th><th>chain</th>"
        "<th>rounds</th><th>epsilon spent</th><th>budget</th><th>remaining</th><th>delta</th>"
        "<th>accountant</th></tr>"
    )
    for c in rep["chains"]:
        b = c["budget"] or {}
        cells = [
            e(c["client"]),
            e(c["run"]),
            e(str(c["unit"] or "-")),
            status(c["verified"]),
            str(len(c["rounds"])),
            e(_fmt(c["spent"])),
            e(_fmt(b.get("epsilon"))),
            e(_fmt(c["remaining"])),
            e(_fmt(b.get("delta"))),
            e(str(c["accountant"] or "-")),
        ]
        parts.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    parts.append("</table>")
    for c in rep["chains"]:
        parts.append(
            f"<h2>Client <code>{e(c['client'])}</code>, run <code>{e(c['run'])}</code>, "
            f"{e(str(c['unit'] or 'unknown'))}-level: {status(c['verified'])}</h2>"
        )
        if c["problems"]:
            parts.append(
                "<ul>"
                + "".join(f"<li class='bad'>{e(p['message'])}</li>" for p in c["problems"])
                + "</ul>"
            )
        if c["budget"] is not None:
            b = c["budget"]
            bounds = ", ".join(f"{k}={_fmt(v)}" for k, v in c["bounds"].items())
            parts.append(
                f"<p>Budget epsilon={e(_fmt(b['epsilon']))}, delta={e(_fmt(b['delta']))} "
                f"({e(b['scope'])} scope); spent {e(_fmt(c['spent']))} by "
                f"{e(str(c['accountant']))} ({e(bounds)}); remaining {e(_fmt(c['remaining']))}."
                "</p>"
            )
            rc = c["recomputed"]
            if rc is not None:
                verdict = "matches" if rc["matches"] else "<b class='bad'>DOES NOT MATCH</b>"
                parts.append(
                    f"<p>Recomputed from the recorded parameters: {e(_fmt(rc['epsilon']))} "
                    f"({e(str(rc['accountant'] or rc.get('error')))}), {verdict}.</p>"
                )
        if c["rounds"]:
            parts.append(
                "<table><tr><th>round</th><th>seq</th><th>mechanism</th><th>parameters</th>"
                "<th>epsilon after</th><th>remaining</th><th>accountant</th><th>timestamp</th>"
                "<th>row</th></tr>"
            )
            for r in c["rounds"]:
                params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None)
                cells = [
                    str(r["round"]),
                    str(r["seq"]),
                    e(r["kind"]),
                    e(params),
                    e(_fmt(r["epsilon_after"])),
                    e(_fmt(r["remaining"])),
                    e(r["accountant"]),
                    e(str(r["timestamp"] or "-")),
                    status(r["verified"]),
                ]
                parts.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
            parts.append("</table>")
    if rep["assumptions"]:
        parts.append("<h2>What the bounds assume</h2><ul>")
        parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in rep["assumptions"].items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render(rep: dict[str, Any], fmt: str) -> str:
    """``rep`` (from :func:`build_report`) as ``md``, ``json`` or ``html`` text."""
    if fmt == "json":
        return json.dumps(rep, indent=2, sort_keys=True)
    if fmt == "html":
        return _render_html(rep)
    if fmt == "md":
        return _render_md(rep)
    raise ValueError(f"unknown format {fmt!r}")


def plot_report(rep: dict[str, Any], path: str | Path) -> None:
    """Epsilon after each round, one line per client/run, one panel per privacy unit; budgets
    dashed, broken chains dotted with crosses; PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    units = sorted({c["unit"] for c in rep["chains"] if c["rounds"]}) or ["user"]
    fig = Figure(figsize=(9, 3.2 + 2.8 * len(units)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(units), 1, squeeze=False, sharex=True)[:, 0]
    for ax, unit in zip(axes, units, strict=True):
        for c in rep["chains"]:
            rounds = [r for r in c["rounds"] if isinstance(r["epsilon_after"], float)]
            if c["unit"] != unit or not rounds:
                continue
            label = f"{c['client']} / {c['run']}" + ("" if c["verified"] else " [BROKEN]")
            (line,) = ax.plot(
                [r["round"] for r in rounds],
                [r["epsilon_after"] for r in rounds],
                marker="o" if c["verified"] else "x",
                markersize=3,
                linestyle="-" if c["verified"] else ":",
                label=label,
            )
            if c["budget"] is not None:
                ax.axhline(c["budget"]["epsilon"], color=line.get_color(), ls="--", lw=0.8)
        ax.set_ylabel(f"{unit}-level epsilon")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("round (dashed: budget)")
    verdict = "verified" if rep["ledger"]["pass"] else "FAILS VERIFICATION"
    fig.suptitle(f"Privacy ledger {rep['ledger']['ledger_id']}: {verdict}")
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=110)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secagg-audit",
        description="Verify and report a DP privacy ledger. Exit status: 0 verified (and every "
        "epsilon recomputed), 1 verification failed or a value could not be recomputed, 2 the "
        "file is not a readable ledger or the arguments are wrong.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rp = sub.add_parser("report", help="per client and run: epsilon over rounds, budget, chain")
    rp.add_argument("--ledger", required=True, type=Path, help="the ledger (SQLite file)")
    rp.add_argument(
        "--format",
        choices=("md", "json", "html"),
        default="md",
        help="markdown, JSON or HTML (default: %(default)s)",
    )
    rp.add_argument("--plot", type=Path, help="also write a PNG of epsilon vs round")
    rp.add_argument("--public-key", type=Path, help="pin the writer's public key (PEM)")
    rp.add_argument("--output", type=Path, help="write the report here instead of stdout")
    rp.add_argument("--no-recompute", action="store_true", help="skip recomputing epsilons")
    vp = sub.add_parser("verify", help="exit non-zero if the ledger fails verification")
    vp.add_argument("--ledger", required=True, type=Path, help="the ledger (SQLite file)")
    vp.add_argument("--public-key", type=Path, help="pin the writer's public key (PEM)")
    vp.add_argument("--expect-head", help="the head hash published earlier (hex)")
    kp = sub.add_parser("keygen", help="write a new Ed25519 writer key (PEM, mode 0600)")
    kp.add_argument("--out", required=True, type=Path, help="where the private key goes (0600)")
    kp.add_argument("--public-out", type=Path, help="also write the public key here (PEM)")
    return p


def _pinned_key(path: Path) -> Any:
    """The writer's public key; a private key is refused (an auditor never needs one)."""
    if b"PRIVATE KEY" in path.read_bytes():
        raise LedgerError(
            f"{path} holds a private key: --public-key takes the writer's public key "
            "(secagg-audit keygen --public-out writes one)"
        )
    return load_public_key(path)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "keygen":
        key = generate_signing_key()
        save_signing_key(key, args.out)
        if args.public_out:
            save_public_key(key.public_key(), args.public_out)
        print(f"wrote {args.out} ({key_fingerprint(key.public_key())})", file=out)
        return EXIT_OK
    pinned = _pinned_key(args.public_key) if args.public_key else None
    with PrivacyLedger.open(args.ledger, verify=False) as ledger, ledger.snapshot():
        diagnosis = ledger.diagnose(expected_public_key=pinned)
        if args.command == "verify":
            problems = list(diagnosis.problems)
            if args.expect_head is not None:
                head = diagnosis.head.hex() if diagnosis.head else ""
                if head != args.expect_head.strip().lower():
                    problems.append(
                        Problem(f"head is {head or 'empty'}, expected {args.expect_head}")
                    )
            if problems:
                print(f"TAMPERED: {ledger.path}: {len(problems)} problem(s)", file=out)
                for p in problems:
                    where = f" [client {p.client_id!r}, run {p.run_id!r}]" if p.chain else ""
                    print(f"  - {p.message}{where}", file=out)
                return EXIT_TAMPERED
            print(
                f"OK: ledger {diagnosis.ledger_id}, {diagnosis.events} events, head "
                f"{diagnosis.head.hex() if diagnosis.head else '-'}, writer "
                f"{key_fingerprint(ledger.public_key)} "
                f"({'pinned' if diagnosis.pinned else 'not pinned'})",
                file=out,
            )
            return EXIT_OK
        rep = build_report(ledger, diagnosis, recompute=not args.no_recompute)
    text = render(rep, args.format)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text, file=out)
    if args.plot:
        plot_report(rep, args.plot)
    return EXIT_OK if rep["ledger"]["pass"] else EXIT_TAMPERED


def _version() -> str:
    try:
        return importlib.metadata.version("secagg-dplora")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secagg-audit``; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_UNREADABLE
    try:
        return _run(args, sys.stdout)
    except KeyboardInterrupt:
        print("secagg-audit: stopped by SIGINT", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        print(
            f"secagg-audit: error: module {exc.name!r} is missing: pip install "
            "'secagg-dplora[audit]'",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    except (LedgerError, OSError, ValueError) as exc:
        print(f"secagg-audit: error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE


if __name__ == "__main__":
    sys.exit(main())
