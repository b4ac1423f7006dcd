"""The run history: each step writes its row, the report reads them back, one writer and
a reader at once in WAL mode, and a lost database is started anew."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from helpers import pdf_text

import ingestion
import reporting
import scoring
import training
from drs import diagnosis, releases
from drs.clock import utc_now
from drs.config import Config
from drs.history import History, open_history

WRITES = 2_000


def count(config: Config, table: str) -> int:
    with open_history(config) as history:
        return history.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"]


def test_each_step_records_its_run_and_the_report_reads_them_back(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diagnosis, "execution_time", lambda config: {"ingestion.py": 0.5})
    monkeypatch.setattr(diagnosis, "outdated_packages_list", lambda config, timeout, url: [])
    assert not config.history_path.exists()

    result = ingestion.run(config)
    training.run(config)
    f1 = scoring.run(config)
    release = releases.run(config)
    diagnosis.run(config)

    with open_history(config) as history:
        runs = history.rows("SELECT * FROM ingestion_runs")
        checks = history.rows("SELECT name, verdict, rows FROM file_checks ORDER BY name")
        scores = history.rows("SELECT * FROM scores")
        deployments = history.rows("SELECT * FROM deployments")
        recorded = history.rows("SELECT * FROM diagnostics")
    assert [(r["status"], r["rows_after"]) for r in runs] == [("ok", result.rows_after)]
    assert [c["name"] for c in checks] == sorted(result.ingested)
    assert {c["verdict"] for c in checks} == {"valid"}
    expected = json.loads(config.model_card_path.read_text())["expected"]["f1"]
    assert [(s["purpose"], s["f1"]) for s in scores] == [("expected-cv", expected), ("test", f1)]
    assert {s["model_sha256"] for s in scores} == {release.model_sha256}
    assert [(d["release_id"], d["action"], d["f1"]) for d in deployments] == [
        (release.id, "deploy", f1)
    ]
    assert len(recorded) == 1
    assert json.loads(recorded[0]["payload_json"])["release_id"] == release.id

    history = reporting.score_history(config)
    assert [(row["f1"], row["purpose"]) for row in history] == [
        (expected, "expected-cv"),
        (f1, "test"),
    ]
    text = pdf_text(reporting.write_report(config))
    assert "2 score(s) from the run history" in text
    assert f"{f1:.4f} new model, at training testdata.csv" in text
    assert f"{expected:.4f} new model, cross-validated" in text
    assert "Timed by diagnostics.py" in text


def test_a_reader_reads_while_a_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    History(path).close()
    seen: list[int] = []
    errors: list[BaseException] = []
    done, reading = threading.Event(), threading.Event()

    def read() -> None:
        try:
            with History(path) as reader:
                while not done.is_set() and len(seen) < 100_000:
                    seen.append(reader.rows("SELECT count(*) AS n FROM scores")[0]["n"])
                    reading.set()
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    thread = threading.Thread(target=read, name="history-reader")
    thread.start()
    assert reading.wait(timeout=30)
    try:
        with History(path) as writer:
            for index in range(WRITES):
                writer.insert(
                    "scores",
                    {
                        "recorded_at": utc_now(),
                        "f1": index / WRITES,
                        "model_sha256": None,
                        "dataset": "d.csv",
                        "purpose": "test",
                    },
                )
    finally:
        done.set()
        thread.join(timeout=30)

    assert not thread.is_alive()
    assert errors == []
    assert any(0 < n < WRITES for n in seen), "no read happened during the writes"
    assert seen == sorted(seen)  # counts only grow: each read saw a committed state
    with History(path) as history:
        assert history.rows("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
        assert history.rows("SELECT count(*) AS n FROM scores")[0]["n"] == WRITES


def test_a_deleted_history_is_started_anew(config: Config) -> None:
    scoring.record_score(config, 0.5, None, "first.csv", "test")
    assert count(config, "scores") == 1
    for path in config.history_path.parent.glob(config.history_path.name + "*"):
        path.unlink()

    scoring.record_score(config, 0.75, None, "second.csv", "test")

    assert config.history_path.is_file()
    assert [row["f1"] for row in reporting.score_history(config)] == [0.75]
    assert count(config, "diagnostics") == 0  # every table is there again


def test_an_unreadable_history_is_moved_aside_not_deleted(config: Config) -> None:
    config.history_path.write_bytes(b"this is not a database" * 100)
    scoring.record_score(config, 0.5, None, "d.csv", "test")
    assert [row["f1"] for row in reporting.score_history(config)] == [0.5]
    aside = list(config.history_path.parent.glob(config.history_path.name + ".broken-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
