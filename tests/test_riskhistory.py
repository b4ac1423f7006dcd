"""Each client's risk over time: recorded as changes, read back as changes and lift."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import ROUND_TWO_DUMP, recount_lift

from drs import riskhistory
from drs.history import History
from drs.riskhistory import Scored


def band(risk: float) -> str:
    return "high" if risk >= 0.5 else "medium" if risk >= 0.25 else "low"


def book(
    release: str, risks: dict[str, float], left: set[str] = frozenset(), rows: dict | None = None
) -> Scored:
    """A scored book of risks (corporation -> risk); rows default to one value per client."""
    names = sorted(risks, key=lambda name: (-risks[name], name))
    return Scored(
        release_id=release,
        data_at="2026-12-01T00:00:00+00:00",
        corporations=names,
        risks=[risks[name] for name in names],
        bands=[band(risks[name]) for name in names],
        rows=[(rows or {}).get(name, (1.0, 2.0, None)) for name in names],
        has_left=lambda name: name in left,
    )


@pytest.fixture
def history(tmp_path: Path) -> Any:
    with History(tmp_path / "history.sqlite") as opened:
        yield opened


def stamp(day: int, hour: int = 6) -> str:
    return f"2026-12-{day:02d}T{hour:02d}:00:00.000Z"


def test_only_changes_are_recorded_and_the_same_book_twice_is_one_scoring(history: Any) -> None:
    first = riskhistory.record(history, book("r1", {"a": 0.6, "b": 0.3, "c": 0.1}), stamp(1))
    assert first == riskhistory.Recorded(1, 3, 0, 0)
    assert riskhistory.record(history, book("r1", {"a": 0.6, "b": 0.3, "c": 0.1}), stamp(2)) is None
    second = riskhistory.record(
        history, book("r1", {"a": 0.6, "b": 0.55, "d": 0.2}, left={"c"}), stamp(3)
    )
    assert second == riskhistory.Recorded(2, 2, 1, 0)
    rows = history.rows("SELECT scoring_id, corporation, risk, event FROM client_risks ORDER BY id")
    assert [(r["scoring_id"], r["corporation"], r["event"]) for r in rows[3:]] == [
        (2, "c", "left"),
        (2, "b", "scored"),
        (2, "d", "scored"),
    ]
    assert rows[3]["risk"] == 0.1  # the risk we had given the client who left
    scoring = riskhistory.scorings(history)[-1]
    assert (scoring["clients"], scoring["high"], scoring["medium"], scoring["low"]) == (3, 2, 0, 1)
    # A new model with the same risks is still a scoring: the page says which model scored.
    assert riskhistory.record(history, book("r2", {"a": 0.6, "b": 0.55, "d": 0.2}), stamp(4))
    # A client missing from the data without a leaving row is gone, not left.
    gone = riskhistory.record(history, book("r2", {"a": 0.6, "b": 0.55}), stamp(5))
    assert gone == riskhistory.Recorded(4, 0, 0, 1)


def test_a_changed_data_row_is_recorded_even_when_the_risk_is_the_same(history: Any) -> None:
    riskhistory.record(history, book("r1", {"a": 0.6}), stamp(1))
    again = riskhistory.record(
        history, book("r1", {"a": 0.6}, rows={"a": (5.0, 2.0, None)}), stamp(2)
    )
    assert again is not None and again.changed == 1
    trend = riskhistory.trend(history, "a")
    assert [row["lastmonth_activity"] for row in trend] == [1.0, 5.0]
    assert trend[1]["number_of_employees"] is None


def test_changes_name_newly_high_risers_fallers_and_leavers_with_our_last_risk(
    history: Any,
) -> None:
    riskhistory.record(history, book("r1", {"a": 0.2, "b": 0.7, "c": 0.4, "d": 0.9}), stamp(1))
    riskhistory.record(
        history, book("r1", {"a": 0.65, "b": 0.5, "c": 0.45, "e": 0.8}, left={"d"}), stamp(2)
    )
    found = riskhistory.changes(history)
    assert found["since"]["recorded_at"] == stamp(1)
    assert found["until"]["recorded_at"] == stamp(2)
    assert [e["corporation"] for e in found["newly_high"]] == ["e", "a"]
    assert found["newly_high"][1]["before"] == 0.2
    assert [(e["corporation"], round(e["change"], 6)) for e in found["risers"]] == [
        ("a", 0.45),
        ("c", 0.05),
    ]
    assert [(e["corporation"], round(e["change"], 6)) for e in found["fallers"]] == [("b", -0.2)]
    assert found["left"] == [{"corporation": "d", "risk_score": 0.9, "band": "high"}]
    assert found["counts"] == {
        "newly_high": 2,
        "risers": 2,
        "fallers": 1,
        "left": 1,
        "left_high": 1,
        "new_clients": 1,
    }
    riskhistory.record(history, book("r1", {"a": 0.3, "b": 0.5, "c": 0.45, "e": 0.8}), stamp(3))
    since_start = riskhistory.changes(history, since="2026-12-01")
    assert since_start["since"]["recorded_at"] == stamp(1)
    assert [e["corporation"] for e in since_start["risers"]] == ["a", "c"]
    assert [e["corporation"] for e in since_start["left"]] == ["d"]
    latest = riskhistory.changes(history)
    assert latest["left"] == [] and [e["corporation"] for e in latest["fallers"]] == ["a"]
    assert riskhistory.changes(history, since="2026-11-30")["since"] is None


def test_no_scorings_yet(history: Any) -> None:
    assert riskhistory.changes(history)["status"] == "no scorings yet"
    assert riskhistory.lift_of(riskhistory.scorings(history)) == []


def test_the_lift_counters_equal_a_recount_from_the_client_rows(history: Any) -> None:
    rng = random.Random(7)
    risks = {f"c{n:03d}": rng.random() for n in range(120)}
    departed: dict[str, float] = {}
    for day in range(1, 16):
        left = set(rng.sample(sorted(risks), 6))
        gone = set(rng.sample(sorted(set(risks) - left), 2))
        for name in left | gone:
            departed[name] = risks.pop(name)
        for name in rng.sample(sorted(risks), 30):
            risks[name] = min(1.0, max(0.0, risks[name] + rng.uniform(-0.3, 0.3)))
        for name in rng.sample(sorted(departed), min(3, len(departed))):  # clients come back
            risks[name] = rng.random()
            del departed[name]
        for n in range(4):
            risks[f"n{day:02d}{n}"] = rng.random()
        riskhistory.record(history, book(f"r{day // 5}", dict(risks), left=left), stamp(day))
    recounted = recount_lift(history)
    stored = [
        (s["clients"], s["high"], s["left_since"], s["high_left_since"])
        for s in riskhistory.scorings(history)
    ]
    assert stored == recounted
    lifts = riskhistory.lift_of(riskhistory.scorings(history))
    assert len(lifts) == len(stored) - 1
    first = lifts[0]
    assert first.lift == pytest.approx(
        (first.high_left_since / first.high) / (first.left_since / first.clients)
    )
    # Pruning keeps the counters and each current client's state at the cutoff.
    before = {name: riskhistory.trend(history, name)[-1]["risk"] for name in risks}
    removed = riskhistory.prune(history, stamp(8))
    assert removed > 0
    assert [
        (s["clients"], s["high"], s["left_since"], s["high_left_since"])
        for s in riskhistory.scorings(history)
    ] == stored
    assert {name: riskhistory.trend(history, name)[-1]["risk"] for name in risks} == before
    kept = history.rows(
        "SELECT corporation, count(*) AS n FROM client_risks WHERE scoring_id <= 7 "
        "GROUP BY corporation"
    )
    assert all(row["n"] == 1 for row in kept)
    assert not history.rows(
        "SELECT 1 FROM client_risks WHERE scoring_id <= 7 AND event != 'scored'"
    )


def test_a_killed_recording_leaves_the_history_as_it_was(history: Any, monkeypatch: Any) -> None:
    riskhistory.record(history, book("r1", {"a": 0.6, "b": 0.3}), stamp(1))

    def broken(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(riskhistory, "_record_changes", broken)
    with pytest.raises(KeyboardInterrupt):
        riskhistory.record(history, book("r1", {"a": 0.1}, left={"b"}), stamp(2))
    assert len(riskhistory.scorings(history)) == 1
    assert history.rows("SELECT count(*) AS n FROM client_state")[0]["n"] == 2
    assert history.rows("SELECT sum(left_since) AS n FROM scorings")[0]["n"] == 0


def test_a_round_two_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as old:
        old.executescript(ROUND_TWO_DUMP.read_text())
    runs_before = sqlite3.connect(path).execute("SELECT count(*) FROM pipeline_runs").fetchone()
    reader = riskhistory.Reader(path)
    assert reader.latest_id() == 0 and riskhistory.trend(reader, "a") == []
    with History(path) as history:
        assert riskhistory.record(history, book("r1", {"a": 0.6}), stamp(1)) is not None
        assert history.rows("SELECT count(*) AS n FROM pipeline_runs")[0]["n"] == runs_before[0]
        detail = history.rows("SELECT detail_json FROM pipeline_runs ORDER BY id LIMIT 1")
        assert json.loads(detail[0]["detail_json"])  # the old records read as before
    assert reader.latest_id() == 1
    assert [row["risk"] for row in riskhistory.trend(reader, "a")] == [0.6]


def test_thin_keeps_the_ends_and_at_most_the_number_asked() -> None:
    assert riskhistory.thin(list(range(5)), 10) == [0, 1, 2, 3, 4]
    thinned = riskhistory.thin(list(range(1000)), 7)
    assert len(thinned) == 7 and thinned[0] == 0 and thinned[-1] == 999
