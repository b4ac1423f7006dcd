"""Each current client's risk over time, for the managers' "what changed" and the lift.

Whenever the scored book changes (new data ingested, another model live), record()
stores a scoring: when, which release, the band counts, and one row per client whose
risk, band or latest data row changed since the last scoring (changes only), plus one
row per client who left (latest row says exited = 1: "left") or vanished from the data
("gone"), carrying the risk we last gave them. client_state keeps each client's latest
recorded values, so a scoring costs one pass over the book, and the departures update
the lift counters of every earlier scoring they concern: of the clients current at a
scoring, how many left since (left_since), and of those then in the high band, how
many (high_left_since). Those counters survive pruning; prune() drops the rows older
than the retention, keeping each client's newest one (its state at the cutoff).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from drs.clock import readable, utc_now
from drs.config import Config
from drs.history import History

if TYPE_CHECKING:
    from drs.clients import ClientBook

logger = logging.getLogger(__name__)


class Event(StrEnum):
    """Why a client's row was recorded at a scoring."""

    SCORED = "scored"  # current, with a new risk, band or data row
    LEFT = "left"  # its latest row says exited = 1
    GONE = "gone"  # no longer in the ingested data at all


class Band(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


FEATURES = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
MOVERS = 10  # risers, fallers, newly high and departures listed by changes()
TREND_POINTS = 120  # at most this many points of one client's risk on a chart
LIFT_POINTS = 120  # at most this many scorings in the lift's table and chart
MIN_LEFT = 10  # leavers since a scoring for its lift to headline the model's record
LIFT_ROWS = 12  # the most recent scorings in the lift's tables


class Scored(NamedTuple):
    """A scored book as record() needs it: current clients, risks, bands, latest rows."""

    release_id: str
    data_at: str | None  # when the ingested data was written (ISO stamp)
    corporations: Sequence[str]
    risks: Sequence[float]
    bands: Sequence[str]
    rows: Sequence[Sequence[float | None]]  # each client's latest feature values, None: missing
    has_left: Callable[[str], bool]  # whether a client no longer current left (exited = 1)


def scored_from_book(book: ClientBook) -> Scored:
    """The Scored view of a clients.ClientBook."""
    from datetime import UTC, datetime

    risks = [float(value) for value in book.risk]
    rows = [
        [None if math.isnan(value) else float(value) for value in row]
        for row in book.features.tolist()
    ]

    def has_left(corporation: str) -> bool:
        rows_of = book.rows_of(corporation)
        return bool(rows_of) and rows_of[-1].get("exited") == 1

    return Scored(
        release_id=book.release_id,
        data_at=datetime.fromtimestamp(book.data.modified_at, UTC).isoformat(timespec="seconds"),
        corporations=list(book.ids),
        risks=risks,
        bands=[book.bands.of(risk) for risk in risks],
        rows=rows,
        has_left=has_left,
    )


class Recorded(NamedTuple):
    """What record() stored: the scoring's id and how many rows of each kind."""

    scoring_id: int
    changed: int
    left: int
    gone: int


def _state(history: History) -> dict[str, dict[str, Any]]:
    return {
        row["corporation"]: row
        for row in history.rows(
            "SELECT corporation, risk, band, scoring_id, first_scoring_id, high_spans, "
            "lastmonth_activity, lastyear_activity, number_of_employees FROM client_state"
        )
    }


def _same(before: dict[str, Any], risk: float, band: str, row: Sequence[float | None]) -> bool:
    return (
        before["risk"] == risk
        and before["band"] == band
        and all(before[name] == value for name, value in zip(FEATURES, row, strict=True))
    )


def record(history: History, scored: Scored, now: str) -> Recorded | None:
    """Record scored as a new scoring at now, if anything changed since the last one.

    Nothing is written (None) when the release is the one last recorded and no client's
    risk, band or latest row changed, and no client left: the same book seen again (by
    another process, or after a touch of the data file). One transaction: a kill leaves
    the history as it was.
    """
    with history.transaction():
        last = history.rows("SELECT id, release_id FROM scorings ORDER BY id DESC LIMIT 1")
        state = _state(history)
        changed = []
        for corporation, risk, band, row in zip(
            scored.corporations, scored.risks, scored.bands, scored.rows, strict=True
        ):
            before = state.get(corporation)
            if before is None or not _same(before, risk, band, row):
                changed.append((corporation, risk, band, row))
        current = set(scored.corporations)
        departed = [name for name in state if name not in current]
        if not changed and not departed and last and last[0]["release_id"] == scored.release_id:
            return None
        counts = {band: 0 for band in Band}
        for band in scored.bands:
            counts[Band(band)] += 1
        scoring_id = history.insert(
            "scorings",
            {
                "recorded_at": now,
                "release_id": scored.release_id,
                "data_at": scored.data_at,
                "clients": len(scored.corporations),
                "high": counts[Band.HIGH],
                "medium": counts[Band.MEDIUM],
                "low": counts[Band.LOW],
                "changed": len(changed),
                "departed": len(departed),
                "new_model": int(not last or last[0]["release_id"] != scored.release_id),
            },
        )
        left = [name for name in departed if scored.has_left(name)]
        _record_departures(history, scoring_id, state, departed, set(left))
        _record_changes(history, scoring_id, state, changed)
    return Recorded(scoring_id, len(changed), len(left), len(departed) - len(left))


def _record_changes(
    history: History,
    scoring_id: int,
    state: dict[str, dict[str, Any]],
    changed: list[tuple[str, float, str, Sequence[float | None]]],
) -> None:
    history.execute_many(
        "INSERT INTO client_risks (scoring_id, corporation, risk, band, event, "
        "lastmonth_activity, lastyear_activity, number_of_employees) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(scoring_id, name, risk, band, Event.SCORED, *row) for name, risk, band, row in changed],
    )
    upserts = []
    for name, risk, band, row in changed:
        before = state.get(name) or {}
        spans = json.loads(before["high_spans"]) if before else []
        was_high = before.get("band") == Band.HIGH
        if band == Band.HIGH and not was_high:
            spans.append([scoring_id, None])
        elif band != Band.HIGH and was_high and spans:
            spans[-1][1] = scoring_id
        first = before["first_scoring_id"] if before else scoring_id
        upserts.append((name, risk, band, scoring_id, first, json.dumps(spans), *row))
    history.execute_many(
        "INSERT OR REPLACE INTO client_state (corporation, risk, band, scoring_id, "
        "first_scoring_id, high_spans, lastmonth_activity, lastyear_activity, "
        "number_of_employees) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        upserts,
    )


def _record_departures(
    history: History,
    scoring_id: int,
    state: dict[str, dict[str, Any]],
    departed: list[str],
    left: set[str],
) -> None:
    """A row per departure with our last risk; each leaver counts in the scorings it was in."""
    history.execute_many(
        "INSERT INTO client_risks (scoring_id, corporation, risk, band, event, "
        "lastmonth_activity, lastyear_activity, number_of_employees) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                scoring_id,
                name,
                state[name]["risk"],
                state[name]["band"],
                Event.LEFT if name in left else Event.GONE,
                *(state[name][feature] for feature in FEATURES),
            )
            for name in departed
        ],
    )
    history.execute_many(
        "UPDATE scorings SET left_since = left_since + 1 WHERE id >= ? AND id < ?",
        [(state[name]["first_scoring_id"], scoring_id) for name in departed if name in left],
    )
    history.execute_many(
        "UPDATE scorings SET high_left_since = high_left_since + 1 WHERE id >= ? AND id < ?",
        [
            (start, end or scoring_id)
            for name in departed
            if name in left
            for start, end in json.loads(state[name]["high_spans"])
        ],
    )
    history.execute_many(
        "DELETE FROM client_state WHERE corporation = ?", [(name,) for name in departed]
    )


def record_live(config: Config, history: History) -> Recorded | None:
    """Score the current clients with the live model, record them, prune past retention."""
    from drs.clients import ModelCache

    done = record(history, scored_from_book(ModelCache(config).book()), utc_now())
    if done is not None:
        logger.info(
            "recorded the risks of scoring %d: %d clients changed, %d left, %d gone",
            *done,
        )
    # Pruned with each scoring, the only time client rows are added.
    cutoff = datetime.now(UTC) - timedelta(days=config.history_days)
    prune(history, cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return done


def prune(history: History, before: str) -> int:
    """Drop client rows of scorings recorded before `before` (an ISO stamp); how many.

    Each client keeps its newest row from before the cutoff while it is still a client
    (its risk then, where its trend starts); rows of clients who left before the
    cutoff go entirely. Scorings themselves stay: one small row each, with the band
    counts and the lift counters, which need none of the client rows.
    """
    with history.transaction():
        cutoff = history.rows(
            "SELECT coalesce(max(id), 0) AS id FROM scorings WHERE recorded_at < ?", (before,)
        )[0]["id"]
        if not cutoff:
            return 0
        counted = history.rows("SELECT count(*) AS n FROM client_risks")[0]["n"]
        history.execute(
            "DELETE FROM client_risks WHERE scoring_id <= ? AND id NOT IN ("
            "SELECT max(id) FROM client_risks WHERE scoring_id <= ? GROUP BY corporation)",
            (cutoff, cutoff),
        )
        history.execute(
            "DELETE FROM client_risks WHERE scoring_id <= ? AND event != ?",
            (cutoff, Event.SCORED),
        )
        return counted - history.rows("SELECT count(*) AS n FROM client_risks")[0]["n"]


def scorings(history: History | Reader) -> list[dict[str, Any]]:
    """Every scoring, oldest first."""
    return history.rows("SELECT * FROM scorings ORDER BY id")


def thin(items: list[Any], most: int) -> list[Any]:
    """At most `most` of items, evenly spread, the first and the last always kept."""
    if len(items) <= most:
        return items
    step = (len(items) - 1) / (most - 1)
    return [items[round(index * step)] for index in range(most)]


class Lift(NamedTuple):
    """Of the clients current at a scoring, how many left since; of its high band, how many."""

    scoring_id: int
    recorded_at: str
    clients: int
    high: int
    left_since: int
    high_left_since: int

    @property
    def base_rate(self) -> float | None:
        return self.left_since / self.clients if self.clients else None

    @property
    def high_rate(self) -> float | None:
        return self.high_left_since / self.high if self.high else None

    @property
    def lift(self) -> float | None:
        """How many times likelier a flagged client left than any client; None: no one left."""
        base, high = self.base_rate, self.high_rate
        return high / base if base and high is not None else None


def lift_of(rows: Iterable[dict[str, Any]]) -> list[Lift]:
    """The lift at each scoring of rows (scorings() rows), all but the latest.

    The latest scoring has had no time for anyone to leave since.
    """
    lifts = [
        Lift(
            row["id"],
            row["recorded_at"],
            row["clients"],
            row["high"],
            row["left_since"],
            row["high_left_since"],
        )
        for row in rows
    ]
    return lifts[:-1]


def rate(share: float | None) -> str:
    """A share of clients: 0.413 -> '41%', a small one with a decimal: 0.0025 -> '0.3%'."""
    if share is None:
        return "-"
    return f"{share * 100:.1f}%" if 0 < share < 0.1 else f"{share * 100:.0f}%"


def lift_headline(lifts: list[Lift]) -> tuple[Lift | None, str | None]:
    """The scoring to judge the model by, and the sentence that says how its warnings did.

    The latest scoring after which at least MIN_LEFT clients left (fewer say little),
    else the one after which most left; None when nobody has left since any scoring.
    """
    judged = [lift for lift in lifts if lift.left_since and lift.high]
    if not judged:
        return None, None
    enough = [lift for lift in judged if lift.left_since >= MIN_LEFT]
    chosen = enough[-1] if enough else max(judged, key=lambda lift: lift.left_since)
    flagged = (
        f"{chosen.high_left_since:,} ({rate(chosen.high_rate)}) have left since"
        if chosen.high_left_since
        else "none has left since"
    )
    sentence = (
        f"Of the {chosen.high:,} clients flagged high on {readable(chosen.recorded_at)}, "
        f"{flagged}, against {rate(chosen.base_rate)} of all {chosen.clients:,} clients"
    )
    if chosen.lift is not None and chosen.high_left_since:
        sentence += f": flagged clients left {chosen.lift:.1f} times as often."
    else:
        sentence += "."
    return chosen, sentence


def _previous_state(
    history: History | Reader, names: list[str], before_id: int
) -> dict[str, dict[str, Any]]:
    """Each named client's newest row at or before scoring before_id."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 500):  # SQLite's limit on bound parameters
        chunk = names[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in history.rows(
            "SELECT corporation, risk, band, event FROM client_risks WHERE id IN ("  # noqa: S608
            "SELECT max(id) FROM client_risks WHERE scoring_id <= ? "
            f"AND corporation IN ({marks}) GROUP BY corporation)",
            (before_id, *chunk),
        ):
            found[row["corporation"]] = row
    return found


def changes(
    history: History | Reader, since: str | None = None, most: int = MOVERS
) -> dict[str, Any]:
    """What changed between an earlier scoring and the latest one.

    The earlier scoring is the one before the latest, or with since (an ISO date or
    stamp) the last one recorded at or before it. Returns the two scorings, counts,
    and the clients newly in the high band, the biggest risers and fallers (in risk
    points) and those who left with the risk we last gave them, `most` of each.
    """
    latest = history.rows("SELECT * FROM scorings ORDER BY id DESC LIMIT 1")
    if not latest:
        return {"status": "no scorings yet", "until": None, "since": None}
    until = latest[0]
    first = _earlier_scoring(history, until, since)
    start_id = first["id"] if first else 0
    # Each client's newest row since then: at most one row per client leaves SQLite.
    rows = history.rows(
        "SELECT corporation, risk, band, event, scoring_id FROM client_risks WHERE id IN ("
        "SELECT max(id) FROM client_risks WHERE scoring_id > ? GROUP BY corporation) "
        "ORDER BY id",
        (start_id,),
    )
    final = {row["corporation"]: row for row in rows}
    before = _previous_state(history, list(final), start_id) if start_id else {}
    newly_high, moves, left, new_clients = _compare(final, before)
    newly_high.sort(key=lambda entry: (-entry["risk_score"], entry["corporation"]))
    left.sort(key=lambda entry: (-entry["risk_score"], entry["corporation"]))
    risers = sorted(
        (move for move in moves if move["change"] > 0),
        key=lambda m: (-m["change"], m["corporation"]),
    )
    fallers = sorted(
        (move for move in moves if move["change"] < 0),
        key=lambda m: (m["change"], m["corporation"]),
    )
    return {
        "status": "first scoring" if first is None and since is None else "ok",
        "since": _scoring(first),
        "until": _scoring(until),
        "counts": {
            "newly_high": len(newly_high),
            "risers": len(risers),
            "fallers": len(fallers),
            "left": len(left),
            "left_high": sum(entry["band"] == Band.HIGH for entry in left),
            "new_clients": new_clients,
        },
        "newly_high": newly_high[:most],
        "risers": risers[:most],
        "fallers": fallers[:most],
        "left": left[:most],
    }


def _earlier_scoring(
    history: History | Reader, until: dict[str, Any], since: str | None
) -> dict[str, Any] | None:
    """The scoring to compare with: the one before `until`, or the last at or before since."""
    if since is None:
        earlier = history.rows(
            "SELECT * FROM scorings WHERE id < ? ORDER BY id DESC LIMIT 1", (until["id"],)
        )
    else:
        earlier = history.rows(
            "SELECT * FROM scorings WHERE recorded_at <= ? ORDER BY id DESC LIMIT 1",
            (_end_of(since),),
        )
    return earlier[0] if earlier else None


def _compare(
    final: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int]:
    """(newly high, risk moves, leavers, new clients) from each client's rows then and now."""
    newly_high, moves, left, new_clients = [], [], [], 0
    for name, row in final.items():
        old = before.get(name) or {}
        was_client = old.get("event") == Event.SCORED
        if row["event"] == Event.LEFT:
            left.append({"corporation": name, "risk_score": row["risk"], "band": row["band"]})
            continue
        if row["event"] != Event.SCORED:
            continue
        if not was_client:
            new_clients += 1
        if row["band"] == Band.HIGH and not (was_client and old["band"] == Band.HIGH):
            newly_high.append(
                {
                    "corporation": name,
                    "risk_score": row["risk"],
                    "before": old["risk"] if was_client else None,
                }
            )
        if was_client and row["risk"] != old["risk"]:
            moves.append(
                {
                    "corporation": name,
                    "risk_score": row["risk"],
                    "before": old["risk"],
                    "change": row["risk"] - old["risk"],
                    "band": row["band"],
                    "band_before": old["band"],
                }
            )
    return newly_high, moves, left, new_clients


def _end_of(since: str) -> str:
    """A date alone means the whole of that day (UTC), as the history stamps it."""
    return f"{since}T23:59:59.999Z" if len(since) == 10 else since


def _scoring(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row["id"],
        "recorded_at": row["recorded_at"],
        "release_id": row["release_id"],
        "new_model": bool(row["new_model"]),
        "clients": row["clients"],
        "bands": {band: row[band] for band in Band},
    }


def trend(history: History | Reader, corporation: str) -> list[dict[str, Any]]:
    """One client's recorded rows with their scoring's time, oldest first (all of them)."""
    return history.rows(
        "SELECT s.recorded_at, s.data_at, s.release_id, r.risk, r.band, r.event, "
        "r.lastmonth_activity, r.lastyear_activity, r.number_of_employees "
        "FROM client_risks r JOIN scorings s ON s.id = r.scoring_id "
        "WHERE r.corporation = ? ORDER BY r.scoring_id, r.id",
        (corporation,),
    )


class Reader:
    """Read-only queries on the history for the web app, one connection per thread.

    Opening a History costs its schema script on every request; a page asks for one
    client's rows, which an open connection answers in well under a millisecond. A
    database replaced on disk (moved aside when damaged, or deleted) is opened again.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection | None:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        known = getattr(self._local, "known", None)
        if known is not None and known[0] == inode:
            return known[1]
        if known is not None:
            known[1].close()
        # Read-write, though it only reads: a read-only connection cannot open a WAL
        # database whose -shm file is not there yet.
        connection = sqlite3.connect(self.path, timeout=5)
        connection.row_factory = sqlite3.Row
        self._local.known = (inode, connection)
        return connection

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of a query; none when there is no database or it lacks the tables yet."""
        connection = self._connection()
        if connection is None:
            return []
        try:
            return [dict(row) for row in connection.execute(sql, params)]
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise

    def latest_id(self) -> int:
        """The latest scoring's id, 0 when there is none."""
        rows = self.rows("SELECT coalesce(max(id), 0) AS id FROM scorings")
        return rows[0]["id"] if rows else 0
