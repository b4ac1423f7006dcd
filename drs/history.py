"""The run history: one SQLite file, safe for one writer and many readers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from drs.config import Config
from drs.errors import PipelineError
from drs.files import replace

logger = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestion_runs (
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, duration_s REAL NOT NULL,
    input_folder TEXT NOT NULL, status TEXT NOT NULL,
    rows_before INTEGER, rows_after INTEGER, files_json TEXT NOT NULL, rejected_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_checks (
    folder TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    verdict TEXT NOT NULL, reason TEXT, rows INTEGER, checked_at TEXT NOT NULL,
    PRIMARY KEY (folder, name, sha256)
);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, f1 REAL NOT NULL,
    model_sha256 TEXT, dataset TEXT NOT NULL, purpose TEXT NOT NULL, dataset_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, release_id TEXT NOT NULL,
    action TEXT NOT NULL, model_sha256 TEXT NOT NULL, f1 REAL, made_by TEXT
);
CREATE TABLE IF NOT EXISTS diagnostics (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, payload_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_drift (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, feature TEXT NOT NULL,
    measure TEXT NOT NULL, value REAL, threshold REAL NOT NULL, drifted INTEGER NOT NULL,
    reference TEXT NOT NULL, current TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_files (
    folder TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    processed_at TEXT NOT NULL, pipeline_run_id INTEGER,
    PRIMARY KEY (folder, name, sha256)
);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
    outcome TEXT NOT NULL, exit_code INTEGER, release_id TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, key TEXT NOT NULL,
    severity TEXT NOT NULL, headline TEXT NOT NULL, release_id TEXT, payload TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT,
    last_error TEXT, delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, id);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY, written_at TEXT NOT NULL, release_id TEXT NOT NULL,
    pipeline_run_id INTEGER, files_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS input_index (
    folder TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL, hashed_at_ns INTEGER NOT NULL,
    PRIMARY KEY (folder, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingested_files (
    folder TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, rows INTEGER,
    PRIMARY KEY (folder, name)
);
CREATE TABLE IF NOT EXISTS daily_runs (
    day TEXT NOT NULL, outcome TEXT NOT NULL, runs INTEGER NOT NULL,
    PRIMARY KEY (day, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily_scores (
    day TEXT NOT NULL, purpose TEXT NOT NULL, dataset_sha256 TEXT NOT NULL,
    scores INTEGER NOT NULL, f1_sum REAL NOT NULL, f1_min REAL NOT NULL, f1_max REAL NOT NULL,
    PRIMARY KEY (day, purpose, dataset_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS maintenance (task TEXT PRIMARY KEY, done_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_release ON pipeline_runs (release_id);
CREATE INDEX IF NOT EXISTS runs_running ON pipeline_runs (outcome) WHERE outcome = 'running';
CREATE INDEX IF NOT EXISTS checks_rejected ON file_checks (folder) WHERE verdict = 'rejected';
CREATE INDEX IF NOT EXISTS reports_by_release ON reports (release_id);
CREATE TABLE IF NOT EXISTS scorings (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, release_id TEXT NOT NULL, data_at TEXT,
    clients INTEGER NOT NULL, high INTEGER NOT NULL, medium INTEGER NOT NULL,
    low INTEGER NOT NULL, changed INTEGER NOT NULL, departed INTEGER NOT NULL,
    new_model INTEGER NOT NULL, left_since INTEGER NOT NULL DEFAULT 0,
    high_left_since INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS client_risks (
    id INTEGER PRIMARY KEY, scoring_id INTEGER NOT NULL, corporation TEXT NOT NULL,
    risk REAL NOT NULL, band TEXT NOT NULL, event TEXT NOT NULL,
    lastmonth_activity REAL, lastyear_activity REAL, number_of_employees REAL
);
CREATE INDEX IF NOT EXISTS client_risks_by_client ON client_risks (corporation, scoring_id);
CREATE INDEX IF NOT EXISTS client_risks_by_scoring ON client_risks (scoring_id);
CREATE TABLE IF NOT EXISTS client_state (
    corporation TEXT PRIMARY KEY, risk REAL NOT NULL, band TEXT NOT NULL,
    scoring_id INTEGER NOT NULL, first_scoring_id INTEGER NOT NULL, high_spans TEXT NOT NULL,
    lastmonth_activity REAL, lastyear_activity REAL, number_of_employees REAL
);
"""
# Seconds a writer waits for another to finish before the history counts as locked.
HISTORY_BUSY_S = 30
# What SQLite's error codes mean for a user (sqlite3's exceptions say little more than
# "database is locked" and never which file).
_HISTORY_PROBLEMS = {
    sqlite3.SQLITE_BUSY: f"locked: another process kept it for {HISTORY_BUSY_S} s",
    sqlite3.SQLITE_LOCKED: f"locked: another process kept it for {HISTORY_BUSY_S} s",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "read-only (check its and its folder's permissions)",
    sqlite3.SQLITE_CANTOPEN: "cannot open it (is the folder missing or not writable?)",
    sqlite3.SQLITE_IOERR: "input/output error while reading or writing it",
    sqlite3.SQLITE_PERM: "permission denied",
}
_DAMAGED = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}


# Columns added since the first release, for databases made before them: (table, column).
_NEW_COLUMNS = (
    ("scores", "dataset_sha256 TEXT"),
    ("deployments", "made_by TEXT"),
    # Since ingestion_runs.files_json holds what changed, not every file again:
    ("ingestion_runs", "file_count INTEGER"),
    ("ingestion_runs", "rejected_count INTEGER"),
    ("ingestion_runs", "removed_json TEXT"),
)


def _add_new_columns(connection: sqlite3.Connection) -> None:
    for table, column in _NEW_COLUMNS:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (its extended code carries more bits)."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


class HistoryError(PipelineError):
    """The run history cannot be used (locked, full disk, permissions): nothing was moved."""


class History:
    """The run history: one SQLite file in WAL mode, one writer and many readers at once.

    A deleted database is simply created again. Only a file that SQLite says is not
    a database, or that fails its integrity check, is moved aside (never deleted) and
    a new one started; any other failure (locked, disk full, permissions) is a
    HistoryError naming the file and the cause, and every file stays as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._connection = self._open()
        except sqlite3.DatabaseError as error:
            if not self._damaged(error):
                raise self._error(error) from None
            self._move_aside(error)
            try:
                self._connection = self._open()
            except sqlite3.Error as again:
                raise self._error(again) from None

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror
            raise HistoryError(f"{self.path}: cannot create its folder ({reason})") from None
        connection = sqlite3.connect(self.path, timeout=HISTORY_BUSY_S, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {HISTORY_BUSY_S * 1000}")
            if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new database gives freed pages back a few at a time (drs.retention).
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            _add_new_columns(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _damaged(self, error: sqlite3.DatabaseError) -> bool:
        """Whether the file itself is broken: not a database, or failing its integrity check."""
        code = _primary_code(error)
        if code == sqlite3.SQLITE_NOTADB:
            return True
        if code != sqlite3.SQLITE_CORRUPT:
            return False
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=HISTORY_BUSY_S)) as check:
                verdict = check.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as failed:
            return _primary_code(failed) in _DAMAGED
        return verdict != "ok"

    def _move_aside(self, error: sqlite3.DatabaseError) -> None:
        """Rename the broken file (and its journal files) to <name>.broken-<PID>."""
        aside = self.path.with_name(f"{self.path.name}.broken-{os.getpid()}")
        try:
            for suffix in ("-wal", "-shm", ""):
                journal = self.path.with_name(self.path.name + suffix)
                if journal.exists():
                    replace(journal, aside.with_name(aside.name + suffix))
        except OSError as failed:
            raise HistoryError(
                f"{self.path}: damaged ({error}) and cannot be moved aside ({failed.strerror})"
            ) from None
        logger.warning("%s: damaged (%s); moved to %s, starting anew", self.path, error, aside)

    def _error(self, error: sqlite3.Error) -> HistoryError:
        code = _primary_code(error)
        problem = str(error) if code is None else _HISTORY_PROBLEMS.get(code, str(error))
        return HistoryError(f"{self.path}: run history {problem}")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes of the block one atomic change (all or none, even if killed)."""
        self._run("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.rollback()
            raise
        self._run("COMMIT")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[int, list[dict[str, Any]]]:
        """Execute one statement; (last row id, rows).

        Damage found only now (a broken page deep in the file) is handled as at
        opening: the file is moved aside and the statement runs on a new database,
        unless a transaction is open (its earlier writes went with the old file).
        """
        try:
            return self._execute(sql, params)
        except sqlite3.DatabaseError as error:
            if self._connection.in_transaction or not self._damaged(error):
                raise self._error(error) from None
            self._connection.close()
            self._move_aside(error)
        try:
            self._connection = self._open()
            return self._execute(sql, params)
        except sqlite3.Error as error:
            raise self._error(error) from None

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[int, list[dict[str, Any]]]:
        cursor = self._connection.execute(sql, params)
        return int(cursor.lastrowid or 0), [dict(row) for row in cursor]

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Add one row (values that are dicts or lists are stored as JSON); returns its id."""
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        verb = "INSERT OR REPLACE" if table in {"file_checks", "processed_files"} else "INSERT"
        row_id, _ = self._run(
            f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(values.values())
        )
        return row_id

    def update(self, table: str, row_id: int, changes: dict[str, Any]) -> None:
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in changes.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        self._run(
            f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608 (our names only)
            (*values.values(), row_id),
        )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._run(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self._run(sql, params)[1]

    def tuples(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: a fifth of the cost of rows() for tens of thousands of them."""
        try:
            cursor = self._connection.cursor()
            cursor.row_factory = None  # plain tuples, made in C
            return cursor.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise self._error(error) from None

    def execute_many(self, sql: str, params: Iterable[tuple[Any, ...]]) -> None:
        """One statement for each parameter tuple (inside a transaction, as one change)."""
        try:
            self._connection.executemany(sql, params)
        except sqlite3.Error as error:
            raise self._error(error) from None

    def script(self, sql: str) -> None:
        """Run statements to their end (PRAGMA incremental_vacuum frees one page a step)."""
        try:
            self._connection.executescript(sql)
        except sqlite3.Error as error:
            raise self._error(error) from None

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Execute a DELETE or UPDATE; how many rows it changed."""
        try:
            return self._connection.execute(sql, params).rowcount
        except sqlite3.Error as error:
            raise self._error(error) from None


def open_history(config: Config) -> History:
    return History(config.history_path)
