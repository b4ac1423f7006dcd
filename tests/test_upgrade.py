"""An existing installation upgrades in place: a history written by the previous version.

tests/data/history-before-upgrade.sqlite was written by the previous version's scripts:
a first deployment, a run whose only new file was rejected, a drift run that
redeployed, a rollback by hand and a diagnostics.py run.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from drs import runs, state
from drs.config import Config
from drs.history import open_history
from drs.runs import Outcome

OLD_HISTORY = Path(__file__).parent / "data" / "history-before-upgrade.sqlite"


def upgraded(config: Config) -> Config:
    config.history_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OLD_HISTORY, config.history_path)
    return config


def test_the_old_history_is_migrated_in_place_and_keeps_every_row(config: Config) -> None:
    upgraded(config)
    with sqlite3.connect(config.history_path) as before:
        counts = {
            table: before.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("pipeline_runs", "deployments", "scores", "diagnostics")
        }
        assert "made_by" not in {row[1] for row in before.execute("PRAGMA table_info(deployments)")}
    with open_history(config) as history:
        for table, count in counts.items():
            assert history.rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == count
        columns = {row["name"] for row in history.rows("PRAGMA table_info(deployments)")}
        assert "made_by" in columns
        assert history.rows("SELECT COUNT(*) AS n FROM alerts")[0]["n"] == 0
        records = runs.finished(history)
    assert not list(config.history_path.parent.glob("*.broken-*")), "never started anew"
    assert [r.outcome for r in records] == [
        Outcome.FIRST_DEPLOYED,
        Outcome.KEPT,
        Outcome.REDEPLOYED,
    ]
    assert set(records[1].rejected) == {"bad.csv"}
    assert records[2].drifted and records[2].decision == Outcome.REDEPLOYED


def test_how_each_release_went_live_is_read_from_the_old_history(config: Config) -> None:
    upgraded(config)
    went = state.go_lives(config)
    assert [g.how for g in went] == [
        state.HowLive.FIRST,
        state.HowLive.RETRAINED,
        state.HowLive.ROLLED_BACK,
    ]
    assert went[2].release_id == went[0].release_id and went[2].replaced == went[1].release_id


def test_the_state_of_an_upgraded_installation_reads(config: Config) -> None:
    upgraded(config)
    now = state.read(config)
    said = state.verdict(now)
    # Its deployment folder is not part of the copy: nothing is deployed here.
    assert said.severity.value == "warning" and said.headline.startswith("no model deployed yet")
    assert now.last_check is not None and now.last_check.decision == Outcome.REDEPLOYED
