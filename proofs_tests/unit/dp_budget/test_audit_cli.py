"""``secagg-audit``: reports people can read, a verify that fails loudly, broken runs flagged."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dp import accounting as A
from dp.audit import EXIT_OK, EXIT_TAMPERED, EXIT_UNREADABLE, main
from dp.ledger import (
    Budget,
    PrivacyLedger,
    generate_signing_key,
    load_signing_key,
    save_public_key,
)

REPO = Path(__file__).resolve().parents[3]
BUDGET = Budget(epsilon=10.0, delta=1e-5)
ODD_CLIENT = "<script>alert(1)</script>|x"


def event(sigma: float = 8.0) -> A.DistributedDiscreteGaussianEvent:
    return A.DistributedDiscreteGaussianEvent(sigma, 50, 1.0, 40.0, 256)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def ledger_path(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """Two honest runs (alice, bob) and one with an odd client id, 4 rounds each."""
    path = tmp_path / "consortium.db"
    with PrivacyLedger.create(path, key, accountants=("rdp",)) as led:
        for r in range(4):
            for client in ("alice", "bob", ODD_CLIENT):
                led.charge(
                    event(),
                    client_id=client,
                    run_id="run-1",
                    round_index=r,
                    budget=BUDGET,
                    timestamp=f"2025-06-0{r + 1}T12:00:00Z",
                )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def tamper_bob(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE events SET epsilon_after = epsilon_after / 10 "
            "WHERE client_id = 'bob' AND round_index = 2"
        )
    conn.close()


def test_verify_passes_on_an_honest_ledger(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "verify", "--ledger", ledger_path)
    assert code == EXIT_OK
    assert out.startswith("OK:") and "12 events" in out and "not pinned" in out


def test_verify_exits_non_zero_on_tampering_and_names_the_run(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper_bob(ledger_path)
    code, out = run(capsys, "verify", "--ledger", ledger_path)
    assert code == EXIT_TAMPERED
    assert out.startswith("TAMPERED") and "'bob'" in out and "'alice'" not in out


def test_pinning_and_head_anchoring(
    ledger_path: Path, key: Ed25519PrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub, other = tmp_path / "writer.pub", tmp_path / "other.pub"
    save_public_key(key.public_key(), pub)
    save_public_key(generate_signing_key().public_key(), other)
    code, out = run(capsys, "verify", "--ledger", ledger_path, "--public-key", pub)
    assert code == EXIT_OK and "(pinned)" in out
    code, out = run(capsys, "verify", "--ledger", ledger_path, "--public-key", other)
    assert code == EXIT_TAMPERED and "pinned" in out
    head = PrivacyLedger.open(ledger_path).head()
    assert head is not None
    code, _ = run(capsys, "verify", "--ledger", ledger_path, "--expect-head", head.hex())
    assert code == EXIT_OK
    code, _ = run(capsys, "verify", "--ledger", ledger_path, "--expect-head", "00" * 32)
    assert code == EXIT_TAMPERED


def test_json_report_has_every_round_budget_and_verdict(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "report", "--ledger", ledger_path, "--format", "json")
    assert code == EXIT_OK
    rep = json.loads(out)
    assert rep["ledger"]["verified"] and rep["ledger"]["events"] == 12
    chains = {c["client"]: c for c in rep["chains"]}
    assert set(chains) == {"alice", "bob", ODD_CLIENT}
    alice = chains["alice"]
    assert alice["verified"] and alice["unit"] == "user"
    assert [r["round"] for r in alice["rounds"]] == [0, 1, 2, 3]
    eps = [r["epsilon_after"] for r in alice["rounds"]]
    assert eps == sorted(eps) and alice["spent"] == eps[-1]
    assert alice["remaining"] == pytest.approx(10.0 - eps[-1])
    assert eps[-1] == pytest.approx(A.account([event()] * 4, 1e-5, ("rdp",)).epsilon)
    assert alice["rounds"][0]["params"]["survivors"] == 50
    assert alice["rounds"][0]["timestamp"] == "2025-06-01T12:00:00Z"
    assert alice["recomputed"]["matches"] is True
    assert "ddg" in rep["assumptions"]


def test_report_flags_the_broken_run_and_not_the_honest_one(
    ledger_path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tamper_bob(ledger_path)
    code, out = run(capsys, "report", "--ledger", ledger_path, "--format", "json")
    assert code == EXIT_TAMPERED
    rep = json.loads(out)
    assert not rep["ledger"]["verified"]
    verdict = {c["client"]: c["verified"] for c in rep["chains"]}
    assert verdict == {"alice": True, "bob": False, ODD_CLIENT: True}
    bob = next(c for c in rep["chains"] if c["client"] == "bob")
    assert any("modified" in p["message"] for p in bob["problems"])

    code, md = run(capsys, "report", "--ledger", ledger_path)
    assert code == EXIT_TAMPERED
    assert "Verification: FAIL" in md
    summary = {line.split("|")[1].strip(): line for line in md.splitlines() if "| run-1 |" in line}
    assert "BROKEN" in summary["bob"] and "BROKEN" not in summary["alice"]
    bob_rows = [
        line for line in md.split("Client `bob`")[1].splitlines() if line.startswith("| 2 |")
    ]
    assert bob_rows and bob_rows[0].endswith("**FAILS** |")

    html_out = tmp_path / "r.html"
    code, _ = run(
        capsys, "report", "--ledger", ledger_path, "--format", "html", "--output", html_out
    )
    text = html_out.read_text()
    assert code == EXIT_TAMPERED and "BROKEN" in text and "FAIL" in text


def test_markdown_and_html_are_readable_and_escaped(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, md = run(capsys, "report", "--ledger", ledger_path, "--format", "md")
    assert code == EXIT_OK
    assert "# Privacy ledger audit" in md and "Verification: PASS" in md
    assert "local_stddev=8.0" in md and "What the bounds assume" in md
    assert "NOT pinned" in md and "2025-06-04T12:00:00Z" in md
    assert "<script>alert(1)</script>\\|x" in md  # the pipe cannot break the table
    code, page = run(capsys, "report", "--ledger", ledger_path, "--format", "html")
    assert code == EXIT_OK and page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_plot_is_a_png(
    ledger_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "eps.png"
    code, _ = run(capsys, "report", "--ledger", ledger_path, "--no-recompute", "--plot", png)
    assert code == EXIT_OK
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--ledger", str(tmp_path / "nope.db")]) == EXIT_UNREADABLE
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    assert main(["report", "--ledger", str(junk)]) == EXIT_UNREADABLE
    assert main(["report"]) == EXIT_UNREADABLE
    assert main(["frobnicate"]) == EXIT_UNREADABLE
    capsys.readouterr()


def test_keygen_then_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyfile, pub = tmp_path / "w.pem", tmp_path / "w.pub"
    code, out = run(capsys, "keygen", "--out", keyfile, "--public-out", pub)
    assert code == EXIT_OK and "sha256:" in out
    path = tmp_path / "client.db"
    with PrivacyLedger.create(path, load_signing_key(keyfile), accountants=("rdp",)) as led:
        led.charge(event(), client_id="c", run_id="r", round_index=0, budget=BUDGET)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dp.audit",
            "verify",
            "--ledger",
            str(path),
            "--public-key",
            str(pub),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(pinned)" in proc.stdout


# -- issue 15: an audit that cannot recompute fails, a private key is refused, weak guarantees ---


def test_a_value_that_cannot_be_recomputed_fails_the_audit(
    ledger_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the accounting extra is missing: no PASS next to DOES NOT MATCH, exit 1."""
    import dp.audit

    def missing(*_: object, **__: object) -> object:
        raise ModuleNotFoundError("No module named 'dp_accounting'", name="dp_accounting")

    monkeypatch.setattr(dp.audit, "account", missing)
    code, out = run(capsys, "report", "--ledger", ledger_path)
    assert code == EXIT_TAMPERED
    assert "PASS" not in out and "Verification: FAIL" in out
    assert "pip install 'secagg-dplora[audit]'" in out
    code, out = run(capsys, "report", "--ledger", ledger_path, "--format", "json")
    rep = json.loads(out)
    assert code == EXIT_TAMPERED and rep["ledger"]["verified"] and not rep["ledger"]["pass"]
    code, _ = run(capsys, "report", "--ledger", ledger_path, "--no-recompute")
    assert code == EXIT_OK  # asked not to recompute: the chains alone decide


def test_a_private_key_is_refused_where_the_public_key_goes(
    ledger_path: Path, key: Ed25519PrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dp.ledger import save_signing_key

    priv = tmp_path / "writer.pem"
    save_signing_key(key, priv)
    for cmd in ("verify", "report"):
        code = main([cmd, "--ledger", str(ledger_path), "--public-key", str(priv)])
        err = capsys.readouterr().err
        assert code == EXIT_UNREADABLE and "holds a private key" in err, err


def test_weak_guarantees_are_flagged(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "weak.db"
    with PrivacyLedger.create(path, key, accountants=("rdp",)) as led:
        for r in range(3):
            led.charge(
                event(sigma=0.5),
                client_id="carol",
                run_id="run-1",
                round_index=r,
                budget=Budget(epsilon=1e6, delta=1e-5),
            )
    code, out = run(capsys, "report", "--ledger", path)
    assert code == EXIT_OK  # verified, but not worth much, and the report says so
    assert "## Weak guarantees" in out
    assert "far above 100" in out and "does not limit spending" in out
    rep = json.loads(run(capsys, "report", "--ledger", path, "--format", "json")[1])
    assert rep["chains"][0]["warnings"] and rep["chains"][0]["spent"] > 100
    _, html_out = run(capsys, "report", "--ledger", path, "--format", "html")
    assert "Weak guarantees" in html_out
    code, out = run(capsys, "report", "--ledger", tmp_path / "nope.db")
    assert code == EXIT_UNREADABLE
