"""The config file: its lookup, its keys and their defaults, the names of the files passed on."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from drs.errors import ConfigError, PipelineError

logger = logging.getLogger(__name__)


PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_DIR / "config.json"
CONFIG_ENV_VAR = "DRS_CONFIG"
# When set, the API (app.py) requires it as a bearer token and apicalls.py sends it.
API_TOKEN_ENV_VAR = "DRS_API_TOKEN"  # noqa: S105 (the name of a variable, not a secret)

ID_COLUMN = "corporation"
# The longest client id the data rules accept: an id must fit in a page's address.
MAX_ID_CHARS = 200
FEATURES = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
TARGET = "exited"
COLUMNS = (ID_COLUMN, *FEATURES, TARGET)
# The most clients one ranked list holds: the API's ?top=, apicalls.py --top, the page.
MAX_TOP = 1_000

FINAL_DATA_NAME = "finaldata.csv"
INGESTED_RECORD_NAME = "ingestedfiles.txt"
MODEL_NAME = "trainedmodel.pkl"
SCORE_NAME = "latestscore.txt"
TEST_DATA_NAME = "testdata.csv"
# Beside the model and the score: what the model was trained on, what the score was
# computed on. They let deployment.py refuse a set whose files belong to different runs.
MODEL_CARD_NAME = "trainedmodel.json"
SCORE_CARD_NAME = "latestscore.json"
LOCK_NAME = ".pipeline.lock"

FOLDER_KEYS = (
    "input_folder_path",
    "output_folder_path",
    "test_data_path",
    "output_model_path",
    "prod_deployment_path",
)
HISTORY_SUFFIXES = (".sqlite", ".sqlite3", ".db")
# Run details older than this many days are pruned to daily aggregates (drs.retention).
DEFAULT_HISTORY_DAYS = 400
# Optional keys and their defaults; README.md documents each.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "history_path": "history.sqlite",
    "drift_test": "raw",  # a DriftTest
    "api_url": "http://127.0.0.1:8000",
    "deployments_kept": 5,
    "lock_wait_seconds": 60,
    "alert_command": None,
    "risk_bands": {"high": 0.5, "medium": 0.25},
    "newest_files": None,
    "stage_retrained": False,
    "history_days": DEFAULT_HISTORY_DAYS,
}
# The longest path the file system takes, and the longest name of one of its parts (bytes).
PATH_MAX_BYTES = 4096
NAME_MAX_BYTES = 255


class DriftTest(StrEnum):
    """The model-drift tests the key drift_test may name; drs.drift holds what each does."""

    RAW = "raw"  # the course's: any F1 below the deployed model's
    PARAMETRIC = "parametric"
    NONPARAMETRIC = "nonparametric"
    EXPECTED = "expected"


class Config(NamedTuple):
    """The resolved config: every folder absolute, anchored at the config file's folder.

    A NamedTuple rather than a dataclass: importing dataclasses (and inspect with it)
    would be a tenth of the cron tick's start-up.
    """

    path: Path
    input_folder: Path
    output_folder: Path
    test_data_folder: Path
    model_folder: Path
    deployment_folder: Path
    history_path: Path
    drift_test: str = DriftTest.RAW  # checked by check_drift_test on every run
    api_url: str = "http://127.0.0.1:8000"
    deployments_kept: int = 5
    lock_wait_s: float = 60.0
    alert_command: str | None = None
    risk_bands: tuple[float, float] = (0.5, 0.25)  # (high from, medium from)
    newest_files: int | None = None  # a retraining window of the newest N files
    stage_retrained: bool = False  # a retrained model waits for deployment.py --promote
    history_days: int = DEFAULT_HISTORY_DAYS  # run details older than this become daily aggregates

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def final_data_path(self) -> Path:
        return self.output_folder / FINAL_DATA_NAME

    @property
    def ingested_record_path(self) -> Path:
        return self.output_folder / INGESTED_RECORD_NAME

    @property
    def model_path(self) -> Path:
        return self.model_folder / MODEL_NAME

    @property
    def model_card_path(self) -> Path:
        return self.model_folder / MODEL_CARD_NAME

    @property
    def score_path(self) -> Path:
        return self.model_folder / SCORE_NAME

    @property
    def score_card_path(self) -> Path:
        return self.model_folder / SCORE_CARD_NAME

    @property
    def test_data_path(self) -> Path:
        return self.test_data_folder / TEST_DATA_NAME

    @property
    def lock_path(self) -> Path:
        return self.deployment_folder / LOCK_NAME

    @property
    def data_folders(self) -> tuple[Path, ...]:
        """Folders a client may name a dataset in (the API confines paths to these)."""
        return (self.input_folder, self.output_folder, self.test_data_folder)

    def output_file(self, name: str) -> Path:
        """A report or answer file named by the user: a plain file name in output_model_path."""
        if not name or Path(name).name != name or name in {".", ".."}:
            raise PipelineError(f"output name {name!r}: expected a plain file name, not a path")
        return self.model_folder / name


def check_drift_test(config: Config) -> None:
    """The configured drift_test names a DriftTest; ConfigError if not."""
    if config.drift_test not in {test.value for test in DriftTest}:
        raise ConfigError(
            f"{config.path}: key 'drift_test' must be one of {', '.join(DriftTest)}"
            f" (found {config.drift_test!r})"
        )


def config_path_from(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Which config file to use: the explicit path, then $DRS_CONFIG, then config.json here."""
    chosen = explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(chosen).expanduser().resolve()


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file; raises ConfigError naming the file and the key."""
    path, raw = _read_config_file(explicit)
    options = _options(path, raw)
    bands = _risk_bands(path, options["risk_bands"])
    folders = {key: _folder(path, key, raw[key]) for key in FOLDER_KEYS}
    _refuse_overlaps(path, folders)
    config = Config(
        path=path,
        input_folder=folders["input_folder_path"],
        output_folder=folders["output_folder_path"],
        test_data_folder=folders["test_data_path"],
        model_folder=folders["output_model_path"],
        deployment_folder=folders["prod_deployment_path"],
        history_path=_folder(path, "history_path", options["history_path"]),
        drift_test=options["drift_test"],
        api_url=options["api_url"].rstrip("/"),
        deployments_kept=options["deployments_kept"],
        lock_wait_s=float(options["lock_wait_seconds"]),
        alert_command=options["alert_command"],
        risk_bands=bands,
        newest_files=options["newest_files"],
        stage_retrained=options["stage_retrained"],
        history_days=options["history_days"],
    )
    _check_history_path(config)
    return config


def _read_config_file(explicit: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Any]]:
    """The config file's path and its JSON object; ConfigError for a file that is not one."""
    try:
        path = config_path_from(explicit)
    except (OSError, ValueError, RuntimeError) as error:
        shown = explicit or os.environ.get(CONFIG_ENV_VAR)
        raise ConfigError(f"{shown!r}: not a usable config file path ({error})") from None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file ({error})") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object with keys {', '.join(FOLDER_KEYS)}")
    return path, raw


def _options(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The optional keys with their defaults filled in, each checked by its rule.

    A missing folder key is refused first; an unknown key is only warned about.
    """
    for key in FOLDER_KEYS:
        if key not in raw:
            raise ConfigError(f"{path}: missing key '{key}'")
    unknown = sorted(set(raw) - set(FOLDER_KEYS) - set(OPTIONAL_DEFAULTS))
    if unknown:
        logger.warning("%s: ignoring unknown key(s) %s", path, ", ".join(map(repr, unknown)))
    options = {**OPTIONAL_DEFAULTS, **{k: v for k, v in raw.items() if k in OPTIONAL_DEFAULTS}}
    for key, (is_valid, rule) in _OPTION_RULES.items():
        if not is_valid(options[key]):
            raise ConfigError(f"{path}: key '{key}' {rule}")
    return options


def _folder(path: Path, key: str, value: Any) -> Path:
    """A folder key's value resolved against the config file's folder; ConfigError if unusable."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: key '{key}' must be a non-empty string (a folder path)")
    problem = _path_problem(value)
    if problem is not None:
        raise ConfigError(f"{path}: key '{key}' {problem}")
    try:
        resolved = (path.parent / Path(value).expanduser()).resolve()
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{path}: key '{key}' is not a usable path ({error})") from None
    problem = _path_problem(str(resolved))
    if problem is not None:
        raise ConfigError(f"{path}: key '{key}' {problem}")
    return resolved


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Each optional key's rule: (is the value valid?, what the error says it must be). The
# drift test's name is checked by fullprocess.py on every run (check_drift_test), so a
# wrong one is recorded and alerted on like any failed run.
_OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "drift_test": (lambda v: isinstance(v, str) and bool(v), "must be the name of a drift test"),
    "api_url": (
        lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
        "must be an http:// or https:// URL",
    ),
    "deployments_kept": (lambda v: _is_whole(v) and v >= 2, "must be a whole number >= 2"),
    "lock_wait_seconds": (
        lambda v: _is_number(v) and 0 <= v < math.inf,
        "must be a number of seconds >= 0",
    ),
    "alert_command": (
        lambda v: v is None or (isinstance(v, str) and bool(v.strip())),
        "must be a shell command (text) or null",
    ),
    "newest_files": (
        lambda v: v is None or (_is_whole(v) and v >= 1),
        "must be a whole number >= 1, or null",
    ),
    "stage_retrained": (lambda v: isinstance(v, bool), "must be true or false"),
    "history_days": (
        lambda v: _is_whole(v) and 1 <= v <= 36_500,
        "must be a whole number of days from 1 to 36500",
    ),
}


def _path_problem(value: str) -> str | None:
    """Why a path from the config cannot name a file on this system, or None."""
    if "\0" in value:
        return "holds a NUL character, which no path can"
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError:
        return "is not text the file system can store (a lone surrogate)"
    if len(encoded) >= PATH_MAX_BYTES:
        return f"is {len(encoded):,} bytes long; paths must be under {PATH_MAX_BYTES:,} bytes"
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX_BYTES:
        return (
            f"has a folder or file name {longest:,} bytes long; the file system takes up to "
            f"{NAME_MAX_BYTES}"
        )
    return None


def _risk_bands(path: Path, value: Any) -> tuple[float, float]:
    """(high, medium) from {"high": ..., "medium": ...}: risks in 0..1, medium below high."""
    if not (
        isinstance(value, dict)
        and set(value) == {"high", "medium"}
        and _is_number(value["high"])
        and _is_number(value["medium"])
        and 0 < value["medium"] < value["high"] <= 1
    ):
        raise ConfigError(
            f'{path}: key \'risk_bands\' must be like {{"high": 0.5, "medium": 0.25}}: '
            "two risks between 0 and 1, medium below high"
        )
    return float(value["high"]), float(value["medium"])


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Pairs of folder keys that must differ, and why.
_SEPARATE_FOLDERS = (
    *(
        ("input_folder_path", key, "new data must arrive in a folder of its own")
        for key in FOLDER_KEYS[1:]
    ),
    (
        "output_folder_path",
        "prod_deployment_path",
        "the deployment's ingestedfiles.txt would replace the ingestion record",
    ),
    (
        "output_model_path",
        "prod_deployment_path",
        "the deployment's trainedmodel.pkl would replace the trained model",
    ),
)


def _refuse_overlaps(path: Path, folders: dict[str, Path]) -> None:
    """Folders whose files would collide are refused.

    Ingestion reads every *.csv of the input folder (finaldata.csv or testdata.csv
    beside the new files would be ingested as new data on every run), and the
    deployment's top-level links carry the names of the trained files.
    """
    for first, second, why in _SEPARATE_FOLDERS:
        if folders[first] == folders[second]:
            raise ConfigError(
                f"{path}: keys '{first}' and '{second}' name the same folder "
                f"({folders[first]}); {why}"
            )


def _check_history_path(config: Config) -> None:
    """history_path names a SQLite file: never a folder, the config file or another file type.

    A damaged history database is moved aside, so the path must not be able to name
    anything else that could be moved (a folder, a script, the README).
    """
    where = config.history_path
    if where.suffix.lower() not in HISTORY_SUFFIXES:
        raise ConfigError(
            f"{config.path}: key 'history_path' must name a SQLite file ending in "
            f"{', '.join(HISTORY_SUFFIXES)} (found {where.name!r})"
        )
    if where.is_dir():
        raise ConfigError(f"{config.path}: key 'history_path' names a folder ({where})")
    if where == config.path:
        raise ConfigError(f"{config.path}: key 'history_path' names the config file itself")
