"""The privacy ledger: check-then-commit, idempotent retries, tamper evidence, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dp import accounting as A
from dp._errors import InvalidParameter, PrivacyError
from dp.ledger import (
    Budget,
    BudgetExceeded,
    BudgetScope,
    LedgerConflict,
    LedgerEntry,
    LedgerError,
    LedgerTampered,
    PrivacyLedger,
    generate_signing_key,
    key_fingerprint,
    load_public_key,
    load_signing_key,
    save_public_key,
    save_signing_key,
    verify_ledger,
)

REPO = Path(__file__).resolve().parents[3]
# User-level DDG events are accounted by our own RDP code alone: fast, no torch import.
FAST = ("rdp",)
ALICE = ("alice", "run-1")
BOB = ("bob", "run-1")


def ddg(rounds: int = 1, sigma: float = 8.0) -> A.DistributedDiscreteGaussianEvent:
    return A.DistributedDiscreteGaussianEvent(sigma, 50, 1.0, 40.0, 256, rounds=rounds)


BUDGET = Budget(epsilon=10.0, delta=1e-5)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def ledger(tmp_path: Path, key: Ed25519PrivateKey) -> Iterator[PrivacyLedger]:
    with PrivacyLedger.create(tmp_path / "ledger.db", key, accountants=FAST) as led:
        yield led


def charge(
    led: PrivacyLedger,
    who: tuple[str, str],
    rnd: int,
    *,
    event: A.DpEvent | None = None,
    budget: Budget = BUDGET,
    timestamp: object = None,
) -> LedgerEntry:
    return led.charge(
        event if event is not None else ddg(),
        client_id=who[0],
        run_id=who[1],
        round_index=rnd,
        budget=budget,
        timestamp=timestamp,  # type: ignore[arg-type]
    )


# -- charging --------------------------------------------------------------------------------


def test_charges_compose_and_verify(ledger: PrivacyLedger) -> None:
    entries = [charge(ledger, ALICE, r, timestamp=f"2025-01-0{r + 1}") for r in range(3)]
    assert [e.seq for e in entries] == [1, 2, 3]
    eps = [e.epsilon_after for e in entries]
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(A.account([ddg(3)], 1e-5, FAST).epsilon)
    assert entries[2].remaining == pytest.approx(10.0 - eps[2])
    assert [e.timestamp for e in ledger.entries()] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    report = ledger.verify()
    assert report.events == 3 and report.head == entries[-1].row_hash == ledger.head()
    spent = ledger.spent(client_id="alice", run_id="run-1", unit=A.PrivacyUnit.USER, delta=1e-5)
    assert spent.epsilon == pytest.approx(eps[2])


def test_over_budget_is_refused_before_anything_is_written(ledger: PrivacyLedger) -> None:
    budget = Budget(epsilon=A.account([ddg(2)], 1e-5, FAST).epsilon * 1.001, delta=1e-5)
    charge(ledger, ALICE, 0, budget=budget)
    charge(ledger, ALICE, 1, budget=budget)
    head = ledger.head()
    with pytest.raises(BudgetExceeded) as info:
        charge(ledger, ALICE, 2, budget=budget)
    msg = str(info.value)
    assert "'alice'" in msg and "'run-1'" in msg and "budget" in msg and "refused" in msg
    assert info.value.epsilon_would_be > budget.epsilon
    assert isinstance(info.value, PrivacyError)
    assert ledger.head() == head and len(ledger.entries()) == 2
    ledger.verify()
    # Bob's budget is his own.
    charge(ledger, BOB, 0, budget=budget)


def test_budget_scope_client_spans_runs(ledger: PrivacyLedger) -> None:
    per_client = Budget(
        epsilon=A.account([ddg(2)], 1e-5, FAST).epsilon * 1.001,
        delta=1e-5,
        scope=BudgetScope.CLIENT,
    )
    charge(ledger, ("alice", "run-1"), 0, budget=per_client)
    charge(ledger, ("alice", "run-2"), 0, budget=per_client)  # same data, new run: composes
    with pytest.raises(BudgetExceeded):
        charge(ledger, ("alice", "run-3"), 0, budget=per_client)
    # A per-run budget would have allowed it.
    charge(ledger, ("alice", "run-3"), 0, budget=Budget(per_client.epsilon, 1e-5))


def test_record_and_user_level_are_separate_units(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with PrivacyLedger.create(tmp_path / "l.db", key, accountants=("pld", "rdp")) as led:
        rec = charge(led, ALICE, 0, event=A.DpSgdEvent(0.05, 2.0, 20))
        usr = charge(led, ALICE, 0, event=ddg())
        assert rec.unit is A.PrivacyUnit.RECORD and usr.unit is A.PrivacyUnit.USER
        assert rec.accountant == "pld"  # the tightest of the two it compared
        assert usr.epsilon_after == pytest.approx(A.account([ddg()], 1e-5, FAST).epsilon)
        led.verify()


def test_retrying_a_committed_event_does_not_double_count(ledger: PrivacyLedger) -> None:
    first = charge(ledger, ALICE, 0)
    again = charge(ledger, ALICE, 0)
    assert again.replayed and again.seq == first.seq and again.epsilon_after == first.epsilon_after
    assert len(ledger.entries()) == 1
    with pytest.raises(LedgerConflict):
        charge(ledger, ALICE, 0, event=ddg(sigma=9.0))


def test_argument_checks(ledger: PrivacyLedger) -> None:
    with pytest.raises(InvalidParameter):
        charge(ledger, ("", "r"), 0)
    with pytest.raises(InvalidParameter):
        charge(ledger, ALICE, -1)
    with pytest.raises(InvalidParameter):
        charge(ledger, ALICE, 0, timestamp=1700000000.0)
    for bad in [(0.0, 1e-5), (float("inf"), 1e-5), (1.0, 0.0), (1.0, 1.0)]:
        with pytest.raises(InvalidParameter):
            Budget(*bad)


def test_keys_and_read_only_access(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    PrivacyLedger.create(path, key, accountants=FAST).close()
    with pytest.raises(LedgerError, match="already exists"):
        PrivacyLedger.create(path, key)
    with pytest.raises(LedgerError, match="writer key"):
        PrivacyLedger.open(path, generate_signing_key())
    with PrivacyLedger.open(path) as ro, pytest.raises(LedgerError, match="read-only"):
        charge(ro, ALICE, 0)
    with pytest.raises(LedgerError, match="no such ledger"):
        PrivacyLedger.open(tmp_path / "missing.db")

    kf, pf = tmp_path / "writer.pem", tmp_path / "writer.pub"
    save_signing_key(key, kf)
    assert (kf.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        save_signing_key(key, kf)
    save_public_key(key.public_key(), pf)
    hexf = tmp_path / "writer.hex"
    hexf.write_text(PrivacyLedger.open(path, verify=False).public_key.hex())
    fp = key_fingerprint(key.public_key())
    for f in (kf, pf, hexf):
        assert key_fingerprint(load_public_key(f)) == fp
    assert key_fingerprint(load_signing_key(kf).public_key()) == fp
    with PrivacyLedger.open_or_create(path, load_signing_key(kf)) as led:
        charge(led, ALICE, 0)
    assert verify_ledger(path, expected_public_key=load_public_key(pf)).pinned


# -- tamper evidence -------------------------------------------------------------------------


def interleaved(path: Path, key: Ed25519PrivateKey) -> None:
    """seq 1..6 = alice r0, bob r0, alice r1, bob r1, alice r2, bob r2."""
    with PrivacyLedger.create(path, key, accountants=FAST) as led:
        for r in range(3):
            charge(led, ALICE, r)
            charge(led, BOB, r)


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for s in statements:
            conn.execute(s)
    conn.close()


TAMPERS: dict[str, tuple[Callable[[Path], None], set[tuple[str, str]]]] = {
    "edit params": (
        lambda p: sql(p, "UPDATE events SET params=replace(params,'8.0','80.0') WHERE seq=3"),
        {ALICE},
    ),
    "edit epsilon": (lambda p: sql(p, "UPDATE events SET epsilon_after=0.01 WHERE seq=4"), {BOB}),
    "edit budget": (lambda p: sql(p, "UPDATE events SET budget_epsilon=99 WHERE seq=3"), {ALICE}),
    "edit timestamp": (lambda p: sql(p, "UPDATE events SET timestamp='x' WHERE seq=1"), {ALICE}),
    "move row to another client": (
        lambda p: sql(p, "UPDATE events SET client_id='bob', round_index=9 WHERE seq=5"),
        {ALICE, BOB},
    ),
    "delete middle row": (lambda p: sql(p, "DELETE FROM events WHERE seq=3"), {ALICE}),
    "delete last row": (lambda p: sql(p, "DELETE FROM events WHERE seq=6"), {BOB}),
    "delete last row and its heads": (
        lambda p: sql(
            p,
            "DELETE FROM events WHERE seq=6",
            "UPDATE heads SET count=count-1 WHERE chain IN ('*', '[\"bob\",\"run-1\"]')",
        ),
        {BOB},
    ),
    "delete a whole run": (lambda p: sql(p, "DELETE FROM events WHERE client_id='alice'"), {ALICE}),
    "reorder within a run": (
        lambda p: sql(
            p,
            "UPDATE events SET seq=100 WHERE seq=3",
            "UPDATE events SET seq=3 WHERE seq=5",
            "UPDATE events SET seq=5 WHERE seq=100",
        ),
        {ALICE},
    ),
    "reorder across runs": (
        lambda p: sql(
            p,
            "UPDATE events SET seq=100 WHERE seq=1",
            "UPDATE events SET seq=1 WHERE seq=2",
            "UPDATE events SET seq=2 WHERE seq=100",
        ),
        {ALICE, BOB},
    ),
    "insert a forged row": (
        lambda p: sql(
            p,
            "INSERT INTO events SELECT 7, client_id, run_id, run_seq + 1, 9, kind, unit, params, "
            "budget_epsilon, budget_delta, budget_scope, epsilon_after, accountant, bounds, "
            "timestamp, row_hash, row_hash, row_hash, signature FROM events WHERE seq=5",
        ),
        {ALICE},
    ),
    "edit metadata": (
        lambda p: sql(p, "UPDATE meta SET value='[\"rdp_classic\"]' WHERE key='accountants'"),
        set(),
    ),
    "drop the global head": (lambda p: sql(p, "DELETE FROM heads WHERE chain='*'"), set()),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_any_edit_deletion_or_reordering_fails_verification(
    tmp_path: Path, key: Ed25519PrivateKey, name: str
) -> None:
    path = tmp_path / "l.db"
    interleaved(path, key)
    tamper, guilty = TAMPERS[name]
    tamper(path)
    with pytest.raises(LedgerTampered) as info:
        verify_ledger(path)
    assert info.value.problems
    with PrivacyLedger.open(path, verify=False) as led:
        d = led.diagnose()
    assert not d.ok
    assert d.broken_chains == guilty, [p.message for p in d.problems]
    with pytest.raises(LedgerTampered):
        PrivacyLedger.open(path, key)  # a guard refuses to extend it


def test_untampered_ledger_has_no_problems(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    interleaved(path, key)
    with PrivacyLedger.open(path, verify=False) as led:
        d = led.diagnose(expected_public_key=key.public_key())
    assert d.ok and d.pinned and d.events == 6 and not d.broken_chains


def test_truncated_tail_blocks_writing(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    interleaved(path, key)
    sql(path, "DELETE FROM events WHERE seq=6")
    with PrivacyLedger.open(path, key, verify=False) as led, pytest.raises(LedgerTampered):
        charge(led, ALICE, 3)


def test_a_re_signed_copy_only_fails_against_a_pinned_key(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Whoever rewrites the whole file can re-sign it; pinning the writer key catches that."""
    forger = generate_signing_key()
    forged = tmp_path / "forged.db"
    with PrivacyLedger.create(forged, forger, accountants=FAST) as led:
        charge(led, ALICE, 0, event=ddg(sigma=100.0))
    verify_ledger(forged)  # self-consistent
    with pytest.raises(LedgerTampered, match="pinned"):
        verify_ledger(forged, expected_public_key=key.public_key())


# -- crash safety ----------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from dp import accounting as A
    from dp.ledger import Budget, PrivacyLedger, load_signing_key
    path, keyfile, start, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    key = load_signing_key(keyfile)
    led = PrivacyLedger.open_or_create(path, key, accountants=("rdp",))
    event = A.DistributedDiscreteGaussianEvent(8.0, 50, 1.0, 40.0, 256)
    budget = Budget(1e6, 1e-5)
    for r in range(start, stop):
        entry = led.charge(event, client_id="c", run_id="r", round_index=r, budget=budget)
        print(("replayed " if entry.replayed else "committed ") + str(r), flush=True)
    led.close()
    print("done", flush=True)
    """
)


def spawn(path: Path, keyfile: Path, script: Path, start: int, stop: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(keyfile), str(start), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def committed_rounds(path: Path) -> list[int]:
    with PrivacyLedger.open(path) as led:  # verifies
        return [e.round_index for e in led.entries()]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_mid_write_leaves_a_verifying_ledger_that_resumes_exactly(tmp_path: Path) -> None:
    path, keyfile, script = tmp_path / "l.db", tmp_path / "k.pem", tmp_path / "writer.py"
    save_signing_key(generate_signing_key(), keyfile)
    script.write_text(WRITER)
    reported = -1
    for kill_after in (15, 40):
        proc = spawn(path, keyfile, script, reported + 1, 10**9)  # runs until killed
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, _, r = line.partition(" ")
            if kind in ("committed", "replayed"):
                reported = int(r)
            if reported >= kill_after:
                proc.send_signal(signal.SIGKILL)  # lands while the writer is mid-loop
                break
        for line in proc.stdout:  # lines already in the pipe were committed before the kill
            kind, _, r = line.partition(" ")
            if kind in ("committed", "replayed"):
                reported = int(r)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        rounds = committed_rounds(path)
        # Every reported commit is present, exactly once, in order; at most one more (a commit
        # that happened after the last line was printed).
        assert rounds == list(range(len(rounds)))
        assert reported + 1 <= len(rounds) <= reported + 2
    # Restart from the last *reported* round: the unreported commit is replayed, not re-charged.
    total = reported + 30
    proc = spawn(path, keyfile, script, reported + 1, total)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.rstrip().endswith("done")
    with PrivacyLedger.open(path) as led:
        entries = led.entries()
    assert [e.round_index for e in entries] == list(range(total))
    expected = A.account([ddg(total)], 1e-5, FAST).epsilon
    assert entries[-1].epsilon_after == pytest.approx(expected, rel=1e-12)


def test_concurrent_writers_cannot_both_spend_the_last_budget(tmp_path: Path) -> None:
    """Check and commit are one write transaction: two writers racing for the room of one event
    get exactly one success, and the interleaved chain still verifies."""
    path, key = tmp_path / "l.db", generate_signing_key()
    budget = Budget(epsilon=A.account([ddg(3)], 1e-5, FAST).epsilon * 1.001, delta=1e-5)
    with PrivacyLedger.create(path, key, accountants=FAST) as led:
        charge(led, ALICE, 0, budget=budget)
        charge(led, ALICE, 1, budget=budget)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def writer(who: tuple[str, str], rnd: int) -> None:
        with PrivacyLedger.open(path, key) as mine:
            barrier.wait()
            try:
                charge(mine, who, rnd, budget=budget)
                outcomes.append(f"{who[0]}:ok")
            except BudgetExceeded:
                outcomes.append(f"{who[0]}:refused")

    threads = [
        threading.Thread(target=writer, args=args)
        for args in [(ALICE, 2), (ALICE, 3), (BOB, 0), (BOB, 1)]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["alice:ok", "alice:refused", "bob:ok", "bob:ok"]
    with PrivacyLedger.open(path) as led:
        assert len(led.entries(client_id="alice")) == 3
        assert led.verify().events == 5
