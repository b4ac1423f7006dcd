"""Hostile input and damaged state: each defect a hostile tester found, as a class of inputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    PROJECT,
    assert_one_line_failure,
    finish_background_work,
    pipeline_run,
    run_script,
)

import drs.history
import fullprocess
import ingestion
import scoring
import training
from drs import releases
from drs.cli import describe_error
from drs.config import (
    COLUMNS,
    MODEL_CARD_NAME,
    MODEL_NAME,
    SCORE_CARD_NAME,
    SCORE_NAME,
    Config,
    load_config,
)
from drs.datarules import read_dataset
from drs.errors import ConfigError, DataError
from drs.files import csv_files, file_sha256, pipeline_lock
from drs.history import History, HistoryError, open_history

HEADER = ",".join(COLUMNS)


def write_config(root: Path, **changes: object) -> Path:
    """A config.json under root: the workspace folders with changes."""
    raw = {**json.loads((root / "config.json").read_text()), **changes}
    path = root / "config.json"
    path.write_text(json.dumps(raw))
    return path


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under root with its bytes (link target for symlinks)."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = os.readlink(path)
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def dead_pid() -> int:
    """The PID of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# History: only a broken database file is ever moved aside.


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
    write_config(root, history_path=value)
    result = run_script("ingestion.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, fragment)
    assert "'history_path'" in result.stderr
    after = tree(root)
    after.pop("config.json")
    before.pop("config.json")
    assert after == before


def fake_sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


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


def with_history_locked(
    history_path: Path, module: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run module's main(args) as a process while another connection holds the history.

    The process waits 0.2 s for it (not the 30 s a real run would).
    """
    holder = sqlite3.connect(history_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    code = (
        f"import sys, drs.history; drs.history.HISTORY_BUSY_S = 0.2; import {module}; "
        f"sys.exit({module}.main(sys.argv[1:]))"
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_script_with_a_locked_history_fails_in_one_line(config: Config) -> None:
    ingestion.run(config)
    training.run(config)
    result = with_history_locked(config.history_path, "scoring", "--config", str(config.path))
    assert result.returncode == 1
    assert f"{config.history_path}: run history locked" in result.stderr
    assert "Traceback" not in result.stderr


# Encodings: one badly encoded file never stops the others.

NON_UTF8_FILES = {
    "id_only.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0"],
    "with_negative.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2,-5,0"],
    "with_ragged_row.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2"],
    "with_target_two.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2,3,2"],
    "bad_byte_in_number.csv": [b"abcd,1,2,3,0", b"abcd,1,\xff2,3,0"],
}


@pytest.mark.parametrize("name", sorted(NON_UTF8_FILES))
def test_a_file_that_is_not_utf8_is_rejected_with_its_line_and_the_rest_ingested(
    config: Config, name: str
) -> None:
    lines = [HEADER.encode(), *NON_UTF8_FILES[name]]
    (config.input_folder / name).write_bytes(b"\n".join(lines) + b"\n")
    result = ingestion.run(config)
    assert result.rejected == {name: "line 3: not UTF-8 text"}
    assert sorted(result.ingested) == ["dataset1.csv", "dataset2.csv"]
    with open_history(config) as history:
        [check] = history.rows("SELECT verdict, reason FROM file_checks WHERE name = ?", (name,))
    assert check == {"verdict": "rejected", "reason": "line 3: not UTF-8 text"}


def test_a_header_only_file_without_a_final_newline_has_no_data_rows(
    config: Config,
) -> None:
    (config.input_folder / "bare.csv").write_text(HEADER)
    assert ingestion.run(config).rejected == {"bare.csv": "no data rows (header only)"}


def test_a_header_of_ten_thousand_columns_is_read_whole(config: Config) -> None:
    extra = [f"extra{n}" for n in range(10_000)]
    header = ",".join([*extra[:5000], *COLUMNS, *extra[5000:]])
    row = ",".join(["9"] * 5000 + ["wxyz", "1", "2", "3", "1"] + ["9"] * 5000)
    assert len(header) > 64 * 1024
    (config.input_folder / "wide.csv").write_text(f"{header}\n{row}\n")
    result = ingestion.run(config)
    assert result.ingested["wide.csv"] == 1
    assert "wide.csv" not in result.rejected


# The lock, and sets that do not belong together.


@pytest.mark.parametrize("script", ["ingestion.py", "training.py", "scoring.py", "deployment.py"])
def test_a_hand_run_step_waits_for_the_pipeline_lock_then_says_busy(
    config_path: Path, tmp_path: Path, script: str
) -> None:
    write_config(config_path.parent, lock_wait_seconds=0.3)
    config = load_config(config_path)
    before = tree(config.root)
    with pipeline_lock(config) as held:
        assert held
        result = run_script(script, "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, "busy: another pipeline run holds")
    assert "waited 0.3 s" in result.stderr
    after = tree(config.root)
    assert {k: v for k, v in after.items() if "history" not in k and "lock" not in k} == {
        k: v for k, v in before.items() if "history" not in k and "lock" not in k
    }


@pytest.fixture
def trained(config: Config) -> Config:
    """A workspace with a trained and scored model, not deployed yet."""
    for step in (ingestion, training, scoring):
        step.run(config)
    return config


def test_a_score_of_another_model_is_refused(trained: Config) -> None:
    scored = trained.score_path.read_bytes(), trained.score_card_path.read_bytes()
    (trained.input_folder / "dataset1.csv").unlink()
    ingestion.run(trained)
    training.run(trained)  # a new model on other data; the score is still the old model's
    raw = json.loads(trained.model_card_path.read_text())
    with pytest.raises(releases.DeploymentError, match="not computed on this model"):
        releases.run(trained)
    assert releases.current_release(trained.deployment_folder) is None
    assert (trained.score_path.read_bytes(), trained.score_card_path.read_bytes()) == scored
    assert json.loads(trained.model_card_path.read_text()) == raw


def test_an_ingestion_record_newer_than_the_model_is_refused(
    trained: Config,
) -> None:
    shutil.copy(trained.input_folder / "dataset1.csv", trained.input_folder / "dataset9.csv")
    ingestion.run(trained)  # what a hand-run ingestion.py does during a pipeline run
    with pytest.raises(releases.DeploymentError, match="changed since the model was trained"):
        releases.run(trained)
    assert releases.current_release(trained.deployment_folder) is None


@pytest.mark.parametrize("card", [MODEL_CARD_NAME, SCORE_CARD_NAME])
def test_a_set_without_its_records_or_with_damaged_ones_is_refused(
    trained: Config, card: str
) -> None:
    path = trained.model_folder / card
    path.unlink()
    with pytest.raises(releases.DeploymentError, match=f"{card}: not found"):
        releases.run(trained)
    path.write_text("[1, 2")
    with pytest.raises(releases.DeploymentError, match=f"{card}: damaged"):
        releases.run(trained)
    assert not list((trained.deployment_folder / releases.RELEASES).iterdir())


def test_a_model_trained_on_fewer_files_than_the_record_names_deploys(
    trained: Config,
) -> None:
    card = json.loads(trained.model_card_path.read_text())
    card["trained_on"] = ["dataset2.csv"]
    trained.model_card_path.write_text(json.dumps(card))
    release = releases.run(trained)
    assert release.trained_on() == ["dataset2.csv"]
    assert release.ingested_files() == ["dataset1.csv", "dataset2.csv"]


# Damaged manifests, and a `current` that names a release that is gone.


@pytest.fixture
def two_releases(trained: Config) -> tuple[Config, releases.Release]:
    first = releases.run(trained)
    # A model trained on other rows: an identical one would make no new release.
    training.run(trained, read_dataset(trained.final_data_path).iloc[::2])
    scoring.run(trained)
    assert releases.run(trained) != first
    return trained, first


@pytest.mark.parametrize(
    "manifest",
    [
        {},
        {"files": 5},
        {"files": {}},
        {"files": {MODEL_NAME: 12345}},
        [],
        "not json at all",
    ],
)
def test_a_damaged_manifest_is_a_clear_error_everywhere_and_rollback_repairs_it(
    two_releases: tuple[Config, releases.Release], tmp_path: Path, manifest: object
) -> None:
    config, first = two_releases
    current = releases.current_release(config.deployment_folder)
    assert current is not None
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (current.folder / releases.MANIFEST).write_text(text)
    for script in ("diagnostics.py", "reporting.py"):
        result = run_script(script, "--config", str(config.path), cwd=tmp_path)
        assert_one_line_failure(result, "manifest")
    result = run_script("fullprocess.py", "--config", str(config.path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "manifest" in result.stderr.strip().splitlines()[-1]

    repaired = run_script("deployment.py", "--rollback", "--config", str(config.path), cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert releases.current_release(config.deployment_folder).id == first.id


def test_rollback_repairs_a_current_that_points_at_a_missing_release(
    two_releases: tuple[Config, releases.Release],
) -> None:
    config, first = two_releases
    current = releases.current_release(config.deployment_folder)
    assert current is not None
    shutil.rmtree(current.folder)
    assert releases.run_rollback(config)[1].id == first.id
    assert releases.current_release(config.deployment_folder).load_model() is not None


# Temporaries of killed writers.


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(
    config: Config,
) -> None:
    gone, alive = dead_pid(), os.getpid()
    config.output_folder.mkdir(parents=True)
    config.model_folder.mkdir(parents=True)
    config.deployment_folder.mkdir(parents=True)
    stale = [
        config.output_folder / f".finaldata.csv.{gone}.k3j_x9q2.tmp",
        config.model_folder / f".report2.pdf.{gone}.abcdefgh.tmp",
        config.model_folder / f".confusionmatrix2.png.{gone}.zzzz1111.tmp",
    ]
    live = config.model_folder / f".trainedmodel.pkl.{alive}.abcdefgh.tmp"
    for path in (*stale, live):
        path.write_bytes(b"partial" * 1000)
    (config.deployment_folder / f".current.{gone}.link.tmp").symlink_to("releases/nowhere")
    for step in (ingestion, training, scoring, releases):
        step.run(config)
    assert [path for path in stale if path.exists()] == []
    assert live.exists()
    assert not (config.deployment_folder / f".current.{gone}.link.tmp").is_symlink()


# Folders that overlap.


@pytest.mark.parametrize(
    "key", ["output_folder_path", "test_data_path", "output_model_path", "prod_deployment_path"]
)
def test_a_folder_shared_with_the_input_folder_is_a_config_error(
    config_path: Path, tmp_path: Path, key: str
) -> None:
    write_config(config_path.parent, **{key: "./practicedata/"})
    result = run_script("ingestion.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, f"keys 'input_folder_path' and '{key}' name the same folder")


# Errors that name the file being written.


def test_a_full_disk_in_the_deployment_folder_names_the_release_file(
    trained: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(source: str, target: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(source))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError) as raised:
        releases.run(trained)
    message = describe_error(raised.value)
    assert str(trained.deployment_folder / releases.RELEASES) in message
    assert message.endswith(f"{MODEL_NAME}: cannot write: No space left on device")
    assert str(trained.model_path) not in message


def test_a_full_disk_while_writing_finaldata_names_it(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.csv as pa_csv

    def full(*args: object, **kwargs: object) -> None:
        raise OSError("[errno 28] Error writing bytes to file. Detail: No space left on device")

    monkeypatch.setattr(pa_csv, "write_csv", full)
    with pytest.raises(OSError) as raised:
        ingestion.run(config)
    message = describe_error(raised.value)
    assert message.startswith(f"{config.final_data_path}: cannot write: ")
    assert not config.final_data_path.exists()
    assert not list(config.output_folder.glob(".*.tmp"))


# New data: what the last ingestion took, not what was ever seen.


@pytest.mark.slow
def test_a_file_changed_and_changed_back_counts_as_new_each_time(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = config.input_folder / "dataset2.csv"
    first = dataset.read_bytes()
    changed = first + b"zzzz,1,2,3,1\n"

    def run() -> str:
        capsys.readouterr()
        assert fullprocess.run(config) == 0
        return capsys.readouterr().out

    def quiet(line: str) -> bool:
        return line.split(": ", 1)[1].startswith("no new data;")

    run()
    dataset.write_bytes(changed)
    assert not quiet(run())
    assert "zzzz" in config.final_data_path.read_text()
    dataset.write_bytes(first)
    assert not quiet(run()), "A was processed long ago, but not last time"
    assert "zzzz" not in config.final_data_path.read_text()
    assert quiet(run())
    dataset.unlink()
    assert quiet(run()), "a removed file is not new data"


def test_find_new_files_compares_with_the_last_processed_ingestion(config: Config) -> None:
    files = {path.name: file_sha256(path) for path in csv_files(config.input_folder)}
    with open_history(config) as history:

        def new() -> list[str]:
            return sorted(path.name for path in fullprocess.find_new_files(config, history, None))

        assert new() == ["dataset1.csv", "dataset2.csv"]
        fullprocess.mark_processed(history, config, files, run_id=1)
        assert new() == []
        fullprocess.mark_processed(history, config, {"dataset1.csv": files["dataset1.csv"]}, 2)
        assert new() == ["dataset2.csv"]


# Found by a second hostile review.


def test_a_file_name_starting_with_a_bracket_is_ingested_and_trained_on(
    config: Config,
) -> None:
    odd = config.input_folder / "[2026-12] export.csv"
    shutil.copy(config.input_folder / "dataset1.csv", odd)
    (config.input_folder / "dataset1.csv").unlink()
    later = (config.input_folder / "dataset2.csv").stat().st_mtime_ns + 1_000_000_000
    os.utime(odd, ns=(later, later))  # it arrived last
    assert sorted(ingestion.run(config).ingested) == ["[2026-12] export.csv", "dataset2.csv"]
    training.run(config)
    scoring.run(config)
    assert releases.run(config).ingested_files() == ["dataset2.csv", "[2026-12] export.csv"]


@pytest.mark.parametrize(
    ("name", "shown", "reason"),
    [
        (b"caf\xe9.csv", "caf\\xe9.csv", "its name is not UTF-8 text"),
        (b"two\nlines.csv", "two\\nlines.csv", "its name holds a line break"),
    ],
)
def test_a_file_whose_name_cannot_be_recorded_is_rejected_and_the_rest_ingested(
    config_path: Path, tmp_path: Path, name: bytes, shown: str, reason: str
) -> None:
    config = load_config(config_path)
    os.link(config.input_folder / "dataset1.csv", os.fsencode(config.input_folder) + b"/" + name)
    log = tmp_path / "cron.log"
    result = run_script(
        "fullprocess.py", "--config", str(config_path), "--log-file", str(log), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    last = log.read_text().splitlines()[-1]
    assert "WARNING: first model deployed: release " in last
    assert "; 1 file rejected at the last ingestion; action: Fix or remove" in last
    assert f"{shown}: rejected: {reason}" in log.read_text()
    assert releases.current_release(config.deployment_folder).ingested_files() == [
        "dataset1.csv",
        "dataset2.csv",
    ]
    again = run_script("fullprocess.py", "--config", str(config_path), cwd=tmp_path)
    assert again.stdout.startswith("WARNING: no new data;"), "the rejection is remembered"


@pytest.mark.parametrize("cell_bytes", [200_000, 3_000_000])
def test_a_huge_cell_rejects_its_file_with_the_line(config: Config, cell_bytes: int) -> None:
    (config.input_folder / "huge.csv").write_text(
        f"{HEADER}\nabcd,1,2,3,0\nbig,{'1' * cell_bytes},2,3,0\nefgh,1,-2,3,0\n"
    )
    result = ingestion.run(config)
    assert result.rejected["huge.csv"] == (
        "line 3: column 'lastmonth_activity' must be a finite number >= 0, found inf"
    )
    assert sorted(result.ingested) == ["dataset1.csv", "dataset2.csv"]


def test_a_changed_training_file_is_not_taken_for_the_training_data(
    trained: Config,
) -> None:
    from drs import drift

    release = releases.run(trained)
    frame, label = drift.training_data(trained, release)
    assert "trained on dataset1.csv, dataset2.csv" in label and "finaldata" not in label
    source = trained.root / "sourcedata" / "dataset3.csv"
    shutil.copy(source, trained.input_folder / "dataset2.csv")  # new data under an old name
    frame, label = drift.training_data(trained, release)
    assert label.endswith("(finaldata.csv)"), "the unchanged finaldata.csv, not the new file"
    assert len(frame) == len(read_dataset(trained.final_data_path))
    ingestion.run(trained)
    with pytest.raises(DataError, match=r"is no longer in practicedata or finaldata\.csv"):
        drift.training_data(trained, release)


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


def test_a_damaged_live_score_is_a_failed_run_with_its_outcome_line(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pipeline_run(config_path, capsys)[0] == 0
    config = load_config(config_path)
    live = releases.current_release(config.deployment_folder)
    live.path(SCORE_NAME).write_text("garbage")
    shutil.copy(config.root / "sourcedata" / "dataset3.csv", config.input_folder)
    status, line = pipeline_run(config_path, capsys)
    assert status == 1
    assert line.startswith("CRITICAL: failed at reading the deployed release: ")
    assert "; deployment damaged: " in line and "action: Run deployment.py" in line
    with open_history(config) as history:
        [*_, failed] = history.rows(
            "SELECT outcome, exit_code, detail_json FROM pipeline_runs ORDER BY id"
        )
    assert (failed["outcome"], failed["exit_code"]) == ("failed", 1)
    assert "latestscore.txt: expected one number, found 'garbage'" in failed["detail_json"]


@pytest.mark.parametrize(
    ("card_change", "manifest_change"),
    [
        ({"expected": None}, {}),
        ({"expected": 5}, {}),
        ({"expected": {"f1": "x"}}, {}),
        ({"trained_on": [1, 2]}, {}),
        ({"trained_on": "dataset1.csv"}, {}),
        ({}, {"deployed_at": 12345}),
    ],
)
def test_release_list_shows_damaged_fields_as_unknown(
    two_releases: tuple[Config, releases.Release],
    card_change: dict,
    manifest_change: dict,
) -> None:
    config, first = two_releases
    card = json.loads(first.path(MODEL_CARD_NAME).read_text())
    first.path(MODEL_CARD_NAME).write_text(json.dumps({**card, **card_change}))
    manifest = json.loads(first.path(releases.MANIFEST).read_text())
    manifest["files"][MODEL_CARD_NAME] = file_sha256(first.path(MODEL_CARD_NAME))
    first.path(releases.MANIFEST).write_text(json.dumps({**manifest, **manifest_change}))
    listed = run_script("deployment.py", "--list", "--config", str(config.path), cwd=config.root)
    assert listed.returncode == 0, listed.stderr
    [oldest] = [line for line in listed.stdout.splitlines() if line.startswith(f"  {first.id} ")]
    assert "d, a, t, a" not in oldest


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


def test_a_failed_catch_up_names_the_live_release(
    bootstrapped_workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(bootstrapped_workspace)
    live = releases.current_release(config.deployment_folder)
    with open_history(config) as history:  # as a kill while reporting leaves it
        history.execute("UPDATE pipeline_runs SET outcome = 'interrupted'")
    (config.model_folder / fullprocess.REPORT_NAME).unlink()
    (config.model_folder / fullprocess.REPORT_NAME).mkdir()  # the report cannot be written
    status, line = pipeline_run(bootstrapped_workspace, capsys)
    assert status == 2
    assert line.startswith("CRITICAL: failed at reporting: ")
    assert f"release {live.id} live" in line
    assert "release None" not in line


@pytest.fixture
def bootstrapped_workspace(config_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert pipeline_run(config_path, capsys)[0] == 0
    return config_path


@pytest.mark.parametrize(
    ("first", "second"),
    [("output_folder_path", "prod_deployment_path"), ("output_model_path", "prod_deployment_path")],
)
def test_folders_whose_files_would_collide_are_refused(
    config_path: Path, first: str, second: str
) -> None:
    write_config(config_path.parent, **{first: "same", second: "same"})
    with pytest.raises(ConfigError, match=f"keys '{first}' and '{second}' name the same"):
        load_config(config_path)


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


def test_a_current_that_is_a_folder_says_what_to_do(trained: Config) -> None:
    (trained.deployment_folder / releases.CURRENT).mkdir(parents=True)
    listed = run_script("deployment.py", "--list", "--config", str(trained.path), cwd=trained.root)
    assert_one_line_failure(listed, "current: not a deployment link")
    assert "move it aside, then run deployment.py --rollback RELEASE" in listed.stderr
