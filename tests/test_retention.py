"""A year of cron: the history stays bounded, an older database is migrated in place."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import ROUND_TWO_DUMP

from drs import diagnosis, inputs, retention, timeline
from drs.config import Config
from drs.history import History, HistoryError, open_history


@pytest.fixture
def round_two(tmp_path: Path) -> Path:
    """A history database as the second round's scripts wrote it (sample data, a retrain)."""
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(ROUND_TWO_DUMP.read_text(encoding="utf-8"))
    db.close()
    return path


def counts(path: Path, *tables: str) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        found = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    db.close()
    return found


def test_an_older_database_gains_the_new_tables_and_keeps_its_rows(round_two: Path) -> None:
    before = counts(round_two, "pipeline_runs", "scores", "ingestion_runs", "processed_files")
    with History(round_two) as history:
        columns = {row[1] for row in history.tuples("PRAGMA table_info(ingestion_runs)")}
        assert {"file_count", "rejected_count", "removed_json"} <= columns
        folder, files = history.tuples(
            "SELECT input_folder, files_json FROM ingestion_runs ORDER BY id DESC LIMIT 1"
        )[0]
        # The ingested files of the last ingestion, from its full list (the older format).
        listed = [entry["name"] for entry in json.loads(files)]
        assert len(listed) >= 2
        assert list(inputs.ingested_files(history, Path(folder))) == listed
    assert counts(round_two, *before) == before


def test_details_past_history_days_become_daily_rows_and_the_chart_keeps_them(
    round_two: Path,
) -> None:
    with History(round_two) as history:
        before = timeline.scores(history, "day")
        a_year_on = datetime.now(UTC) + timedelta(days=500)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(retention, "KEEP_NEWEST", 0)
            pruned = retention.keep(history, 400, a_year_on)
        assert pruned["pipeline_runs"] == 2 and pruned["scores"] == 7
        assert history.tuples("SELECT count(*) FROM scores")[0][0] == 0
        (runs,) = history.tuples("SELECT sum(runs) FROM daily_runs")[0]
        assert runs == 2
        after = timeline.scores(history, "day")
        assert timeline.bucket(history) == "day"
        # The same series and means, now from the daily rows.
        assert sorted((r["purpose"], r["count"], round(r["f1"], 9)) for r in after) == sorted(
            (r["purpose"], r["count"], round(r["f1"], 9)) for r in before
        )
        assert not retention.due(history, a_year_on)
        assert retention.due(history, a_year_on + timedelta(days=1))


def test_the_newest_rows_are_kept_however_old(round_two: Path) -> None:
    with History(round_two) as history:
        retention.keep(history, 1, datetime.now(UTC) + timedelta(days=500))
        assert history.tuples("SELECT count(*) FROM pipeline_runs")[0][0] == 2
        assert history.tuples("SELECT count(*) FROM scores")[0][0] == 7


def test_a_backlog_is_pruned_in_bounded_batches_and_space_given_back(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        assert history.tuples("PRAGMA auto_vacuum")[0][0] == retention.INCREMENTAL
        with history.transaction():
            history.execute_many(
                "INSERT INTO pipeline_runs (started_at, finished_at, outcome, detail_json) "
                "VALUES (?, ?, 'kept the deployed model', ?)",
                (
                    (f"2020-01-{1 + n % 28:02d}T00:00:00.000Z", "x", "x" * 2000)
                    for n in range(30_000)
                ),
            )
        size = path.stat().st_size
        pruned = retention.keep(history, 400)
        assert pruned["pipeline_runs"] == retention.BATCH_ROWS  # the rest on later days
        assert history.tuples("PRAGMA freelist_count")[0][0] < 1000
        history.tuples("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size < size
    assert counts(path, "pipeline_runs")["pipeline_runs"] == 30_000 - retention.BATCH_ROWS


def test_a_history_that_cannot_be_kept_now_is_left_for_the_next_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: object) -> dict[str, int]:
        raise HistoryError(f"{tmp_path}: run history locked: another process kept it for 30 s")

    monkeypatch.setattr(retention, "keep", locked)
    with History(tmp_path / "history.sqlite") as history:
        retention.maintain(history, 400)  # no exception: the run goes on
    assert "run history not pruned this time" in caplog.text


def test_only_the_diagnostics_ever_read_are_kept(config: Config) -> None:
    """Each data run records its diagnostics (the whole package list); only the newest count."""
    for number in range(diagnosis.RECORDS_KEPT + 30):
        diagnosis.record(config, {"execution_time": {"ingestion.py": float(number)}})
    with open_history(config) as history:
        kept = history.tuples("SELECT count(*) FROM diagnostics")[0][0]
    assert kept == diagnosis.RECORDS_KEPT
    latest = diagnosis.latest_recorded(config)
    assert latest is not None
    assert latest["execution_time"] == {"ingestion.py": float(diagnosis.RECORDS_KEPT + 29)}
