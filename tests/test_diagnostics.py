"""diagnostics.py: numbers against pandas and the deployed model, timings that change nothing,
package versions without a network, and the command line."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from helpers import assert_one_line_failure, deploy_workspace, run_script

from drs import diagnosis, releases
from drs.config import CONFIG_ENV_VAR, FEATURES, MODEL_NAME, TARGET, Config
from drs.errors import DataError, PipelineError
from drs.history import open_history
from drs.modelling import ModelIntegrityError

BLANKS_CSV = """corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited
abcd,10,120,5,0
,20,,7,1
efgh,,300,,0
ijkl,40,480,9,
mnop,50,600,,1
qrst,0,0,3,0
"""


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under root with its SHA-256 (or link target): a byte-level snapshot."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            snapshot[key] = "link -> " + os.readlink(path)
        elif path.is_file():
            snapshot[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            snapshot[key] = "folder"
    return snapshot


def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return deploy_workspace(tmp_path_factory.mktemp("diagnostics") / "workspace", rows=400)


@pytest.fixture
def blanks(config: Config) -> Config:
    """A workspace whose finaldata.csv has blank cells in every column."""
    config.output_folder.mkdir(parents=True, exist_ok=True)
    config.final_data_path.write_text(BLANKS_CSV)
    return config


def test_summary_matches_pandas_on_a_table_with_blanks(blanks: Config) -> None:
    expected = pd.read_csv(blanks.final_data_path)
    summary = diagnosis.dataframe_summary(blanks)
    assert set(summary) == {*FEATURES, TARGET}
    for column, stats in summary.items():
        assert stats["mean"] == pytest.approx(expected[column].mean())
        assert stats["median"] == pytest.approx(expected[column].median())
        assert stats["std"] == pytest.approx(expected[column].std())  # sample std, ddof=1
    assert summary["lastmonth_activity"] == pytest.approx(
        {"mean": 24.0, "median": 20.0, "std": expected["lastmonth_activity"].std()}
    )


def test_missing_percentages_match_pandas_on_a_table_with_blanks(blanks: Config) -> None:
    expected = (pd.read_csv(blanks.final_data_path).isna().mean() * 100).to_dict()
    missing = diagnosis.missing_data(blanks)
    assert missing == pytest.approx(expected)
    assert missing["corporation"] == pytest.approx(100 / 6)
    assert missing["number_of_employees"] == pytest.approx(200 / 6)


def test_summary_is_json_safe_when_a_statistic_is_undefined(config: Config) -> None:
    config.output_folder.mkdir(parents=True, exist_ok=True)
    config.final_data_path.write_text(BLANKS_CSV.splitlines()[0] + "\nabcd,1,,3,0\n")
    summary = diagnosis.dataframe_summary(config)
    assert summary["lastmonth_activity"] == {"mean": 1.0, "median": 1.0, "std": None}
    assert summary["lastyear_activity"] == {"mean": None, "median": None, "std": None}
    json.dumps(summary, allow_nan=False)


def test_summary_without_finaldata_names_the_file(config: Config) -> None:
    with pytest.raises(DataError, match=r"finaldata\.csv: not found"):
        diagnosis.missing_data(config)


def test_config_defaults_to_drs_config(blanks: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(blanks.path))
    assert diagnosis.missing_data() == diagnosis.missing_data(blanks)


def test_predictions_are_the_deployed_models(deployed: Config) -> None:
    data = pd.read_csv(deployed.test_data_path).sample(frac=1.0, random_state=7)
    data.loc[data.index[:5], "lastyear_activity"] = None  # blanks are predicted too
    with open(deployed.deployment_folder / "current" / MODEL_NAME, "rb") as handle:
        model = pickle.load(handle)
    expected = model.predict(data[list(FEATURES)]).tolist()

    predictions = diagnosis.model_predictions(data, deployed)

    assert predictions == expected
    assert len(predictions) == len(data)
    assert {type(p) for p in predictions} == {int}
    assert set(predictions) == {0, 1}


def test_predictions_of_an_empty_table_are_empty(deployed: Config) -> None:
    assert diagnosis.model_predictions(pd.DataFrame(columns=list(FEATURES)), deployed) == []


def test_predictions_refuse_a_tampered_model(deployed: Config, tmp_path: Path) -> None:
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None
    model_file = release.path(MODEL_NAME)
    original = model_file.read_bytes()
    try:
        model_file.write_bytes(original + b"\0")
        with pytest.raises(ModelIntegrityError, match="does not match"):
            diagnosis.model_predictions(pd.read_csv(deployed.test_data_path), deployed)
    finally:
        model_file.write_bytes(original)


def test_predictions_with_nothing_deployed_say_so(config: Config) -> None:
    with pytest.raises(diagnosis.NothingDeployedError, match="no model deployed") as caught:
        diagnosis.model_predictions(pd.read_csv(config.test_data_path), config)
    assert isinstance(caught.value, PipelineError)
    assert str(config.deployment_folder) in str(caught.value)


def test_execution_time_leaves_every_real_file_byte_identical(
    deployed: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert deployed.history_path.is_file()
    before = tree_digest(deployed.root)

    timings = diagnosis.execution_time(deployed)

    assert tree_digest(deployed.root) == before
    assert set(timings) == {"ingestion.py", "training.py"}
    assert all(isinstance(s, float) and s > 0 for s in timings.values())
    assert list(scratch.iterdir()) == []  # the throw-away copy is gone


def test_workspaces_of_killed_runs_are_removed_and_live_ones_kept(
    deployed: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    abandoned = tmp_path / f"{diagnosis.TIMING_PREFIX}{finished.stdout.strip()}-x1"
    live = tmp_path / f"{diagnosis.TIMING_PREFIX}{os.getppid()}-x2"  # pytest's parent shell
    unrelated = tmp_path / "drs-timing-notes"
    for folder in (abandoned, live, unrelated):
        (folder / "input").mkdir(parents=True)

    diagnosis.execution_time(deployed)

    assert sorted(tmp_path.iterdir()) == [live, unrelated]


def test_execution_time_reports_a_failing_script(config: Config) -> None:
    for path in config.input_folder.glob("*.csv"):
        path.write_text("not,a,dataset\n1,2,3\n")
    with pytest.raises(diagnosis.DiagnosticsError, match=r"ingestion\.py failed .*no valid CSV"):
        diagnosis.execution_time(config)


def requirements_file(folder: Path) -> Path:
    path = folder / "requirements.txt"
    path.write_text(
        "# a comment\n\npandas==3.1.1\nrequests[socks]==2.34.2  # why\n"
        "# Development tools\nno-such-package-xyz==1.0\nunpinned-package>=1\n"
    )
    return path


def test_outdated_packages_compare_required_installed_and_latest(tmp_path: Path) -> None:
    latest = {"pandas": "999.0", "requests": "0.1"}

    def fetch(name: str, index_url: str, timeout: float) -> str:
        if name not in latest:
            raise LookupError("not found on the package index")
        return latest[name]

    answer = diagnosis.outdated_packages_list(fetch=fetch, requirements=requirements_file(tmp_path))

    assert answer == [
        {
            "name": "pandas",
            "required": "3.1.1",
            "installed": metadata.version("pandas"),
            "role": "runtime",
            "latest": "999.0",
            "outdated": True,
            "reason": None,
        },
        {
            "name": "requests",
            "required": "2.34.2",
            "installed": metadata.version("requests"),
            "role": "runtime",
            "latest": "0.1",
            "outdated": False,
            "reason": None,
        },
        {
            "name": "no-such-package-xyz",
            "required": "1.0",
            "installed": None,
            "role": "development",
            "latest": None,
            "outdated": None,
            "reason": "not found on the package index",
        },
    ]


def test_outdated_packages_answer_when_the_index_cannot_be_reached(tmp_path: Path) -> None:
    def offline(name: str, index_url: str, timeout: float) -> str:
        raise requests.ConnectionError("[Errno 101] Network is unreachable")

    answer = diagnosis.outdated_packages_list(
        fetch=offline, requirements=requirements_file(tmp_path)
    )
    assert [p["name"] for p in answer] == ["pandas", "requests", "no-such-package-xyz"]
    assert answer[0]["installed"] == metadata.version("pandas")
    for package in answer:
        assert package["latest"] is None
        assert package["outdated"] is None
        assert package["reason"].startswith("package index unreachable")
        assert "Network is unreachable" in package["reason"]


def test_outdated_packages_with_a_closed_loopback_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    url = f"http://127.0.0.1:{closed_port()}/pypi"
    answer = diagnosis.outdated_packages_list(
        index_url=url, timeout=5, requirements=requirements_file(tmp_path)
    )
    assert {p["reason"] for p in answer} == {
        f"package index unreachable: {url}: Connection refused"
    }


def test_the_index_is_chosen_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: set[str] = set()

    def fetch(name: str, index_url: str, timeout: float) -> str:
        asked.add(index_url)
        return "1.0"

    requirements = requirements_file(tmp_path)
    monkeypatch.setenv(diagnosis.PACKAGE_INDEX_ENV_VAR, "http://mirror.invalid/pypi")
    diagnosis.outdated_packages_list(fetch=fetch, requirements=requirements)
    monkeypatch.delenv(diagnosis.PACKAGE_INDEX_ENV_VAR)
    diagnosis.outdated_packages_list(fetch=fetch, requirements=requirements)
    assert asked == {"http://mirror.invalid/pypi", diagnosis.PACKAGE_INDEX_URL}


def test_outdated_packages_stop_waiting_for_a_silent_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/pypi"
        answer = diagnosis.outdated_packages_list(
            index_url=url, timeout=0.5, requirements=requirements_file(tmp_path)
        )
    for package in answer:
        assert package["latest"] is None
        assert "did not answer in time" in package["reason"] or "no answer" in package["reason"]


def test_outdated_packages_cover_the_projects_requirements() -> None:
    def offline(name: str, index_url: str, timeout: float) -> str:
        raise OSError("offline")

    names = [p["name"] for p in diagnosis.outdated_packages_list(fetch=offline)]
    assert {"pandas", "scikit-learn", "flask", "matplotlib", "requests"} <= set(names)


def stub_slow_parts(monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list]:
    timings = {"ingestion.py": 0.5, "training.py": 1.25}
    packages = [
        {
            "name": "flask",
            "required": "3.1.3",
            "installed": "3.1.3",
            "latest": "9.0",
            "outdated": True,
            "reason": None,
        }
    ]
    monkeypatch.setattr(diagnosis, "execution_time", lambda config: dict(timings))
    monkeypatch.setattr(
        diagnosis, "outdated_packages_list", lambda config, timeout, url: list(packages)
    )
    return timings, packages


def test_run_answers_all_five_and_records_the_run(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings, packages = stub_slow_parts(monkeypatch)
    with open_history(deployed) as history:
        before = history.rows("SELECT count(*) AS n FROM diagnostics")[0]["n"]

    result = diagnosis.run(deployed)

    test_rows = len(pd.read_csv(deployed.test_data_path))
    assert len(result["model_predictions"]) == test_rows
    assert result["dataframe_summary"] == diagnosis.dataframe_summary(deployed)
    assert result["missing_data"] == diagnosis.missing_data(deployed)
    assert result["execution_time"] == timings
    assert result["outdated_packages"] == packages
    with open_history(deployed) as history:
        rows = history.rows("SELECT recorded_at, payload_json FROM diagnostics ORDER BY id")
    assert len(rows) == before + 1
    payload = json.loads(rows[-1]["payload_json"])
    assert payload["model_predictions"] == {
        "dataset": str(deployed.test_data_path),
        "rows": test_rows,
        "predicted_exits": sum(result["model_predictions"]),
    }
    assert payload["execution_time"] == timings
    assert rows[-1]["recorded_at"].endswith("Z")
    recorded = diagnosis.latest_recorded(deployed)
    assert recorded is not None
    assert recorded["outdated_packages"] == packages


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_command_line_prints_json_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"http://127.0.0.1:{closed_port()}/pypi"

    done = run_script(
        "diagnostics.py",
        "--config",
        str(config.path),
        "--index-url",
        url,
        cwd=elsewhere,
        env={"NO_PROXY": "127.0.0.1,localhost"},
    )

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {
        "model_predictions",
        "dataframe_summary",
        "missing_data",
        "execution_time",
        "outdated_packages",
    }
    assert len(answer["model_predictions"]) == len(pd.read_csv(config.test_data_path))
    assert set(answer["execution_time"]) == {"ingestion.py", "training.py"}
    assert all(is_finite_number(s) for s in answer["execution_time"].values())
    assert all(
        p["latest"] is None and "unreachable" in p["reason"] for p in answer["outdated_packages"]
    )
    assert list(elsewhere.iterdir()) == []
    lines = done.stdout.splitlines()
    assert len(lines) <= 60, "the predictions on one line, a line a package"
    assert lines[1].startswith('  "model_predictions": [')
    summary = run_script(
        "diagnostics.py",
        "--config",
        str(config.path),
        "--index-url",
        url,
        "--summary",
        cwd=elsewhere,
    )
    assert summary.returncode == 0, summary.stderr
    predictions, timings, missing, packages = summary.stdout.splitlines()
    exits = sum(answer["model_predictions"])
    rows = len(answer["model_predictions"])
    assert predictions == (
        f"predictions: {rows:,} rows of the test data, {exits:,} predicted to exit "
        f"({exits / rows:.1%})"
    )
    assert timings.startswith("timings: ingestion.py ") and " s, training.py " in timings
    assert missing == "missing values: none"
    assert packages.startswith(f"packages: {len(answer['outdated_packages'])} pinned, 0 outdated")


def test_a_run_waits_a_second_at_most_for_the_index_and_remembers_the_answer_a_day(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []
    real = diagnosis.outdated_packages_list

    def ask(cfg: Config, timeout: float) -> list[dict[str, Any]]:
        asked.append(timeout)
        return real(cfg, timeout)

    monkeypatch.setattr(diagnosis, "outdated_packages_list", ask)
    answer = diagnosis.package_check(config)  # the closed loopback index of the tests
    assert asked == [diagnosis.CHECK_INDEX_TIMEOUT_S] and diagnosis.CHECK_INDEX_TIMEOUT_S <= 1.0
    assert all("unreachable" in package["reason"] for package in answer)
    diagnosis.record(config, {"execution_time": {}, "outdated_packages": answer})
    assert diagnosis.package_check(config) == answer
    assert len(asked) == 1, "the answer, even 'unreachable', is remembered"
    with open_history(config) as history:  # a day later: asked again
        history.execute("UPDATE diagnostics SET recorded_at = '2020-01-01T00:00:00.000Z'")
    diagnosis.package_check(config)
    assert len(asked) == 2


def test_command_line_with_nothing_deployed_fails_in_one_line(
    config_path: Path, tmp_path: Path
) -> None:
    done = run_script("diagnostics.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(done, "no model deployed yet")
