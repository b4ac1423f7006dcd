"""fullprocess.py: the unattended run, in temporary workspaces with real subprocesses."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import (
    OFFLINE_INDEX_URL,
    PROJECT,
    make_workspace,
    pipeline_run,
    run_script,
    switch_to_source,
)

import fullprocess
import ingestion
from drs import datagen, diagnosis, inputs, outcome, releases
from drs.config import (
    API_TOKEN_ENV_VAR,
    FEATURES,
    SCORE_NAME,
    TARGET,
    Config,
    load_config,
)
from drs.datarules import read_dataset
from drs.files import KILL_AT_ENV_VAR, csv_files, file_sha256, pipeline_lock, read_score
from drs.history import open_history
from drs.web import factory

REPORTS = (
    fullprocess.CONFUSION_MATRIX_NAME,
    fullprocess.API_RETURNS_NAME,
    fullprocess.REPORT_NAME,
)


def fullprocess_run(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_script("fullprocess.py", "--config", str(config_path), cwd=cwd)


def assert_consistent(config: Config) -> releases.Release:
    """The deployed set is whole: every file matches the hash its manifest recorded."""
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    for name in releases.DEPLOYED_FILES:
        assert file_sha256(release.path(name)) == release.manifest["files"][name]
        assert (config.deployment_folder / name).read_bytes() == release.path(name).read_bytes()
    release.load_model()
    return release


def pipeline_runs(config: Config) -> list[dict]:
    with open_history(config) as history:
        return history.rows("SELECT * FROM pipeline_runs ORDER BY id")


@pytest.fixture(scope="module")
def bootstrapped_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after its first fullprocess run (practicedata deployed), made once."""
    root = tmp_path_factory.mktemp("bootstrapped")
    config_path = make_workspace(root / "workspace")
    result = fullprocess_run(config_path, root)
    assert result.returncode == 0, result.stderr
    return config_path.parent


@pytest.fixture
def bootstrapped(bootstrapped_once: Path, tmp_path: Path) -> Path:
    """This test's own copy of the bootstrapped workspace; returns its config path."""
    workspace = tmp_path / "workspace"
    shutil.copytree(bootstrapped_once, workspace, symlinks=True)
    return workspace / "config.json"


def test_first_run_on_fresh_checkout_deploys_and_reports(config_path: Path, tmp_path: Path) -> None:
    result = fullprocess_run(config_path, tmp_path)
    assert result.returncode == 0, result.stderr
    config = load_config(config_path)
    release = assert_consistent(config)
    assert result.stdout.startswith(f"NOTICE: first model deployed: release {release.id}; ")
    assert release.ingested_files() == ["dataset1.csv", "dataset2.csv"]
    for name in REPORTS:
        assert (config.model_folder / name).stat().st_size > 0
    returns = json.loads((config.model_folder / fullprocess.API_RETURNS_NAME).read_text())
    assert len(returns["prediction"]["predictions"]) == len(read_dataset(config.test_data_path))
    assert not (config.model_folder / "confusionmatrix.png").exists()
    assert not (config.model_folder / "apireturns.txt").exists()
    [run] = pipeline_runs(config)
    assert (run["outcome"], run["exit_code"], run["release_id"]) == (
        "first model deployed",
        0,
        release.id,
    )


def test_no_new_data_is_a_quick_no_op(bootstrapped: Path, tmp_path: Path) -> None:
    config = load_config(bootstrapped)
    before = {p: p.stat().st_mtime_ns for p in config.root.rglob("*") if p.is_file()}
    before.pop(config.history_path, None)
    result = fullprocess_run(bootstrapped, tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("NOTICE: no new data; first model deployed: release ")
    after = {p: p.stat().st_mtime_ns for p in config.root.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before} == before
    assert len(pipeline_runs(config)) == 1


def tick_in_a_new_interpreter(config_path: Path, watched: set[str], setup: str = "") -> str:
    """One fullprocess.py run in a fresh interpreter, setup run first; its stdout.

    The last line is its exit status and the watched modules it imported, sorted.
    """
    code = (
        f"import sys, fullprocess; {setup}"
        "status = fullprocess.main(['--config', sys.argv[1]]); "
        f"print(status, sorted(set({sorted(watched)!r}) & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_the_no_data_tick_imports_nothing_heavy(bootstrapped: Path, tmp_path: Path) -> None:
    heavy = {"pandas", "numpy", "sklearn", "matplotlib", "scipy", "pyarrow"}
    assert tick_in_a_new_interpreter(bootstrapped, heavy).splitlines()[-1] == "0 []"


def test_a_quiet_tick_hashes_only_files_whose_stat_changed(
    bootstrapped: Path, tmp_path: Path
) -> None:
    """The live release and the test data are hashed once; a later change is still caught."""
    watched = {"hashlib", "dataclasses", "drs.drift", "drs.modelling"}
    settled = "import drs.inputs; drs.inputs.SETTLED_NS = 0; "

    def run_tick() -> str:
        return tick_in_a_new_interpreter(bootstrapped, watched, settled)

    assert run_tick().splitlines()[-1] == "0 ['hashlib']"  # hashes once, into the index
    assert run_tick().splitlines()[-1] == "0 []"
    release = releases.current_release(load_config(bootstrapped).deployment_folder)
    assert release is not None
    with release.path(releases.MODEL_NAME).open("ab") as model:
        model.write(b"\0")
    said = run_tick()
    assert said.startswith("CRITICAL: no new data; deployment damaged: "), said
    assert said.splitlines()[-1] == "0 ['hashlib']"


def test_new_data_without_drift_keeps_the_model_then_next_tick_is_a_no_op(
    bootstrapped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(bootstrapped)
    deployed = releases.current_release(config.deployment_folder)
    assert deployed is not None
    # New clients who behave exactly as the deployed model expects: no model drift.
    newcomers = datagen.generate(300, seed=11)
    model = deployed.load_model()
    newcomers[TARGET] = model.predict(newcomers[list(FEATURES)].astype(float))
    newcomers.to_csv(config.input_folder / "dataset9.csv", index=False)

    status, line = pipeline_run(bootstrapped, capsys)
    assert status == 0, line
    assert line.startswith(
        f"NOTICE: 1 new file, no model drift; kept the deployed model; release {deployed.id} live"
    )
    assert assert_consistent(config).id == deployed.id
    runs = pipeline_runs(config)
    assert (runs[-1]["outcome"], runs[-1]["release_id"]) == ("kept the deployed model", None)
    with open_history(config) as history:
        drift_rows = history.rows("SELECT feature, value, threshold FROM data_drift")
        processed = history.rows("SELECT name FROM processed_files ORDER BY name")
    assert {row["feature"] for row in drift_rows} == set(FEATURES)
    assert "dataset9.csv" in {row["name"] for row in processed}

    status, line = pipeline_run(bootstrapped, capsys)
    assert (status, line.split(";")[0]) == (0, "NOTICE: no new data")


def test_drift_redeploys_and_reports_without_touching_the_first_runs_files(
    bootstrapped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    practice = load_config(bootstrapped)
    old = assert_consistent(practice)
    # The manual step 4 files, which fullprocess must never overwrite.
    (practice.model_folder / "confusionmatrix.png").write_bytes(b"by hand")
    (practice.model_folder / "apireturns.txt").write_text("by hand")
    first_run_files = {
        path: path.read_bytes() for path in practice.model_folder.iterdir() if path.is_file()
    }
    switch_to_source(bootstrapped)

    status, line = pipeline_run(bootstrapped, capsys)
    assert status == 0, line
    source = load_config(bootstrapped)
    new = assert_consistent(source)
    assert new.id != old.id
    assert line.startswith(
        f"NOTICE: model drift found, retrained and redeployed: release {new.id} replaces {old.id}; "
    )
    assert new.ingested_files() == ["dataset3.csv", "dataset4.csv"]
    assert new.score() == read_score(source.score_path)
    for name in REPORTS:
        assert (source.model_folder / name).stat().st_size > 0
    assert {path: path.read_bytes() for path in first_run_files} == first_run_files
    with open_history(source) as history:
        drifted = history.rows("SELECT feature FROM data_drift WHERE drifted = 1")
        checks = history.rows("SELECT f1 FROM scores WHERE purpose = 'drift-check'")
    assert drifted, "the drifted sample data shows feature drift"
    assert checks[-1]["f1"] < old.score()


def test_two_runs_at_once_deploy_once(config_path: Path, tmp_path: Path) -> None:
    command = [sys.executable, str(PROJECT / "fullprocess.py"), "--config", str(config_path)]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    outputs = [process.communicate(timeout=120)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0]
    config = load_config(config_path)
    assert len(releases.list_releases(config.deployment_folder)) == 1
    [deployed] = [output for output in outputs if "first model deployed" in output]
    [skipped] = [output for output in outputs if output is not deployed]
    assert deployed.startswith("NOTICE: first model deployed: release ")
    assert not skipped.startswith("CRITICAL"), "another run at work is nothing to alarm about"
    # A run takes seconds and both started together: the second found the lock held.
    assert "skipped: another run (fullprocess.py, or a step run by hand) holds the lock" in skipped


def test_a_failure_after_deploying_exits_2_and_the_next_run_reports(
    bootstrapped: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    switch_to_source(bootstrapped)
    config = load_config(bootstrapped)

    def prune(deployment_folder: Path, keep: int) -> None:
        raise PermissionError(13, "Permission denied", str(deployment_folder / "releases"))

    monkeypatch.setattr(releases, "prune", prune)
    assert fullprocess.run(config) == outcome.EXIT_FAILED_AFTER_DEPLOYMENT
    monkeypatch.undo()
    release = assert_consistent(config)
    assert release.ingested_files() == ["dataset3.csv", "dataset4.csv"]
    [*_, failed] = pipeline_runs(config)
    assert (failed["outcome"], failed["exit_code"], failed["release_id"]) == (
        "failed",
        2,
        release.id,
    )
    assert json.loads(failed["detail_json"])["step"] == "deployment"
    assert not (config.model_folder / fullprocess.REPORT_NAME).exists()

    status, line = pipeline_run(bootstrapped, capsys)
    assert status == 0
    assert line.startswith(
        "NOTICE: reports caught up; model drift found, retrained and redeployed: "
        f"release {release.id}"
    )
    for name in REPORTS:
        assert (config.model_folder / name).stat().st_size > 0
    status, line = pipeline_run(bootstrapped, capsys)
    assert (status, line.split(";")[0]) == (0, "NOTICE: no new data")


def test_a_running_api_that_refuses_the_call_is_passed_over(
    bootstrapped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API that wants a token cron does not have: the temporary API answers instead."""
    config = load_config(bootstrapped)
    monkeypatch.setenv(API_TOKEN_ENV_VAR, "only-the-api-knows")
    guarded = factory.create_app(config)
    monkeypatch.delenv(API_TOKEN_ENV_VAR)
    with factory.serve_on_loopback(guarded) as url:
        raw = json.loads(bootstrapped.read_text())
        raw.update(api_url=url)
        bootstrapped.write_text(json.dumps(raw))
        switch_to_source(bootstrapped)
        result = fullprocess_run(bootstrapped, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the running API failed" in result.stderr and "HTTP 401" in result.stderr
    returns = json.loads((config.root / "models" / fullprocess.API_RETURNS_NAME).read_text())
    assert returns["api_url"] != raw["api_url"]
    assert returns["scoring"]["release_id"] == assert_consistent(config).id


def test_drift_is_not_measured_against_data_that_already_holds_the_new_files(
    bootstrapped: Path, tmp_path: Path
) -> None:
    """A run killed after ingesting left finaldata.csv with the new files in it."""
    switch_to_source(bootstrapped)
    config = load_config(bootstrapped)
    ingestion.run(config)  # what the killed run got done
    result = fullprocess_run(bootstrapped, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data drift not measured: the training data of release" in result.stderr
    assert "is no longer in sourcedata or finaldata.csv" in result.stderr
    with open_history(config) as history:
        assert history.rows("SELECT * FROM data_drift") == []


def test_a_held_lock_makes_a_run_exit_at_once(config_path: Path, tmp_path: Path) -> None:
    config = load_config(config_path)
    with pipeline_lock(config) as held:
        assert held
        result = fullprocess_run(config_path, tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(
        "WARNING: skipped: another run (fullprocess.py, or a step run by hand) holds the lock; "
        "no model deployed yet; action: Run fullprocess.py"
    )
    assert releases.current_release(config.deployment_folder) is None


def killed_run(snapshot: Path, workspace: Path, boundary: int) -> int:
    """A drift run in a copy of snapshot, SIGKILLed at its boundary-th file boundary.

    Returns its exit status: -SIGKILL, or 0 when it passed every boundary (there was no
    boundary-th one).
    """
    shutil.copytree(snapshot, workspace, symlinks=True)
    killed = run_script(
        "fullprocess.py",
        "--config",
        str(workspace / "config.json"),
        cwd=workspace.parent,
        env={KILL_AT_ENV_VAR: str(boundary)},
    )
    assert killed.returncode in {0, -signal.SIGKILL}, killed.stderr
    return killed.returncode


def recovered(workspace: Path, old: str, capsys: pytest.CaptureFixture[str]) -> bool:
    """Check what a kill left and that the next run completes the work (in this process).

    Returns whether the killed run had already made its release live.
    """
    config = load_config(workspace / "config.json")
    left = assert_consistent(config)
    if config.final_data_path.exists():
        read_dataset(config.final_data_path)
    assert integrity(config.history_path) == "ok"
    status, line = pipeline_run(config.path, capsys)
    assert status == 0, f"after a kill in {workspace.name}: {line}"
    new = assert_consistent(config)
    assert new.id != old
    assert new.ingested_files() == ["dataset3.csv", "dataset4.csv"]
    for name in REPORTS:
        assert (config.model_folder / name).stat().st_size > 0
    assert pipeline_runs(config)[-1]["outcome"] in {"redeployed", "reports caught up"}
    assert not list(config.model_folder.glob(".*.tmp")), "temporaries of the kill are gone"
    shutil.rmtree(workspace)
    return left.id != old


def integrity(history_path: Path) -> str:
    with contextlib.closing(sqlite3.connect(history_path)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.slow
def test_a_kill_at_every_file_boundary_of_a_drift_run_leaves_a_consistent_state(
    bootstrapped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL a drift run at its 1st, 2nd, ... file replace, rename or unlink, until one ends.

    After each kill the deployment is one whole set, finaldata.csv parses, the history
    passes its integrity check, and the next run completes the work. The killed runs
    are real processes, two at a time (the machine has two cores); each next run is
    checked here, in this process, meanwhile.
    """
    switch_to_source(bootstrapped)
    old = assert_consistent(load_config(bootstrapped)).id
    left_deployed: dict[int, bool] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = {}
        for boundary in itertools.count(1):
            workspace = tmp_path / f"kill{boundary}"
            running[boundary] = (
                workspace,
                pool.submit(killed_run, bootstrapped.parent, workspace, boundary),
            )
            if len(running) < 2:
                continue
            first = min(running)
            workspace, killed = running.pop(first)
            if killed.result() == 0:
                for _, later in running.values():
                    later.result()
                break
            left_deployed[first] = recovered(workspace, old, capsys)
    assert len(left_deployed) > 10, "a drift run passes more boundaries than that"
    assert set(left_deployed.values()) == {False, True}, "kills before and after the switch"


def test_the_log_file_rotates_so_its_size_stays_bounded(tmp_path: Path) -> None:
    code = (
        "import logging, sys; from pathlib import Path; import fullprocess; "
        "from drs.cli import configure_logging; "
        "configure_logging(); fullprocess.LOG_FILE_BYTES = 2000; "
        "fullprocess.log_to_file(Path(sys.argv[1])); "
        "[logging.getLogger('tick').info('line %d %s', n, 'x' * 50) for n in range(1000)]"
    )
    log = tmp_path / "logs" / "fullprocess.log"
    subprocess.run([sys.executable, "-c", code, str(log)], cwd=PROJECT, check=True, timeout=60)
    kept = sorted(path.name for path in log.parent.iterdir())
    backups = [f"fullprocess.log.{n}" for n in range(1, fullprocess.LOG_FILE_BACKUPS + 1)]
    assert kept == ["fullprocess.log", *backups]
    assert all((log.parent / name).stat().st_size <= 2000 for name in kept)
    assert log.read_text().splitlines()[-1].endswith("INFO tick: line 999 " + "x" * 50)


def test_cron_line_runs_from_root_with_a_bare_environment(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for script in PROJECT.glob("*.py"):
        shutil.copy(script, checkout)
    shutil.copytree(PROJECT / "drs", checkout / "drs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "requirements.txt", checkout)
    make_workspace(checkout)
    (checkout / "config.json").write_text(
        (checkout / "config.json").read_text().replace("}", ', "api_url": "http://127.0.0.1:9"}')
    )
    line = next(
        line
        for line in (PROJECT / "cronjob.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    fields = line.split(maxsplit=5)
    assert fields[:5] == ["*/10", "*", "*", "*", "*"]
    command = fields[5].replace("@CHECKOUT@", str(checkout)).replace("@VENV@", sys.prefix)
    bare = {"PATH": "/usr/bin:/bin", diagnosis.PACKAGE_INDEX_ENV_VAR: OFFLINE_INDEX_URL}
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        check=False,
        cwd="/",
        env=bare,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    log = (checkout / "logs" / "fullprocess.log").read_text()
    assert "first model deployed: release " in log
    assert (checkout / "practicemodels" / fullprocess.REPORT_NAME).exists()
    subprocess.run(["/bin/sh", "-c", command], cwd="/", env=bare, check=True, timeout=60)
    last = (checkout / "logs" / "fullprocess.log").read_text().splitlines()[-1]
    assert "INFO fullprocess: NOTICE: no new data; " in last
    assert last.endswith("; exit 0")


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
            return sorted(path.name for path in inputs.find_new_files(config, history, None))

        assert new() == ["dataset1.csv", "dataset2.csv"]
        inputs.mark_processed(history, config, files, run_id=1)
        assert new() == []
        inputs.mark_processed(history, config, {"dataset1.csv": files["dataset1.csv"]}, 2)
        assert new() == ["dataset2.csv"]


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
