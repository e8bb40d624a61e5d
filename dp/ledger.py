"""The privacy ledger: one signed, hash-chained SQLite row per DP event per client and run.

Rules, in the order :meth:`PrivacyLedger.charge` applies them:

1. **Check, then commit.** Inside one ``BEGIN IMMEDIATE`` transaction the ledger composes the
   chain's recorded events with the new one (:func:`dp.accounting.account`) and raises
   :class:`BudgetExceeded` *before writing anything* if the bound would pass the budget. A
   client charges *before* it trains, so a refused round spends nothing; an accepted round is
   spent even if training later fails (the conservative direction).
2. **One row per event.** ``(client_id, run_id, round_index, kind)`` is unique. Charging the same
   event again is idempotent (the recorded row comes back with ``replayed=True``), so a writer
   that was killed before it learned of its commit can retry without double-counting; the same
   key with different parameters raises :class:`LedgerConflict`.
3. **Tamper evidence.** Each row carries ``row_hash = SHA-256(domain || canonical JSON of every
   field, the previous row's hash and the previous hash of its own (client, run) chain)`` and an
   Ed25519 signature of that hash by the writer. Signed *heads* (count and last hash) of the
   global chain and of every run chain make truncation visible. Editing, deleting, inserting or
   reordering any row breaks a hash, a signature, a link or a head; :meth:`diagnose` says which
   run is affected, :meth:`verify` raises :class:`LedgerTampered`.
4. **Crash safety.** WAL journal, ``synchronous=FULL``, one transaction per event: a process
   killed at any instant leaves the previous committed state, which verifies.

Security: a ledger proves itself only relative to its writer key. Someone who can rewrite the
whole file can re-sign it under a key of their own, so auditors should pin the writer's public
key (``expected_public_key``) and may anchor the published head hash. Clients keep their own
ledger (their guard); the aggregator keeps the consortium's. Time is never read here: a caller
may pass a ``timestamp`` string, which is recorded and signed as given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dp._errors import InvalidParameter, PrivacyError
from dp.accounting import (
    DEFAULT_ACCOUNTANTS,
    DpEvent,
    EpsilonReport,
    PrivacyUnit,
    account,
    event_from_params,
    event_to_params,
    get_accountant,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "Budget",
    "BudgetExceeded",
    "BudgetScope",
    "Diagnosis",
    "LedgerConflict",
    "LedgerEntry",
    "LedgerError",
    "LedgerTampered",
    "PrivacyLedger",
    "Problem",
    "VerificationReport",
    "generate_signing_key",
    "key_fingerprint",
    "load_public_key",
    "load_signing_key",
    "save_public_key",
    "save_signing_key",
    "verify_ledger",
]

FORMAT: Final = "secagg-dplora-privacy-ledger"
SCHEMA_VERSION: Final = 1
_DOMAIN: Final = b"secagg-dplora/privacy-ledger/v1/"
_GLOBAL_CHAIN: Final = "*"
# An honest writer never commits epsilon_after > budget; allow only float noise on re-reads.
_BUDGET_SLACK: Final = 1e-12


class LedgerError(PrivacyError):
    """The ledger cannot be used as asked (missing file, wrong key, read-only, bad schema)."""


class LedgerConflict(LedgerError):
    """An event with the same (client, run, round, kind) is recorded with other parameters."""


class LedgerTampered(LedgerError):
    """Verification failed: ``problems`` lists every broken hash, signature, link or head."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class BudgetExceeded(PrivacyError):
    """Charging the event would take the chain past its budget; nothing was written."""

    def __init__(
        self,
        message: str,
        *,
        client_id: str,
        run_id: str,
        unit: PrivacyUnit,
        epsilon_would_be: float,
        budget: Budget,
        report: EpsilonReport,
    ) -> None:
        super().__init__(message)
        self.client_id = client_id
        self.run_id = run_id
        self.unit = unit
        self.epsilon_would_be = epsilon_would_be
        self.budget = budget
        self.report = report


class BudgetScope(enum.Enum):
    """What a budget covers: one (client, run), or every run of the client (same data)."""

    RUN = "run"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Budget:
    """An (epsilon, delta) budget for one privacy unit of one client."""

    epsilon: float
    delta: float
    scope: BudgetScope = BudgetScope.RUN

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidParameter(f"budget {name} must be a number")
            object.__setattr__(self, name, float(v))
        if not (math.isfinite(self.epsilon) and self.epsilon > 0.0):
            raise InvalidParameter(f"budget epsilon must be finite and > 0, got {self.epsilon}")
        if not 0.0 < self.delta < 1.0:
            raise InvalidParameter(f"budget delta must be in (0, 1), got {self.delta}")
        if not isinstance(self.scope, BudgetScope):
            object.__setattr__(self, "scope", BudgetScope(self.scope))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recorded DP event, as read back from (and checked against) its row."""

    seq: int
    client_id: str
    run_id: str
    round_index: int
    event: DpEvent
    budget: Budget
    epsilon_after: float
    accountant: str
    bounds: tuple[tuple[str, float], ...]
    timestamp: str | None
    row_hash: bytes
    replayed: bool = False

    @property
    def kind(self) -> str:
        return self.event.kind

    @property
    def unit(self) -> PrivacyUnit:
        return self.event.unit

    @property
    def remaining(self) -> float:
        """Budget epsilon left after this event (for its chain and scope)."""
        return self.budget.epsilon - self.epsilon_after


@dataclass(frozen=True, slots=True)
class Problem:
    """One verification failure; ``client_id``/``run_id`` are set when a run chain is at fault."""

    message: str
    seq: int | None = None
    client_id: str | None = None
    run_id: str | None = None

    @property
    def chain(self) -> tuple[str, str] | None:
        if self.client_id is None or self.run_id is None:
            return None
        return (self.client_id, self.run_id)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Everything verification found; :attr:`ok` only if ``problems`` is empty."""

    ledger_id: str | None
    public_key: bytes | None
    pinned: bool
    events: int
    head: bytes | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def broken_chains(self) -> frozenset[tuple[str, str]]:
        """The (client, run) chains with a problem of their own."""
        return frozenset(c for p in self.problems if (c := p.chain) is not None)

    @property
    def ledger_problems(self) -> tuple[Problem, ...]:
        """Problems not attributable to one run (global links, global head, metadata)."""
        return tuple(p for p in self.problems if p.chain is None)


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What a successful verification vouches for."""

    ledger_id: str
    public_key_fingerprint: str
    pinned: bool
    events: int
    head: bytes


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 writer key (OS CSPRNG, via ``cryptography``)."""
    return Ed25519PrivateKey.generate()


def save_signing_key(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], *, password: bytes | None = None
) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600, refusing to overwrite.

    Security: without ``password`` the file holds the key in the clear; protect it like one.
    """
    algo: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algo)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_signing_key(
    path: str | os.PathLike[str], *, password: bytes | None = None
) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key written by :func:`save_signing_key`."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"{path}: not an Ed25519 private key")
    return key


def save_public_key(key: Ed25519PublicKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM (what auditors pin)."""
    Path(path).write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A writer public key from a PEM public key, a PEM private key, or 64 hex characters."""
    data = Path(path).read_bytes()
    text = data.strip()
    if len(text) == 64:
        try:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
        except ValueError:
            pass
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerError(f"{path}: not an Ed25519 public key")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(key: Ed25519PublicKey | bytes) -> str:
    """``sha256:`` and the first 32 hex digits of SHA-256 over the raw 32-byte key."""
    raw = key if isinstance(key, bytes) else _raw_public(key)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# Canonical encodings
# --------------------------------------------------------------------------------------------


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _finite_or_text(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def _sha256(label: bytes, body: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + label + b"\x00" + body).digest()


def _chain_name(client_id: str, run_id: str) -> str:
    return json.dumps([client_id, run_id], separators=(",", ":"))


def _global_genesis(ledger_id: str, public_hex: str) -> bytes:
    return _sha256(b"genesis", _canonical({"key": public_hex, "ledger": ledger_id}))


def _run_genesis(ledger_id: str, client_id: str, run_id: str) -> bytes:
    return _sha256(
        b"run-genesis", _canonical({"client": client_id, "ledger": ledger_id, "run": run_id})
    )


def _head_message(ledger_id: str, chain: str, count: int, last: bytes) -> bytes:
    return _sha256(
        b"head",
        _canonical({"chain": chain, "count": count, "last": last.hex(), "ledger": ledger_id}),
    )


def _meta_message(meta: Mapping[str, str]) -> bytes:
    return _sha256(b"meta", _canonical({k: v for k, v in meta.items() if k != "signature"}))


_ROW_COLUMNS: Final = (
    "seq",
    "client_id",
    "run_id",
    "run_seq",
    "round_index",
    "kind",
    "unit",
    "params",
    "budget_epsilon",
    "budget_delta",
    "budget_scope",
    "epsilon_after",
    "accountant",
    "bounds",
    "timestamp",
    "prev_hash",
    "run_prev_hash",
    "row_hash",
    "signature",
)


def _row_hash(ledger_id: str, row: Mapping[str, Any] | sqlite3.Row) -> bytes:
    """Hash of every column but ``row_hash`` and ``signature``; typed as a writer stores them."""
    body = {
        "ledger": ledger_id,
        "seq": int(row["seq"]),
        "client": str(row["client_id"]),
        "run": str(row["run_id"]),
        "run_seq": int(row["run_seq"]),
        "round": int(row["round_index"]),
        "kind": str(row["kind"]),
        "unit": str(row["unit"]),
        "params": str(row["params"]),
        "budget_epsilon": float(row["budget_epsilon"]),
        "budget_delta": float(row["budget_delta"]),
        "budget_scope": str(row["budget_scope"]),
        "epsilon_after": _finite_or_text(float(row["epsilon_after"])),
        "accountant": str(row["accountant"]),
        "bounds": str(row["bounds"]),
        "timestamp": None if row["timestamp"] is None else str(row["timestamp"]),
        "prev": bytes(row["prev_hash"]).hex(),
        "run_prev": bytes(row["run_prev_hash"]).hex(),
    }
    return _sha256(b"row", _canonical(body))


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidParameter(f"{name} must be a non-empty string of at most 256 characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidParameter(f"{name} must not contain control characters")
    return value


# --------------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------------

_STRICT: Final = " STRICT" if sqlite3.sqlite_version_info >= (3, 37, 0) else ""
_SCHEMA: Final = (
    f"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL){_STRICT}",
    f"""CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        client_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        run_seq INTEGER NOT NULL,
        round_index INTEGER NOT NULL,
        kind TEXT NOT NULL,
        unit TEXT NOT NULL,
        params TEXT NOT NULL,
        budget_epsilon REAL NOT NULL,
        budget_delta REAL NOT NULL,
        budget_scope TEXT NOT NULL,
        epsilon_after REAL NOT NULL,
        accountant TEXT NOT NULL,
        bounds TEXT NOT NULL,
        timestamp TEXT,
        prev_hash BLOB NOT NULL,
        run_prev_hash BLOB NOT NULL,
        row_hash BLOB NOT NULL,
        signature BLOB NOT NULL,
        UNIQUE (client_id, run_id, round_index, kind)
    ){_STRICT}""",
    "CREATE INDEX events_by_client ON events (client_id, unit, run_id)",
    f"""CREATE TABLE heads (
        chain TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        last_hash BLOB NOT NULL,
        signature BLOB NOT NULL
    ){_STRICT}""",
)


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(os.fspath(path), isolation_level=None, timeout=30.0)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open ({exc})") from exc
    try:
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"{path}: cannot switch the journal to WAL (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        if read_only:
            conn.execute("PRAGMA query_only=ON")
    except (sqlite3.Error, UnicodeDecodeError) as exc:  # a corrupted file can yield bad text
        conn.close()
        raise LedgerError(f"{path}: not a usable SQLite ledger ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


class PrivacyLedger:
    """A privacy ledger file. Open with :meth:`create` or :meth:`open`; use as a context manager.

    Without a ``signer`` the ledger is read-only (audits). With one, its public key must be the
    ledger's writer key.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        meta: Mapping[str, str],
        signer: Ed25519PrivateKey | None,
    ) -> None:
        self._conn = conn
        self._path = path
        self._meta = dict(meta)
        self._signer = signer
        self.ledger_id = self._meta["ledger_id"]
        self.public_key = bytes.fromhex(self._meta["public_key"])
        self.accountants: tuple[str, ...] = tuple(json.loads(self._meta["accountants"]))

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        signer: Ed25519PrivateKey,
        *,
        accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
        ledger_id: str | None = None,
        created_at: str | None = None,
    ) -> PrivacyLedger:
        """Create a new, empty ledger at ``path`` (which must not exist) written by ``signer``.

        ``accountants`` are the ones :meth:`charge` compares (:func:`dp.accounting.account`).
        """
        p = Path(path)
        if p.exists():
            raise LedgerError(f"{p}: already exists")
        names = tuple(accountants)
        if not names:
            raise InvalidParameter("at least one accountant is needed")
        for name in names:
            get_accountant(name)
        lid = _check_id("ledger_id", ledger_id) if ledger_id is not None else secrets.token_hex(16)
        meta = {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "ledger_id": lid,
            "public_key": _raw_public(signer.public_key()).hex(),
            "accountants": json.dumps(list(names)),
        }
        if created_at is not None:
            meta["created_at"] = str(created_at)
        meta["signature"] = signer.sign(_meta_message(meta)).hex()
        conn = _connect(p, read_only=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            with contextlib.suppress(OSError):
                p.unlink()
            raise
        return cls(conn, p, meta, signer)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        signer: Ed25519PrivateKey | None = None,
        *,
        verify: bool = True,
        expected_public_key: Ed25519PublicKey | bytes | None = None,
    ) -> PrivacyLedger:
        """Open an existing ledger; by default refuse (``LedgerTampered``) one that fails
        verification, since a guard must not extend a ledger it cannot trust."""
        p = Path(path)
        if not p.is_file():
            raise LedgerError(f"{p}: no such ledger")
        conn = _connect(p, read_only=signer is None)
        try:
            meta = cls._read_meta(conn, p)
            ledger = cls(conn, p, meta, signer)
            if signer is not None and _raw_public(signer.public_key()) != ledger.public_key:
                raise LedgerError(f"{p}: the signer is not this ledger's writer key")
            if verify:
                ledger.verify(expected_public_key=expected_public_key)
        except (
            sqlite3.DatabaseError,
            UnicodeError,
        ) as exc:  # a corrupted file is a ledger problem, typed
            conn.close()
            raise LedgerError(f"{p}: not a readable ledger: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return ledger

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        signer: Ed25519PrivateKey,
        *,
        accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
    ) -> PrivacyLedger:
        """A client's guard: open its ledger (verified) or start one."""
        if Path(path).exists():
            return cls.open(path, signer)
        return cls.create(path, signer, accountants=accountants)

    @staticmethod
    def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
        try:
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise LedgerError(f"{path}: not a privacy ledger ({exc})") from exc
        meta = {str(r["key"]): str(r["value"]) for r in rows}
        if meta.get("format") != FORMAT:
            raise LedgerError(f"{path}: not a privacy ledger (format {meta.get('format')!r})")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise LedgerError(f"{path}: unsupported schema {meta.get('schema_version')!r}")
        for key in ("ledger_id", "public_key", "accountants", "signature"):
            if key not in meta:
                raise LedgerError(f"{path}: metadata lacks {key!r}")
        try:
            bytes.fromhex(meta["public_key"])
            json.loads(meta["accountants"])
        except ValueError as exc:
            raise LedgerError(f"{path}: malformed metadata ({exc})") from exc
        return meta

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        if self._signer is None:
            raise LedgerError("this ledger was opened read-only (no signer)")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read everything inside from one consistent state, even while a writer commits
        (a WAL read transaction). Re-entrant; not for use around :meth:`charge`."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def charge(
        self,
        event: DpEvent,
        *,
        client_id: str,
        run_id: str,
        round_index: int,
        budget: Budget,
        timestamp: str | None = None,
    ) -> LedgerEntry:
        """Record ``event`` for ``(client_id, run_id)`` if the chain stays within ``budget``.

        Raises :class:`BudgetExceeded` (nothing written) when it would not,
        :class:`LedgerConflict` when this round and kind is already recorded differently, and
        :class:`dp.accounting.AccountingError` when an accountant fails (fail closed).
        """
        _check_id("client_id", client_id)
        _check_id("run_id", run_id)
        if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
            raise InvalidParameter("round_index must be an int >= 0")
        if not isinstance(budget, Budget):
            raise InvalidParameter("budget must be a Budget")
        if timestamp is not None and not isinstance(timestamp, str):
            raise InvalidParameter("timestamp must be a string (the ledger never reads a clock)")
        signer = self._signer
        with self._write():
            assert signer is not None
            existing = self._conn.execute(
                "SELECT * FROM events WHERE client_id=? AND run_id=? AND round_index=? AND kind=?",
                (client_id, run_id, round_index, event.kind),
            ).fetchone()
            if existing is not None:
                entry = self._entry(existing)
                if entry.event == event and entry.budget == budget:
                    return dataclasses.replace(entry, replayed=True)
                raise LedgerConflict(
                    f"client {client_id!r} run {run_id!r} round {round_index} already records a "
                    f"{event.kind} event with other parameters (seq {entry.seq})"
                )
            self._check_tail()
            history = self._history(client_id, run_id, event.unit, budget.scope)
            report = account([*history, event], budget.delta, self.accountants)
            if report.epsilon > budget.epsilon:
                before = (
                    account(history, budget.delta, self.accountants).epsilon if history else 0.0
                )
                raise BudgetExceeded(
                    f"client {client_id!r} run {run_id!r}: round {round_index} ({event.kind}) "
                    f"would raise {event.unit.value}-level epsilon from {before:.4g} to "
                    f"{report.epsilon:.4g} ({report.accountant}), over the budget "
                    f"{budget.epsilon:g} at delta={budget.delta:g} ({budget.scope.value} scope); "
                    "refused before anything was spent",
                    client_id=client_id,
                    run_id=run_id,
                    unit=event.unit,
                    epsilon_would_be=report.epsilon,
                    budget=budget,
                    report=report,
                )
            return self._append(
                signer, event, client_id, run_id, round_index, budget, report, timestamp
            )

    def _append(
        self,
        signer: Ed25519PrivateKey,
        event: DpEvent,
        client_id: str,
        run_id: str,
        round_index: int,
        budget: Budget,
        report: EpsilonReport,
        timestamp: str | None,
    ) -> LedgerEntry:
        chain = _chain_name(client_id, run_id)
        g_count, g_last = self._head(_GLOBAL_CHAIN) or (
            0,
            _global_genesis(self.ledger_id, self.public_key.hex()),
        )
        r_count, r_last = self._head(chain) or (0, _run_genesis(self.ledger_id, client_id, run_id))
        row: dict[str, Any] = {
            "seq": g_count + 1,
            "client_id": client_id,
            "run_id": run_id,
            "run_seq": r_count + 1,
            "round_index": round_index,
            "kind": event.kind,
            "unit": event.unit.value,
            "params": _canonical(event_to_params(event)).decode(),
            "budget_epsilon": budget.epsilon,
            "budget_delta": budget.delta,
            "budget_scope": budget.scope.value,
            "epsilon_after": float(report.epsilon),
            "accountant": report.accountant,
            "bounds": _canonical({k: _finite_or_text(v) for k, v in report.bounds}).decode(),
            "timestamp": timestamp,
            "prev_hash": g_last,
            "run_prev_hash": r_last,
        }
        row_hash = _row_hash(self.ledger_id, row)
        row["row_hash"] = row_hash
        row["signature"] = signer.sign(row_hash)
        cols = ", ".join(_ROW_COLUMNS)
        marks = ", ".join("?" for _ in _ROW_COLUMNS)
        self._conn.execute(
            f"INSERT INTO events ({cols}) VALUES ({marks})",  # noqa: S608 - fixed column names
            tuple(row[c] for c in _ROW_COLUMNS),
        )
        for name, count in ((_GLOBAL_CHAIN, g_count + 1), (chain, r_count + 1)):
            sig = signer.sign(_head_message(self.ledger_id, name, count, row_hash))
            self._conn.execute(
                "INSERT INTO heads (chain, count, last_hash, signature) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (chain) DO UPDATE SET count=excluded.count, "
                "last_hash=excluded.last_hash, signature=excluded.signature",
                (name, count, row_hash, sig),
            )
        return LedgerEntry(
            seq=row["seq"],
            client_id=client_id,
            run_id=run_id,
            round_index=round_index,
            event=event,
            budget=budget,
            epsilon_after=float(report.epsilon),
            accountant=report.accountant,
            bounds=report.bounds,
            timestamp=timestamp,
            row_hash=row_hash,
        )

    def _head(self, chain: str) -> tuple[int, bytes] | None:
        r = self._conn.execute(
            "SELECT count, last_hash FROM heads WHERE chain=?", (chain,)
        ).fetchone()
        return None if r is None else (int(r["count"]), bytes(r["last_hash"]))

    def _check_tail(self) -> None:
        """Cheap guard before extending: the global head matches the last row."""
        head = self._head(_GLOBAL_CHAIN)
        last = self._conn.execute(
            "SELECT seq, row_hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if head is None and last is None:
            return
        if head is None or last is None or (int(last["seq"]), bytes(last["row_hash"])) != head:
            raise LedgerTampered("the ledger head does not match its last row; refusing to write")

    def _history(
        self, client_id: str, run_id: str, unit: PrivacyUnit, scope: BudgetScope
    ) -> list[DpEvent]:
        if scope is BudgetScope.RUN:
            rows = self._conn.execute(
                "SELECT * FROM events WHERE client_id=? AND unit=? AND run_id=? ORDER BY seq",
                (client_id, unit.value, run_id),
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT * FROM events WHERE client_id=? AND unit=? ORDER BY seq",
                (client_id, unit.value),
            ).fetchall()
        return [self._entry(r).event for r in rows]

    # -- reading ----------------------------------------------------------------------------

    def _entry(self, r: sqlite3.Row) -> LedgerEntry:
        try:
            event = event_from_params(str(r["kind"]), json.loads(r["params"]))
            bounds = tuple(sorted((str(k), float(v)) for k, v in json.loads(r["bounds"]).items()))
            ts = r["timestamp"]
            return LedgerEntry(
                seq=int(r["seq"]),
                client_id=str(r["client_id"]),
                run_id=str(r["run_id"]),
                round_index=int(r["round_index"]),
                event=event,
                budget=Budget(
                    float(r["budget_epsilon"]),
                    float(r["budget_delta"]),
                    BudgetScope(str(r["budget_scope"])),
                ),
                epsilon_after=float(r["epsilon_after"]),
                accountant=str(r["accountant"]),
                bounds=bounds,
                timestamp=None if ts is None else str(ts),
                row_hash=bytes(r["row_hash"]),
            )
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            InvalidParameter,
        ) as exc:
            seq = r["seq"] if "seq" in r.keys() else "?"  # noqa: SIM118 - sqlite3.Row
            raise LedgerError(f"malformed ledger row (seq {seq!r}): {exc}") from exc

    def entries(
        self, *, client_id: str | None = None, run_id: str | None = None
    ) -> list[LedgerEntry]:
        """Recorded events in commit order, optionally for one client and/or run.

        Raises :class:`LedgerError` on a row that cannot be parsed (see :meth:`diagnose`).
        """
        sql, args = "SELECT * FROM events", []
        where = []
        if client_id is not None:
            where.append("client_id=?")
            args.append(client_id)
        if run_id is not None:
            where.append("run_id=?")
            args.append(run_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._entry(r) for r in self._conn.execute(sql + " ORDER BY seq", args)]

    def readable_entries(self) -> tuple[list[LedgerEntry], list[Problem]]:
        """Every row that parses, plus a problem for each that does not (for audits)."""
        good: list[LedgerEntry] = []
        bad: list[Problem] = []
        try:
            for r in self._conn.execute("SELECT * FROM events ORDER BY seq"):
                try:
                    good.append(self._entry(r))
                except LedgerError as exc:
                    bad.append(_row_problem(r, str(exc)))
        except (sqlite3.DatabaseError, UnicodeError, IndexError, KeyError) as exc:
            raise LedgerError(f"{self._path}: not a readable ledger: {exc}") from exc
        return good, bad

    def spent(
        self,
        *,
        client_id: str,
        run_id: str,
        unit: PrivacyUnit,
        delta: float,
        scope: BudgetScope = BudgetScope.RUN,
    ) -> EpsilonReport:
        """Recompute what the chain has spent at ``delta`` from its recorded events."""
        return account(self._history(client_id, run_id, unit, scope), delta, self.accountants)

    def preview(
        self, event: DpEvent, *, client_id: str, run_id: str, budget: Budget
    ) -> EpsilonReport:
        """What :meth:`charge` would compute for ``event``, without writing (advisory only:
        only ``charge`` checks and commits atomically)."""
        history = self._history(client_id, run_id, event.unit, budget.scope)
        return account([*history, event], budget.delta, self.accountants)

    def head(self) -> bytes | None:
        """The last row hash (what to publish as an anchor), or None for an empty ledger."""
        h = self._head(_GLOBAL_CHAIN)
        return None if h is None else h[1]

    # -- verification -----------------------------------------------------------------------

    def verify(
        self, *, expected_public_key: Ed25519PublicKey | bytes | None = None
    ) -> VerificationReport:
        """Check every hash, signature, link and head; raise :class:`LedgerTampered` on failure."""
        try:
            d = self.diagnose(expected_public_key=expected_public_key)
        except (sqlite3.DatabaseError, UnicodeError, IndexError, KeyError) as exc:
            raise LedgerError(f"{self._path}: not a readable ledger: {exc}") from exc
        if not d.ok:
            first = "; ".join(p.message for p in d.problems[:3])
            more = f" (+{len(d.problems) - 3} more)" if len(d.problems) > 3 else ""
            raise LedgerTampered(
                f"{self._path}: ledger fails verification: {first}{more}", d.problems
            )
        assert d.public_key is not None and d.ledger_id is not None
        return VerificationReport(
            ledger_id=d.ledger_id,
            public_key_fingerprint=key_fingerprint(d.public_key),
            pinned=d.pinned,
            events=d.events,
            head=d.head if d.head is not None else b"",
        )

    def diagnose(self, *, expected_public_key: Ed25519PublicKey | bytes | None = None) -> Diagnosis:
        """Every verification failure, attributed to its run where one is at fault.

        Raises :class:`LedgerError` when SQLite cannot read the file at all (corruption).
        """
        try:
            with self.snapshot():
                return self._diagnose(expected_public_key)
        except (sqlite3.DatabaseError, UnicodeError, IndexError, KeyError) as exc:
            raise LedgerError(f"{self._path}: not a readable ledger: {exc}") from exc

    def _diagnose(self, expected_public_key: Ed25519PublicKey | bytes | None) -> Diagnosis:
        problems: list[Problem] = []
        meta = self._meta
        lid = self.ledger_id
        raw_key = self.public_key
        try:
            verifier = Ed25519PublicKey.from_public_bytes(raw_key)
        except ValueError:
            problems.append(Problem("the recorded writer public key is malformed"))
            return Diagnosis(lid, raw_key, False, 0, None, tuple(problems))
        pinned = False
        if expected_public_key is not None:
            want = (
                expected_public_key
                if isinstance(expected_public_key, bytes)
                else _raw_public(expected_public_key)
            )
            if want != raw_key:
                problems.append(Problem("the writer key is not the pinned key"))
            else:
                pinned = True
        if not _signature_ok(verifier, meta.get("signature", ""), _meta_message(meta)):
            problems.append(Problem("the ledger metadata signature does not verify"))

        prev = _global_genesis(lid, raw_key.hex())
        runs: dict[tuple[str, str], tuple[int, bytes]] = {}
        seen: dict[tuple[str, str, int, str], int] = {}
        count = 0
        expected_seq = 1
        for r in self._conn.execute("SELECT * FROM events ORDER BY seq"):
            count += 1
            try:
                seq = int(r["seq"])
                client, run = str(r["client_id"]), str(r["run_id"])
                stored = bytes(r["row_hash"])
            except (TypeError, ValueError) as exc:
                problems.append(Problem(f"unreadable row: {exc}"))
                continue

            def bad(msg: str, seq: int = seq, client: str = client, run: str = run) -> None:
                problems.append(Problem(msg, seq, client, run))

            if seq != expected_seq:
                problems.append(
                    Problem(f"sequence jumps from {expected_seq - 1} to {seq}: rows missing", seq)
                )
            expected_seq = seq + 1
            try:
                recomputed = _row_hash(lid, r)
            except (TypeError, ValueError) as exc:
                bad(f"row {seq} is malformed ({exc})")
                recomputed = b""
            if recomputed != stored:
                bad(f"row {seq} was modified (its hash does not match its contents)")
            if not _signature_ok(verifier, r["signature"], stored):
                bad(f"row {seq} has no valid writer signature")
            if bytes(r["prev_hash"]) != prev:
                problems.append(
                    Problem(
                        f"the chain is broken before row {seq} (a row was deleted, inserted "
                        "or moved)",
                        seq,
                    )
                )
            prev = stored
            key = (client, run)
            r_count, r_last = runs.get(key, (0, _run_genesis(lid, client, run)))
            if r["run_seq"] != r_count + 1 or bytes(r["run_prev_hash"]) != r_last:
                bad(
                    f"the run's chain is broken before row {seq} (a row of this run was deleted, "
                    "inserted or moved)"
                )
            runs[key] = (r_count + 1, stored)
            try:
                entry = self._entry(r)
            except LedgerError as exc:
                bad(str(exc))
                continue
            if entry.unit.value != r["unit"]:
                bad(f"row {seq} records unit {r['unit']!r} for a {entry.kind} event")
            if entry.epsilon_after > entry.budget.epsilon * (1 + _BUDGET_SLACK):
                bad(f"row {seq} records epsilon {entry.epsilon_after:.4g} over its budget")
            ukey = (client, run, entry.round_index, entry.kind)
            if ukey in seen:
                bad(f"row {seq} repeats the event of row {seen[ukey]}")
            seen[ukey] = seq

        heads = {
            str(h["chain"]): h
            for h in self._conn.execute("SELECT chain, count, last_hash, signature FROM heads")
        }
        g = heads.pop(_GLOBAL_CHAIN, None)
        if g is None:
            if count:
                problems.append(Problem("the ledger head is missing"))
        else:
            if not _signature_ok(
                verifier,
                g["signature"],
                _head_message(lid, _GLOBAL_CHAIN, g["count"], g["last_hash"]),
            ):
                problems.append(Problem("the ledger head signature does not verify"))
            if g["count"] != count or bytes(g["last_hash"]) != (prev if count else b""):
                problems.append(
                    Problem(
                        f"the ledger head says {g['count']} rows ending in "
                        f"{bytes(g['last_hash']).hex()[:16]}..., found {count}: rows were "
                        "deleted or appended without the writer"
                    )
                )
        for name, h in heads.items():
            try:
                client, run = json.loads(name)
                key = (str(client), str(run))
            except (ValueError, TypeError):
                problems.append(Problem(f"malformed head {name!r}"))
                continue
            if not _signature_ok(
                verifier, h["signature"], _head_message(lid, name, h["count"], h["last_hash"])
            ):
                problems.append(Problem("the run head signature does not verify", None, *key))
            state = runs.pop(key, None)
            if state is None:
                problems.append(Problem("every row of this run was deleted", None, *key))
            elif state != (h["count"], bytes(h["last_hash"])):
                problems.append(
                    Problem(
                        f"the run head says {h['count']} rows, found {state[0]}: rows at the "
                        "end of this run were deleted or replaced",
                        None,
                        *key,
                    )
                )
        for key in runs:
            problems.append(Problem("the run has no signed head", None, *key))
        head = self.head()
        return Diagnosis(lid, raw_key, pinned, count, head, tuple(problems))


def _signature_ok(key: Ed25519PublicKey, signature: object, message: bytes) -> bool:
    try:
        if isinstance(signature, str):
            sig = bytes.fromhex(signature)
        elif isinstance(signature, bytes | bytearray | memoryview):
            sig = bytes(signature)
        else:
            return False
        key.verify(sig, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _row_problem(r: sqlite3.Row, message: str) -> Problem:
    try:
        return Problem(message, int(r["seq"]), str(r["client_id"]), str(r["run_id"]))
    except (TypeError, ValueError):
        return Problem(message)


def verify_ledger(
    path: str | os.PathLike[str], *, expected_public_key: Ed25519PublicKey | bytes | None = None
) -> VerificationReport:
    """Open ``path`` read-only and verify it (raises :class:`LedgerTampered`)."""
    with PrivacyLedger.open(path, verify=False) as ledger:
        return ledger.verify(expected_public_key=expected_public_key)
