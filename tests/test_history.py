"""The run history: each step writes its row, the report reads them back, one writer and
a reader at once in WAL mode, and a lost database is started anew."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import (
    assert_one_line_failure,
    change_config,
    fake_sqlite_error,
    finish_background_work,
    pdf_text,
    run_script,
    tree,
    with_history_locked,
)

import drs.history
import ingestion
import reporting
import scoring
import training
from drs import diagnosis, releases
from drs.clock import utc_now
from drs.config import (
    Config,
    load_config,
)
from drs.history import History, HistoryError, open_history
from drs.runs import ScorePurpose

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
        (f1, ScorePurpose.TEST),
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
    scoring.record_score(config, 0.5, None, "first.csv", ScorePurpose.TEST)
    assert count(config, "scores") == 1
    for path in config.history_path.parent.glob(config.history_path.name + "*"):
        path.unlink()

    scoring.record_score(config, 0.75, None, "second.csv", ScorePurpose.TEST)

    assert config.history_path.is_file()
    assert [row["f1"] for row in reporting.score_history(config)] == [0.75]
    assert count(config, "diagnostics") == 0  # every table is there again


def test_an_unreadable_history_is_moved_aside_not_deleted(config: Config) -> None:
    config.history_path.write_bytes(b"this is not a database" * 100)
    scoring.record_score(config, 0.5, None, "d.csv", ScorePurpose.TEST)
    assert [row["f1"] for row in reporting.score_history(config)] == [0.5]
    aside = list(config.history_path.parent.glob(config.history_path.name + ".broken-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (".", "must name a SQLite file"),
        ("testdata", "must name a SQLite file"),
        ("README.md", "must name a SQLite file"),
        ("config.json", "must name a SQLite file"),
        ("training.py", "must name a SQLite file"),
        ("folder.sqlite", "names a folder"),
    ],
)
def test_a_history_path_that_is_not_a_database_file_is_a_config_error(
    config_path: Path, tmp_path: Path, value: str, fragment: str
) -> None:
    root = config_path.parent
    (root / "folder.sqlite").mkdir()
    (root / "README.md").write_text("keep me")
    (root / "training.py").write_text("print('keep me')")
    before = tree(root)
    change_config(root, history_path=value)
    result = run_script("ingestion.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, fragment)
    assert "'history_path'" in result.stderr
    after = tree(root)
    after.pop("config.json")
    before.pop("config.json")
    assert after == before


@pytest.mark.parametrize(
    ("code", "message", "fragment"),
    [
        (sqlite3.SQLITE_BUSY, "database is locked", "locked"),
        (sqlite3.SQLITE_FULL, "database or disk is full", "disk is full"),
        (sqlite3.SQLITE_READONLY, "attempt to write a readonly database", "read-only"),
        (sqlite3.SQLITE_CANTOPEN, "unable to open database file", "cannot open"),
        (sqlite3.SQLITE_IOERR | (3 << 8), "disk I/O error", "input/output error"),
        (sqlite3.SQLITE_PERM, "access permission denied", "permission denied"),
    ],
)
def test_a_healthy_history_that_cannot_be_used_is_an_error_and_is_never_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str, fragment: str
) -> None:
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        history.execute("INSERT INTO reports VALUES (1, 'x', 'r', NULL, '[]')")
    before = tree(tmp_path)

    def failing(self: History) -> sqlite3.Connection:
        raise fake_sqlite_error(code, message)

    monkeypatch.setattr(History, "_open", failing)
    with pytest.raises(HistoryError, match=fragment) as raised:
        History(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert tree(tmp_path) == before


def test_a_history_locked_by_another_process_is_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite"
    History(path).close()
    monkeypatch.setattr(drs.history, "HISTORY_BUSY_S", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError, match="locked"), History(path) as history:
            history.insert("reports", {"written_at": "x", "release_id": "r", "files_json": []})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir() if ".broken" in p.name) == []


def test_a_database_failing_its_integrity_check_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        for number in range(3000):
            history.insert(
                "scores",
                {"recorded_at": "t", "f1": 0.5, "dataset": "d" * 50, "purpose": str(number)},
            )
        history.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096  # a page in the middle
    path.write_bytes(bytes(data))
    with History(path) as history:
        assert history.rows("SELECT count(*) AS n FROM scores")[0]["n"] == 0
    [aside] = tmp_path.glob("history.sqlite.broken-*")
    assert aside.read_bytes() == bytes(data)


def test_a_script_with_a_locked_history_fails_in_one_line(config: Config) -> None:
    ingestion.run(config)
    training.run(config)
    result = with_history_locked(config.history_path, "scoring", "--config", str(config.path))
    assert result.returncode == 1
    assert f"{config.history_path}: run history locked" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_outcome_line_is_last_even_when_the_history_is_locked(
    config_path: Path, tmp_path: Path
) -> None:
    config = load_config(config_path)
    History(config.history_path).close()
    log = tmp_path / "cron.log"
    result = with_history_locked(
        config.history_path, "fullprocess", "--config", str(config_path), "--log-file", str(log)
    )
    assert result.returncode == 1
    last = log.read_text().splitlines()[-1]
    assert " ERROR fullprocess: CRITICAL: failed at opening the run history: " in last
    assert "run history locked" in last and last.endswith("; exit 1")
    assert len(last.split(" fullprocess: ", 1)[1]) <= 200


def test_a_rollback_the_history_cannot_record_still_says_what_it_did(
    two_releases: tuple[Config, releases.Release],
) -> None:
    config, first = two_releases
    live = releases.current_release(config.deployment_folder)
    result = with_history_locked(
        config.history_path, "deployment", "--rollback", "--config", str(config.path)
    )
    assert result.returncode == releases.EXIT_NOT_RECORDED
    assert result.stdout.startswith(f"rolled back from release {live.id} ")
    assert "(not recorded in the run history: " in result.stdout
    assert releases.current_release(config.deployment_folder).id == first.id


ODD_DIAGNOSTICS = [
    ("2026-12-01T22:00:00", "[]"),
    ("yesterday", '{"execution_time": {"ingestion.py": 1}}'),
    ("2026-12-01T22:00:00", '{"execution_time": "fast"}'),
    ("2026-12-01T22:00:00", "not json"),
]


ODD_RUNS = [
    '{"data_drift": 5, "outcome": "kept the deployed model"}',
    '{"outcome": "redeployed", "deployed": 7, "model_drift": "yes"}',
    '{"outcome": 5}',
    "not json",
    "[]",
    '{"outcome": "retrained and staged", "model_drift": {"drifted": true}, "staged": 3, '
    '"retraining": "x", "release_before": {"f1": 0.5}}',
]


def test_odd_history_rows_never_break_diagnostics_or_reports(trained: Config) -> None:
    """Rows that pass SQLite's integrity check but not the shape the readers expect."""
    from helpers import make_app

    import reporting

    releases.run(trained)
    service = make_app(trained)
    with open_history(trained) as history:
        history.execute("INSERT INTO scores VALUES (99, 'x', 0.5, NULL, 'd', 'test', NULL)")
        for row in ODD_DIAGNOSTICS:
            history.execute(
                "INSERT INTO diagnostics (recorded_at, payload_json) VALUES (?, ?)", row
            )
            answer = service.test_client().get("/diagnostics")
            assert answer.status_code == 200, (row, answer.get_data(as_text=True))
        for detail in ODD_RUNS:  # every run is read for the report, the newest not only
            history.execute(
                "INSERT INTO pipeline_runs (started_at, finished_at, outcome, detail_json) "
                "VALUES ('x', '2026-12-01T22:00:00Z', 'kept', ?)",
                (detail,),
            )
    assert reporting.write_report(trained, "odd.pdf").exists()
    finish_background_work(service, 60)
