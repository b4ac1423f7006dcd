"""The run history over time in a bounded number of points, for the page's and report's charts.

A year of cron records hundreds of thousands of scores; a chart needs a few hundred
points. While there are few, scores and deployments come as they were recorded;
past that they are averaged by day, by week or by month (whichever keeps each series
within a few dozen points over the span), the per-day rows that retention keeps for
pruned details included. Each aggregated score carries how many it stands for and
their range.

Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drs.history import History

MAX_RAW = 300  # up to this many scores (or deployments) are drawn as they are
DAYS_BY_DAY = 60  # a span up to this many days is drawn a day a point; then a week
DAYS_BY_WEEK = 420  # past this, a month a point
# Each bucket's first day, from an ISO time stamp (SQLite date functions).
_BUCKETS = {
    "day": "substr({t}, 1, 10)",
    "week": "date({t}, '-6 days', 'weekday 1')",
    "month": "substr({t}, 1, 7) || '-01'",
}


def bucket(history: History) -> str | None:
    """How the charts group the history: None (as recorded), 'day', 'week' or 'month'."""
    # Counted up to one past the limit: a count of a year of rows would take a while.
    raw, live, kept = (
        history.tuples(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {MAX_RAW + 1})")[0][0]  # noqa: S608
        for table in ("scores", "deployments", "daily_scores")
    )
    if raw <= MAX_RAW and live <= MAX_RAW and not kept:
        return None
    first, last = history.tuples(
        "SELECT min(day), max(day) FROM (SELECT min(day) AS day FROM daily_scores "
        "UNION ALL SELECT substr(recorded_at, 1, 10) FROM scores WHERE id = "
        "(SELECT min(id) FROM scores) UNION ALL SELECT substr(recorded_at, 1, 10) FROM scores "
        "WHERE id = (SELECT max(id) FROM scores))"
    )[0]
    span = _days_between(first, last)
    if span <= DAYS_BY_DAY:
        return "day"
    return "week" if span <= DAYS_BY_WEEK else "month"


def _days_between(first: str | None, last: str | None) -> int:
    from datetime import date

    try:
        return (date.fromisoformat(last or "") - date.fromisoformat(first or "")).days
    except ValueError:
        return 0


def scores(history: History, grouped: str | None) -> list[dict[str, Any]]:
    """F1 scores oldest first: recorded_at, f1, purpose, dataset, dataset_sha256, model_sha256.

    Grouped, each row stands for the scores of one series (purpose and dataset) in one
    bucket: f1 is their mean, f1_min and f1_max their range, count how many, and
    recorded_at the latest of them (the bucket's middle for pruned days).
    """
    if grouped is None:
        return history.rows(
            "SELECT recorded_at, f1, purpose, dataset, dataset_sha256, model_sha256, "
            "1 AS count, f1 AS f1_min, f1 AS f1_max FROM scores ORDER BY id"
        )
    key = _BUCKETS[grouped]
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    rows = history.tuples(
        f"SELECT {key.format(t='recorded_at')}, purpose, coalesce(dataset_sha256, ''), "  # noqa: S608
        "sum(f1), count(*), min(f1), max(f1), max(recorded_at), max(dataset), "
        "max(model_sha256) FROM scores GROUP BY 1, 2, 3 "
        f"UNION ALL SELECT {key.format(t='day')}, purpose, dataset_sha256, f1_sum, scores, "
        "f1_min, f1_max, day || 'T12:00:00.000Z', '', NULL FROM daily_scores"
    )
    for start, purpose, sha, total, count, low, high, when, dataset, model in rows:
        seen = merged.get((start, purpose, sha))
        if seen is None:
            merged[(start, purpose, sha)] = {
                "recorded_at": when,
                "sum": total,
                "count": count,
                "f1_min": low,
                "f1_max": high,
                "purpose": purpose,
                "dataset": dataset,
                "dataset_sha256": sha or None,
                "model_sha256": model,
            }
            continue
        seen["sum"] += total
        seen["count"] += count
        seen["f1_min"] = min(seen["f1_min"], low)
        seen["f1_max"] = max(seen["f1_max"], high)
        seen["recorded_at"] = max(seen["recorded_at"], when)
        seen["dataset"] = seen["dataset"] or dataset
        seen["model_sha256"] = seen["model_sha256"] or model
    ordered = sorted(merged.values(), key=lambda row: row["recorded_at"])
    for row in ordered:
        row["f1"] = row.pop("sum") / row["count"]
    return ordered


def recent_scores(history: History, count: int) -> list[dict[str, Any]]:
    """The newest `count` scores as recorded, oldest first (a report's table)."""
    newest = history.rows(
        "SELECT recorded_at, f1, purpose, dataset, dataset_sha256, model_sha256 FROM scores "
        "ORDER BY id DESC LIMIT ?",
        (count,),
    )
    return newest[::-1]


def deployments(
    history: History, grouped: str | None, actions: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """Deployments oldest first: recorded_at, release_id, action, f1 (of those actions).

    Grouped, one row per bucket and action, at its latest deployment, with count.
    """
    chosen = actions or ()
    where = f"WHERE action IN ({', '.join('?' for _ in chosen)})" if chosen else ""
    if grouped is None:
        return history.rows(
            "SELECT recorded_at, release_id, action, f1, 1 AS count "  # noqa: S608
            f"FROM deployments {where} ORDER BY id",
            chosen,
        )
    key = _BUCKETS[grouped].format(t="recorded_at")
    return history.rows(
        "SELECT max(recorded_at) AS recorded_at, max(release_id) AS release_id, action, "  # noqa: S608
        f"avg(f1) AS f1, count(*) AS count FROM deployments {where} GROUP BY {key}, action "
        "ORDER BY 1",
        chosen,
    )
