"""Durable aggregator state in SQLite: rounds, who completed which stage, published aggregates.

The schema is versioned (``meta.schema_version``) and :data:`MIGRATIONS` upgrades an older
database in place. Session ids are UNIQUE: a key set can never be reused (docs/threats.md SA-19).
On start, every round still ``open`` is marked ``aborted``: a restarted aggregator never asks a
client to mask again under keys it already used; the next round starts with fresh keys.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "AggregatorStore"]

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY,
        session_id BLOB NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('open', 'completed', 'aborted')),
        config_json TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        reason TEXT
    );
    CREATE TABLE stage_log (
        round INTEGER NOT NULL REFERENCES rounds(round),
        stage TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('completed', 'rejected')),
        detail TEXT,
        at REAL NOT NULL
    );
    CREATE TABLE aggregates (
        round INTEGER PRIMARY KEY REFERENCES rounds(round),
        included_json TEXT NOT NULL,
        dropped_json TEXT NOT NULL,
        npy_path TEXT NOT NULL,
        sha256 TEXT NOT NULL
    );
    """,
    # v2: per-round summary of rejected contributions and timings.
    """
    ALTER TABLE aggregates ADD COLUMN summary_json TEXT NOT NULL DEFAULT '{}';
    """,
    # v3: members named for a provably false contribution (secagg/SPEC.md D12), refused until
    # an operator clears them.
    """
    CREATE TABLE suspended (
        client_id INTEGER PRIMARY KEY,
        round INTEGER NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class AggregatorStore:
    """One SQLite file (WAL mode); every write is one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    def close(self) -> None:
        self._db.close()

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"state schema v{found} is newer than this aggregator (v{SCHEMA_VERSION})"
            )
        for v in range(found, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(v + 1),)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return found

    def abort_interrupted(self, now: float) -> list[int]:
        """Mark every round left open by a previous process as aborted; returns their numbers."""
        rows = [r[0] for r in self._db.execute("SELECT round FROM rounds WHERE status='open'")]
        if rows:
            self._db.execute(
                "UPDATE rounds SET status='aborted', ended_at=?, "
                "reason='aggregator restarted during the round' WHERE status='open'",
                (now,),
            )
        return rows

    def next_round(self) -> int:
        row = self._db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def open_round(self, rnd: int, session_id: bytes, config: dict[str, Any], now: float) -> None:
        self._db.execute(
            "INSERT INTO rounds (round, session_id, status, config_json, started_at) "
            "VALUES (?, ?, 'open', ?, ?)",
            (rnd, session_id, json.dumps(config, sort_keys=True), now),
        )

    def log_stage(
        self, rnd: int, stage: str, client_id: int, event: str, detail: str, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO stage_log VALUES (?, ?, ?, ?, ?, ?)",
            (rnd, stage, client_id, event, detail, now),
        )

    def log_stages(self, rows: Sequence[tuple[int, str, int, str, str, float]]) -> None:
        """Several :meth:`log_stage` rows in one transaction (one fsync for a whole stage)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO stage_log VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def complete_round(
        self,
        rnd: int,
        included: list[int],
        dropped: list[int],
        npy_path: str,
        sha256: str,
        summary: dict[str, Any],
        now: float,
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO aggregates VALUES (?, ?, ?, ?, ?, ?)",
                (
                    rnd,
                    json.dumps(included),
                    json.dumps(dropped),
                    npy_path,
                    sha256,
                    json.dumps(summary, sort_keys=True),
                ),
            )
            db.execute("UPDATE rounds SET status='completed', ended_at=? WHERE round=?", (now, rnd))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def abort_round(self, rnd: int, reason: str, now: float) -> None:
        self._db.execute(
            "UPDATE rounds SET status='aborted', ended_at=?, reason=? WHERE round=? "
            "AND status='open'",
            (now, reason, rnd),
        )

    def rounds(self) -> list[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT r.round, r.status, r.reason, a.included_json, a.npy_path, a.sha256 "
            "FROM rounds r LEFT JOIN aggregates a USING (round) ORDER BY r.round"
        )
        out = []
        for rnd, status, reason, inc, path, digest in cur:
            out.append(
                {
                    "round": rnd,
                    "status": status,
                    "reason": reason,
                    "included": json.loads(inc) if inc else None,
                    "npy_path": path,
                    "sha256": digest,
                }
            )
        return out

    def session_ids(self) -> set[bytes]:
        return {bytes(r[0]) for r in self._db.execute("SELECT session_id FROM rounds")}

    def suspend(self, client_id: int, rnd: int, reason: str, now: float) -> None:
        """Record a member named for a false contribution (kept until :meth:`clear`)."""
        self._db.execute(
            "INSERT OR IGNORE INTO suspended (client_id, round, reason, at) VALUES (?, ?, ?, ?)",
            (client_id, rnd, reason, now),
        )

    def suspended(self) -> list[tuple[int, int, str]]:
        """``(client id, round, reason)`` of every suspended member."""
        cur = self._db.execute("SELECT client_id, round, reason FROM suspended ORDER BY client_id")
        return [(int(u), int(r), str(why)) for u, r, why in cur]

    def clear(self, client_id: int) -> bool:
        """Lift a suspension (an operator's decision); whether there was one."""
        cur = self._db.execute("DELETE FROM suspended WHERE client_id=?", (client_id,))
        return cur.rowcount > 0
