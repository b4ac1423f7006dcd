"""Keeping the run history bounded: details older than history_days become daily aggregates.

Cron makes 52,560 runs a year, each recording its run, its scores, its drift
measures and its diagnostics. Details older than `history_days` (config, default
400) are folded into one row a day (how many runs of each outcome; each score
series' count, mean, lowest and highest F1), which is all the long view of the charts
needs, and deleted. The newest rows of each table are always kept, however old, so
the latest state never disappears. This runs at most once a day, in bounded batches
(a backlog left by an old database is worked through over the following days), and
the space freed goes back to the file system a bounded number of pages at a time, so
no tick waits long for it.

Standard library only: the no-op tick may run it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drs.history import History

logger = logging.getLogger(__name__)

MAINTENANCE_TASK = "retention"
MAINTENANCE_EVERY = timedelta(days=1)
BATCH_ROWS = 20_000  # rows pruned from each table at one go
KEEP_NEWEST = 50  # rows of each table kept whatever their age
VACUUM_PAGES = 25_000  # pages (4 KiB each) returned to the file system at one go

SCHEMA = """
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
"""

# Tables pruned without an aggregate: (table, its time column). Their long view is not
# charted; what the charts need is folded into daily_runs and daily_scores first.
_PRUNED = (
    ("data_drift", "recorded_at"),
    ("ingestion_runs", "started_at"),
    ("diagnostics", "recorded_at"),
    ("reports", "written_at"),
)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def due(history: History, now: datetime) -> bool:
    """Whether a day has passed since the history was last kept."""
    rows = history.tuples("SELECT done_at FROM maintenance WHERE task = ?", (MAINTENANCE_TASK,))
    if not rows:
        return True
    try:
        last = datetime.fromisoformat(rows[0][0].replace("Z", "+00:00"))
    except ValueError:
        return True
    return now - last >= MAINTENANCE_EVERY


def keep(history: History, history_days: int, now: datetime | None = None) -> dict[str, int]:
    """Fold details older than history_days into daily rows, then free some space.

    Returns how many rows each table lost. Each table's batch is one transaction.
    """
    now = now or datetime.now(UTC)
    cutoff = _stamp(now - timedelta(days=history_days))
    pruned = {
        "pipeline_runs": _fold_runs(history, cutoff),
        "scores": _fold_scores(history, cutoff),
    }
    for table, column in _PRUNED:
        pruned[table] = _prune(history, table, column, cutoff)
    history.execute(
        "INSERT OR REPLACE INTO maintenance (task, done_at) VALUES (?, ?)",
        (MAINTENANCE_TASK, _stamp(now)),
    )
    history.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
    if any(pruned.values()):
        logger.info(
            "run history: details older than %d days folded into daily rows (%s)",
            history_days,
            ", ".join(f"{table} {count}" for table, count in pruned.items() if count),
        )
    return pruned


# Every query below is built from the table and column names above, never from input.
def _old_ids(table: str, column: str) -> str:
    """The ids of a batch of table's rows older than the cutoff (?), sparing the newest."""
    return (
        f"SELECT id FROM {table} WHERE {column} < ? "  # noqa: S608
        f"AND id < (SELECT min(id) FROM (SELECT id FROM {table} ORDER BY id DESC "
        f"LIMIT {KEEP_NEWEST})) ORDER BY id LIMIT {BATCH_ROWS}"
    )


def _fold_runs(history: History, cutoff: str) -> int:
    chosen = _old_ids("pipeline_runs", "started_at")
    with history.transaction():
        history.execute(
            "INSERT INTO daily_runs (day, outcome, runs) "  # noqa: S608 (names above)
            "SELECT substr(started_at, 1, 10), outcome, count(*) FROM pipeline_runs "
            f"WHERE id IN ({chosen}) GROUP BY 1, 2 "
            "ON CONFLICT (day, outcome) DO UPDATE SET runs = runs + excluded.runs",
            (cutoff,),
        )
        deleted = f"DELETE FROM pipeline_runs WHERE id IN ({chosen})"  # noqa: S608
        return history.count(deleted, (cutoff,))


def _fold_scores(history: History, cutoff: str) -> int:
    chosen = _old_ids("scores", "recorded_at")
    with history.transaction():
        history.execute(
            "INSERT INTO daily_scores (day, purpose, dataset_sha256, scores, f1_sum, f1_min, "  # noqa: S608
            "f1_max) SELECT substr(recorded_at, 1, 10), purpose, coalesce(dataset_sha256, ''), "
            "count(*), sum(f1), min(f1), max(f1) FROM scores "
            f"WHERE id IN ({chosen}) GROUP BY 1, 2, 3 "
            "ON CONFLICT (day, purpose, dataset_sha256) DO UPDATE SET "
            "scores = scores + excluded.scores, f1_sum = f1_sum + excluded.f1_sum, "
            "f1_min = min(f1_min, excluded.f1_min), f1_max = max(f1_max, excluded.f1_max)",
            (cutoff,),
        )
        deleted = f"DELETE FROM scores WHERE id IN ({chosen})"  # noqa: S608
        return history.count(deleted, (cutoff,))


def _prune(history: History, table: str, column: str, cutoff: str) -> int:
    chosen = _old_ids(table, column)
    with history.transaction():
        deleted = f"DELETE FROM {table} WHERE id IN ({chosen})"  # noqa: S608
        return history.count(deleted, (cutoff,))
