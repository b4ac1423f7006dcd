"""load_config: which file, how folders resolve, and one clear error per mistake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers import (
    CONFIG,
    assert_one_line_failure,
    change_config,
    run_script,
)

import drs.config
import drs.history
from drs.config import (
    CONFIG_ENV_VAR,
    FOLDER_KEYS,
    config_path_from,
    load_config,
)
from drs.errors import ConfigError


def write_config(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_relative_folders_resolve_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "project", {**CONFIG, "output_model_path": "../models"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config("../project/config.json")
    root = (tmp_path / "project").resolve()
    assert config.path == root / "config.json"
    assert config.root == root
    assert config.input_folder == root / "practicedata"
    assert config.output_folder == root / "ingesteddata"
    assert config.test_data_folder == root / "testdata"
    assert config.model_folder == tmp_path.resolve() / "models"
    assert config.deployment_folder == root / "production_deployment"
    assert config.final_data_path == root / "ingesteddata" / "finaldata.csv"
    assert config.ingested_record_path == root / "ingesteddata" / "ingestedfiles.txt"
    assert config.model_path == tmp_path.resolve() / "models" / "trainedmodel.pkl"
    assert config.score_path == tmp_path.resolve() / "models" / "latestscore.txt"
    assert config.test_data_path == root / "testdata" / "testdata.csv"


def test_absolute_folders_are_kept(tmp_path: Path) -> None:
    elsewhere = (tmp_path / "data" / "incoming").resolve()
    config = load_config(
        write_config(tmp_path / "p", {**CONFIG, "input_folder_path": str(elsewhere)})
    )
    assert config.input_folder == elsewhere


def test_optional_keys_have_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, CONFIG))
    assert config.history_path == tmp_path.resolve() / "history.sqlite"
    assert (config.drift_test, config.api_url, config.deployments_kept) == (
        "raw",
        "http://127.0.0.1:8000",
        5,
    )
    custom = {
        **CONFIG,
        "history_path": "records/runs.sqlite",
        "drift_test": "nonparametric",
        "api_url": "http://127.0.0.1:9000/",
        "deployments_kept": 3,
    }
    config = load_config(write_config(tmp_path / "custom", custom))
    assert config.history_path == (tmp_path / "custom" / "records" / "runs.sqlite").resolve()
    assert (config.drift_test, config.api_url, config.deployments_kept) == (
        "nonparametric",
        "http://127.0.0.1:9000",
        3,
    )


def test_explicit_path_then_drs_config_then_the_config_beside_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write_config(tmp_path / "explicit", CONFIG)
    from_env = write_config(tmp_path / "env", CONFIG)
    beside = write_config(tmp_path / "beside", CONFIG)
    monkeypatch.setattr(drs.config, "DEFAULT_CONFIG_PATH", beside)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert load_config().path == beside.resolve()
    monkeypatch.setenv(CONFIG_ENV_VAR, str(from_env))
    assert load_config().path == from_env.resolve()
    assert load_config(explicit).path == explicit.resolve()
    assert load_config(str(explicit)).path == explicit.resolve()


def test_the_shipped_default_is_the_config_beside_the_scripts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert config_path_from() == Path(drs.config.__file__).resolve().parent.parent / "config.json"


@pytest.mark.parametrize("key", FOLDER_KEYS)
def test_each_missing_key_is_named(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path, {k: v for k, v in CONFIG.items() if k != key})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path.resolve()}: missing key '{key}'"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_folder_path": 3}, "key 'input_folder_path' must be a non-empty string"),
        ({"output_folder_path": ""}, "key 'output_folder_path' must be a non-empty string"),
        ({"test_data_path": None}, "key 'test_data_path' must be a non-empty string"),
        ({"prod_deployment_path": ["a"]}, "key 'prod_deployment_path' must be a non-empty"),
        ({"history_path": 1}, "key 'history_path' must be a non-empty string"),
        ({"drift_test": 3}, "key 'drift_test' must be the name of a drift test"),
        ({"api_url": "127.0.0.1:8000"}, "key 'api_url' must be an http:// or https:// URL"),
        ({"deployments_kept": 1}, "key 'deployments_kept' must be a whole number >= 2"),
        ({"deployments_kept": "5"}, "key 'deployments_kept' must be a whole number >= 2"),
        ({"deployments_kept": True}, "key 'deployments_kept' must be a whole number >= 2"),
    ],
)
def test_a_wrong_type_or_value_names_file_and_key(
    tmp_path: Path, change: dict, message: str
) -> None:
    path = write_config(tmp_path, {**CONFIG, **change})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path.resolve()}: {message}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"input_folder_path": "a",', "not valid JSON (line 1"),
        ("", "not valid JSON (line 1"),
        ('["input_folder_path"]', "expected a JSON object with keys input_folder_path"),
        (b"\xff\xfe{}", "cannot read config file"),
    ],
)
def test_an_unreadable_file_names_the_file(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


def test_a_missing_file_or_a_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nothing.json")
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot read config file"):
        load_config(tmp_path)


def test_unknown_keys_are_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path, {**CONFIG, "input_folder": "typo"})
    config = load_config(path)
    assert config.input_folder == tmp_path.resolve() / "practicedata"
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert "ignoring unknown key(s) 'input_folder'" in caplog.text


PATH_KEYS = (*FOLDER_KEYS, "history_path")


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("data\0more", "holds a NUL character, which no path can"),
        ("x" * 300, "has a folder or file name 300 bytes long; the file system takes up to 255"),
        ("/".join(["y" * 200] * 25), "bytes long; paths must be under 4,096"),
        ("\udc80\ud800", "is not text the file system can store"),
    ],
)
def test_a_path_no_file_system_takes_is_a_one_line_config_error(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    """These gave a traceback (a NUL) or one at the app's start (an over-long history_path)."""
    path = write_config(tmp_path, {**CONFIG, key: value})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path.resolve()}: key '{key}' ")
    assert problem in str(error.value)
    assert "\n" not in str(error.value)


def test_a_config_path_with_a_nul_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="not a usable config file path"):
        load_config("config\0.json")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "400", 36_501])
def test_history_days_must_be_a_whole_number_of_days(tmp_path: Path, value: object) -> None:
    path = write_config(tmp_path, {**CONFIG, "history_days": value})
    with pytest.raises(ConfigError, match="key 'history_days' must be a whole number of days"):
        load_config(path)
    assert load_config(write_config(tmp_path, {**CONFIG, "history_days": 30})).history_days == 30


@pytest.mark.parametrize(
    "key", ["output_folder_path", "test_data_path", "output_model_path", "prod_deployment_path"]
)
def test_a_folder_shared_with_the_input_folder_is_a_config_error(
    config_path: Path, tmp_path: Path, key: str
) -> None:
    change_config(config_path.parent, **{key: "./practicedata/"})
    result = run_script("ingestion.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, f"keys 'input_folder_path' and '{key}' name the same folder")


@pytest.mark.parametrize(
    ("first", "second"),
    [("output_folder_path", "prod_deployment_path"), ("output_model_path", "prod_deployment_path")],
)
def test_folders_whose_files_would_collide_are_refused(
    config_path: Path, first: str, second: str
) -> None:
    change_config(config_path.parent, **{first: "same", second: "same"})
    with pytest.raises(ConfigError, match=f"keys '{first}' and '{second}' name the same"):
        load_config(config_path)
