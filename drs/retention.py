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

# Tables pruned without an aggregate: (table, its time column). Their long view is not
# charted; what the charts need is folded into daily_runs and daily_scores first. The
# diagnostics bound themselves: each record keeps only the newest (diagnosis.RECORDS_KEPT).
_PRUNED = (
    ("data_drift", "recorded_at"),
    ("ingestion_runs", "started_at"),
    ("reports", "written_at"),
)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# A database made before it gave pages back a few at a time is converted once (a whole
# VACUUM) when it is at most this big; a bigger one keeps its size and reuses its pages.
CONVERT_BYTES_MAX = 200 * 1024 * 1024


def maintain(history: History, history_days: int) -> None:
    """Keep the history bounded when a day has passed since the last time; never fails a run.

    A problem (the history locked by a long reader, say) is logged and left for the next day.
    """
    from drs.errors import PipelineError

    now = datetime.now(UTC)
    try:
        if due(history, now):
            keep(history, history_days, now)
    except PipelineError as error:
        logger.warning("run history not pruned this time: %s", error)


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
    _give_back_space(history)
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
        f"SELECT id FROM {table} WHERE {column} < ? AND id NOT IN "  # noqa: S608
        f"(SELECT id FROM {table} ORDER BY id DESC LIMIT {KEEP_NEWEST}) "
        f"ORDER BY id LIMIT {BATCH_ROWS}"
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


def _give_back_space(history: History) -> None:
    """Return freed pages to the file system, a bounded number at a time.

    A database from before incremental vacuuming is converted by one VACUUM while it is
    small enough for that to be quick; a larger one reuses its freed pages instead.
    """
    ((mode,),) = history.tuples("PRAGMA auto_vacuum")
    if mode == INCREMENTAL:
        history.script(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        return
    ((pages,),) = history.tuples("PRAGMA page_count")
    ((size,),) = history.tuples("PRAGMA page_size")
    if pages * size <= CONVERT_BYTES_MAX:
        history.execute("PRAGMA auto_vacuum = INCREMENTAL")
        history.execute("VACUUM")
        logger.info("run history converted to give freed space back day by day")


INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental vacuuming
