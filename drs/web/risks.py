"""The recorded risks as the app shows them: what changed, the lift, one client's trend.

The app records the book it serves when it first scores it (the pipeline usually has
already: then nothing is written), so a deployment by hand or a rollback is a scoring
too. Reads go through one open connection per thread; what every page shows (the
latest scoring, what changed since the one before, the lift) is computed once per
scoring and kept.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

from drs import riskhistory
from drs.clients import ClientBook
from drs.clock import parse_stamp, readable, utc_now
from drs.config import Config
from drs.errors import PipelineError
from drs.history import open_history

logger = logging.getLogger(__name__)

KEPT_CHANGES = 16  # answers of /changes?since= kept, the least recently asked dropped first


class RiskView:
    """Record the served book once; answer what changed, the lift and trends from memory."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reader = riskhistory.Reader(config.history_path)
        self._lock = threading.Lock()
        self._recorded: ClientBook | None = None
        self._scoring: tuple[int, dict[str, Any] | None] = (-1, None)
        self._changes: OrderedDict[tuple[int, str | None, int], dict[str, Any]] = OrderedDict()
        self._lift: tuple[int, list[riskhistory.Lift]] = (-1, [])

    def record(self, book: ClientBook) -> None:
        """Record book as a scoring unless this process already did (or found it recorded).

        A history that cannot be written (locked for long, read-only, full disk) is
        logged and tried again with the next book: the page still shows the risks.
        """
        if self._recorded is book:
            return
        with self._lock:
            if self._recorded is book:
                return
            try:
                with open_history(self.config) as history:
                    done = riskhistory.record(
                        history, riskhistory.scored_from_book(book), utc_now()
                    )
            except (PipelineError, OSError) as error:
                logger.warning("client risks not recorded: %s", error)
            else:
                if done is not None:
                    logger.info(
                        "recorded scoring %d: %d clients changed, %d left",
                        done.scoring_id,
                        done.changed,
                        done.left,
                    )
            self._recorded = book

    def latest(self) -> dict[str, Any] | None:
        """The latest scoring (id, when, release, band counts), None before the first."""
        latest_id = self.reader.latest_id()
        known_id, known = self._scoring
        if latest_id != known_id:
            rows = self.reader.rows("SELECT * FROM scorings WHERE id = ?", (latest_id,))
            known = rows[0] if rows else None
            self._scoring = (latest_id, known)
        return known

    def changes(self, since: str | None = None, most: int = riskhistory.MOVERS) -> dict[str, Any]:
        """What changed since the previous scoring, or since a date (kept per scoring)."""
        key = (self.reader.latest_id(), since, most)
        with self._lock:
            found = self._changes.get(key)
            if found is not None:
                self._changes.move_to_end(key)
                return found
        found = riskhistory.changes(self.reader, since, most)
        with self._lock:
            self._changes[key] = found
            while len(self._changes) > KEPT_CHANGES:
                self._changes.popitem(last=False)
        return found

    def lift(self) -> list[riskhistory.Lift]:
        """The lift of the high band at each scoring but the latest, oldest first."""
        latest_id = self.reader.latest_id()
        if self._lift[0] != latest_id:
            self._lift = (latest_id, riskhistory.lift_of(riskhistory.scorings(self.reader)))
        return self._lift[1]

    def trend(self, corporation: str) -> list[dict[str, Any]]:
        return riskhistory.trend(self.reader, corporation)


CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 24  # the trend and lift charts, SVG units


def short_when(stamp: str | None) -> str:
    """A recorded stamp as a manager reads it: '6 Dec 06:38 UTC' ('unknown' when not one)."""
    return readable(stamp)


def percent(risk: float | None) -> str:
    """A risk as the list shows it: 0.413 -> '41%'; a small one '<1%', never a bare 0%."""
    if risk is None:
        return "-"
    return "<1%" if 0 < risk < 0.005 else f"{risk * 100:.0f}%"


def _x_of(stamps: list[str]) -> Any:
    """Where each time goes across a chart: the first at the left edge, the last at the right."""
    seconds = [_seconds(stamp) for stamp in stamps]
    low, high = (min(seconds), max(seconds)) if seconds else (0.0, 1.0)
    span = max(high - low, 1e-3)  # two scorings a moment apart still span the chart

    def x(stamp: str) -> float:
        return round(CHART_PAD + (_seconds(stamp) - low) / span * (CHART_WIDTH - 2 * CHART_PAD), 1)

    return x


def _seconds(stamp: str) -> float:
    when = parse_stamp(stamp)
    return when.timestamp() if when else 0.0


def _y(share: float, top: float) -> float:
    return round(CHART_HEIGHT - CHART_PAD - share / top * (CHART_HEIGHT - 2 * CHART_PAD), 1)


def trend_chart(records: list[dict[str, Any]], bands: tuple[float, float]) -> dict[str, Any]:
    """One client's risk as steps over time (changes only: a risk holds until the next).

    records are trend() rows; at most TREND_POINTS of them are drawn, the latest always.
    """
    scored = riskhistory.thin(
        [row for row in records if row["event"] == riskhistory.Event.SCORED],
        riskhistory.TREND_POINTS,
    )
    if not scored:
        return {"points": [], "path": "", "ticks": [], "thresholds": []}
    x = _x_of([row["recorded_at"] for row in scored])
    points = [
        {
            "x": x(row["recorded_at"]),
            "y": _y(row["risk"], 1.0),
            "when": short_when(row["recorded_at"]),
            "risk": row["risk"],
        }
        for row in scored
    ]
    steps = []
    for before, after in itertools.pairwise(points):
        steps += [f"{before['x']},{before['y']}", f"{after['x']},{before['y']}"]
    steps.append(f"{points[-1]['x']},{points[-1]['y']}")
    if len(points) == 1:  # one record: a level line across the chart
        steps = [f"{CHART_PAD},{points[0]['y']}", f"{CHART_WIDTH - CHART_PAD},{points[0]['y']}"]
    return {
        "points": points,
        "path": " ".join(steps),
        "ticks": [{"y": _y(share, 1.0), "label": percent(share)} for share in (0.0, 0.5, 1.0)],
        "thresholds": [{"y": _y(share, 1.0), "label": percent(share)} for share in bands],
        "first": points[0]["when"],
        "last": points[-1]["when"],
    }


def lift_chart(lifts: list[riskhistory.Lift]) -> dict[str, Any]:
    """The Model health page's lift: the headline, a chart of both rates, the recent rows."""
    _, headline = riskhistory.lift_headline(lifts)
    judged = riskhistory.thin(
        [lift for lift in lifts if lift.high and lift.clients], riskhistory.LIFT_POINTS
    )
    rows = [
        {
            **lift._asdict(),
            "when": short_when(lift.recorded_at),
            "high_rate": lift.high_rate,
            "base_rate": lift.base_rate,
            "lift": lift.lift,
        }
        for lift in lifts[-riskhistory.LIFT_ROWS :][::-1]
    ]
    if len(judged) < 2:  # one scoring: its row says it all, a chart would not
        return {"headline": headline, "points": [], "rows": rows}
    top = max(0.05, *(max(lift.high_rate or 0.0, lift.base_rate or 0.0) for lift in judged))
    x = _x_of([lift.recorded_at for lift in judged])
    points = [
        {
            "x": x(lift.recorded_at),
            "y_high": _y(lift.high_rate or 0.0, top),
            "y_base": _y(lift.base_rate or 0.0, top),
            "when": short_when(lift.recorded_at),
            "high_words": f"{lift.high_left_since:,} of {lift.high:,} flagged left "
            f"({riskhistory.rate(lift.high_rate)}); all clients {riskhistory.rate(lift.base_rate)}",
        }
        for lift in judged
    ]
    return {
        "headline": headline,
        "points": points,
        "high_path": " ".join(f"{p['x']},{p['y_high']}" for p in points),
        "base_path": " ".join(f"{p['x']},{p['y_base']}" for p in points),
        "ticks": [
            {"y": _y(share, top), "label": riskhistory.rate(share)} for share in (0.0, top / 2, top)
        ],
        "rows": rows,
    }


class Arrival(NamedTuple):
    """When a data row arrived: exactly (at), or at the latest (by); both None: not recorded."""

    at: str | None
    by: str | None

    def words(self) -> str:
        if self.at:
            return short_when(self.at)
        return f"by {short_when(self.by)}" if self.by else "before records began"


def arrivals(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[Arrival]:
    """When each of a client's data rows (oldest first) arrived, as the scorings tell.

    A row equal to a recorded latest row arrived with that scoring's data; a row never
    recorded as the latest (it came with a later one, or before records began) arrived
    by the time of the next row that was.
    """
    seen: list[tuple[tuple[Any, ...], str]] = []
    for record in records:
        if record["event"] == riskhistory.Event.SCORED:
            seen.append((_values(record), record["data_at"] or record["recorded_at"]))
    found: list[str | None] = []
    start = 0  # rows and records are both in arrival order: match forward only
    for row in rows:
        key = _values(row)
        match = next((i for i in range(start, len(seen)) if seen[i][0] == key), None)
        if match is not None:
            start = match
        found.append(None if match is None else seen[match][1])
    result: list[Arrival] = []
    later: str | None = None
    for when in reversed(found):
        if when is not None:
            later = when
        result.append(Arrival(when, None if when else later))
    return result[::-1]


def _values(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        None if isinstance(row.get(name), float) and row[name] != row[name] else row.get(name)
        for name in riskhistory.FEATURES
    )
