"""What every script of the risk pipeline shares: config, data rules, atomic writes, history, lock.

Importing this module is cheap on purpose (standard library only): the cron tick of
fullprocess.py uses it to decide whether there is new data before anything heavy
is imported. pandas, numpy and pyarrow are imported inside the functions that read
data, and so are csv, pickle and tempfile, which that tick does not need either.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import math
import numbers
import os
import re
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG_PATH = PROJECT_DIR / "config.json"
CONFIG_ENV_VAR = "DRS_CONFIG"
# When set, the API (app.py) requires it as a bearer token and apicalls.py sends it.
API_TOKEN_ENV_VAR = "DRS_API_TOKEN"  # noqa: S105 (the name of a variable, not a secret)

ID_COLUMN = "corporation"
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
# Optional keys and their defaults; README.md documents each.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "history_path": "history.sqlite",
    "drift_test": "raw",
    "api_url": "http://127.0.0.1:8000",
    "deployments_kept": 5,
    "lock_wait_seconds": 60,
    "alert_command": None,
    "risk_bands": {"high": 0.5, "medium": 0.25},
    "newest_files": None,
    "stage_retrained": False,
}


class PipelineError(Exception):
    """A mistake the user can fix (config, data, deployment): shown as one line, no traceback."""


class ConfigError(PipelineError):
    pass


class DataError(PipelineError, ValueError):
    pass


class BusyError(PipelineError):
    """Another pipeline run holds the lock."""


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
    drift_test: str = "raw"
    api_url: str = "http://127.0.0.1:8000"
    deployments_kept: int = 5
    lock_wait_s: float = 60.0
    alert_command: str | None = None
    risk_bands: tuple[float, float] = (0.5, 0.25)  # (high from, medium from)
    newest_files: int | None = None  # a retraining window of the newest N files
    stage_retrained: bool = False  # a retrained model waits for deployment.py --promote

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


def config_path_from(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Which config file to use: the explicit path, then $DRS_CONFIG, then config.json here."""
    chosen = explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(chosen).expanduser().resolve()


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file; raises ConfigError naming the file and the key."""
    path = config_path_from(explicit)
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

    def folder(key: str, value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: key '{key}' must be a non-empty string (a folder path)")
        return (path.parent / Path(value).expanduser()).resolve()

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
    bands = _risk_bands(path, options["risk_bands"])
    folders = {key: folder(key, raw[key]) for key in FOLDER_KEYS}
    _refuse_overlaps(path, folders)
    config = Config(
        path=path,
        input_folder=folders["input_folder_path"],
        output_folder=folders["output_folder_path"],
        test_data_folder=folders["test_data_path"],
        model_folder=folders["output_model_path"],
        deployment_folder=folders["prod_deployment_path"],
        history_path=folder("history_path", options["history_path"]),
        drift_test=options["drift_test"],
        api_url=options["api_url"].rstrip("/"),
        deployments_kept=options["deployments_kept"],
        lock_wait_s=float(options["lock_wait_seconds"]),
        alert_command=options["alert_command"],
        risk_bands=bands,
        newest_files=options["newest_files"],
        stage_retrained=options["stage_retrained"],
    )
    _check_history_path(config)
    return config


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Each optional key's rule: (is the value valid?, what the error says it must be). Which
# drift tests exist is drift.py's to say (fullprocess.py checks the name on every run).
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
}


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


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the --config option every script shares."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0] if description else None
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default: ${CONFIG_ENV_VAR}, then config.json beside the scripts)",
    )
    return parser


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr, one line a record; stdout is left for each script's result."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_name_the_script)
    logging.captureWarnings(True)  # a library's warning reaches the log (cron's included)


def _name_the_script(record: logging.LogRecord) -> bool:
    """Log a script's own lines under its name ('fullprocess'), not as '__main__'."""
    if record.name == "__main__":
        record.name = Path(sys.argv[0]).stem or record.name
    return True


def run_cli(action: Callable[[], int | None]) -> int:
    """Run a script's work and turn expected failures into one log line and exit status 1.

    Anything else is a bug: logged with its traceback (to the log file, under cron),
    exit status 1 too. The lines are logged under the script's name.
    """
    configure_logging()
    logger = logging.getLogger("__main__")
    try:
        status = action()
    except (PipelineError, OSError) as error:
        logger.error("%s", describe_error(error))
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except Exception:
        logger.exception("unexpected error; please report it with this traceback")
        return 1
    return 0 if status is None else status


def describe_os_error(error: OSError) -> str:
    """An OSError as one line that names the file."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def describe_error(error: Exception) -> str:
    """An expected failure (PipelineError or OSError) as the one line a user is shown."""
    return describe_os_error(error) if isinstance(error, OSError) else str(error)


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def errno_text(error: BaseException) -> str | None:
    """The useful end of a network error, e.g. 'Connection refused'.

    requests wraps the operating system's message deep inside its own.
    """
    found = _ERRNO_TEXT.search(str(error))
    return found.group(1).strip() if found else None


KILL_AT_ENV_VAR = "DRS_TEST_KILL_AT"
_boundaries = itertools.count(1)
# Errors where the file being written is to blame, whichever file the error names.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# <dot><target name>.<writer's PID>.<random>.tmp, as atomic_path names its temporaries.
_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


def file_boundary() -> None:
    """Called before every file replace, rename and unlink of the pipeline.

    A test hook: with $DRS_TEST_KILL_AT=N the process SIGKILLs itself at the N-th
    call, so a test can crash a run at each atomic boundary in turn.
    """
    kill_at = os.environ.get(KILL_AT_ENV_VAR)
    if kill_at and next(_boundaries) == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


def replace(source: Path, target: Path) -> None:
    """os.replace at a file boundary."""
    file_boundary()
    os.replace(source, target)


def unlink(path: Path) -> None:
    """Path.unlink(missing_ok=True) at a file boundary."""
    file_boundary()
    path.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries that writers killed mid-write left in folder (their PID is gone)."""
    for path in folder.glob(".*.tmp"):
        found = _TEMPORARY.fullmatch(path.name)
        if found and not process_exists(int(found["pid"])):
            logger.info("removing %s, left by a killed writer", path)
            unlink(path)


@contextlib.contextmanager
def naming(target: Path) -> Iterator[None]:
    """Make an OSError raised while writing target name target.

    Libraries often raise without a file name (pyarrow, matplotlib) or blame the file
    they were reading when the disk they write to is full. An error about one of
    target's temporary files is reported as target's too: that name means nothing to
    the person who asked for target.
    """
    try:
        yield
    except OSError as error:
        blamed = error.filename
        if blamed and error.errno not in _WRITE_ERRNOS and not _temporary_of(target, blamed):
            raise
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"cannot write: {reason}", str(target)) from error


def _temporary_of(target: Path, name: Any) -> bool:
    """Whether name is one of the temporary files atomic_path makes for target."""
    blamed = Path(os.fsdecode(name)) if isinstance(name, str | bytes) else None
    return (
        blamed is not None
        and blamed.parent == target.parent
        and blamed.name.startswith(f".{target.name}.")
        and _TEMPORARY.fullmatch(blamed.name) is not None
    )


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success it replaces target in one rename.

    Whatever the caller writes there becomes visible all at once, so a crash at any
    instant leaves either the old file or the new one, never a partial file. The
    temporary's name carries this process's PID: a later write to the folder removes
    those of killed writers.
    """
    import tempfile

    target = Path(target)
    with naming(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target.parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with naming(target):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            replace(tmp, target)
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            unlink(tmp)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, value: Any) -> None:
    atomic_write_text(target, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's value; DataError naming the file when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (POSIX needs the directory itself synced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def csv_files(folder: Path) -> list[Path]:
    """The *.csv files of a folder in the order they arrived: modification time, then name.

    Ingested in this order, a client's newest row comes last in finaldata.csv whatever
    the files are called. Names break ties with their numbers compared as numbers
    (dataset2.csv before dataset10.csv). A file that vanishes while it is listed is
    left out; a missing folder is an error.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    arrived = []
    for path in folder.glob("*.csv"):
        try:
            status = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode):
            arrived.append((status.st_mtime_ns, natural_key(path.name), path))
    return [path for _, _, path in sorted(arrived)]


def natural_key(name: str) -> tuple[str | int, ...]:
    """A sort key that compares the runs of digits in a name as numbers.

    Split on digit runs, text and numbers alternate (text first), so two keys compare
    text with text and numbers with numbers.
    """
    parts = re.split(r"([0-9]+)", name)
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts))


def read_ingested_record(path: Path) -> list[str]:
    """File names from an ingestedfiles.txt: one per line, or the older Python list literal.

    The older format counts only when the whole text is a list of strings: a file name
    may itself start with "[".
    """
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        import ast

        try:
            names = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, list) and all(isinstance(name, str) for name in names):
            return names
    return [line for line in text.splitlines() if line]


def file_name_problem(name: str) -> str | None:
    """Why a file's name cannot be recorded (one name a line, in UTF-8), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8 text"
    if not name.isprintable():
        return "its name holds a line break or another control character"
    return None


def shown_name(name: str) -> str:
    """A file name safe to log and record: non-UTF-8 bytes and control characters escaped."""
    if file_name_problem(name) is None:
        return name
    return printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def printable(text: str) -> str:
    """text with its control characters escaped: a terminal shows them, never obeys them."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def write_ingested_record(path: Path, names: list[str]) -> None:
    atomic_write_text(path, "".join(f"{name}\n" for name in names))


def read_score(path: Path) -> float:
    """The single F1 number of a latestscore.txt."""
    text = path.read_text(encoding="utf-8").strip()
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: expected one number, found {text[:40]!r}") from None


def write_score(path: Path, score: float) -> None:
    atomic_write_text(path, f"{score!r}\n")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_stamp(stamp: Any) -> datetime | None:
    """A recorded time stamp as an aware UTC datetime (no zone: UTC); None if it is not one."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# The data rules: one definition of each rule, used by every path that takes data: the CSV reader,
# DataFrames handed to the functions, and the API's JSON records. The same bad value
# gets the same verdict and the same message on each; only where it is ("line 4",
# "row 3", "records[2]") differs. Each value rule is written with operators that work
# on one number and on a numpy array alike, so the fast paths apply it whole.


def _is_feature_value(value: Any) -> Any:
    return (value >= 0) & (value < math.inf)


def _is_target_value(value: Any) -> Any:
    return (value == 0) | (value == 1)


VALUE_RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    **{feature: (_is_feature_value, "must be a finite number >= 0") for feature in FEATURES},
    TARGET: (_is_target_value, "must be 0 or 1"),
}
# Numeric text as the CSV reader parses it: decimal or exponent notation, with spaces
# around; nan and inf are numbers too (that then break the value rules). Only an empty
# cell is missing: NA, NULL and the like are text.
_NUMBER_TEXT = re.compile(
    r"[ \t]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)[ \t]*",
    re.IGNORECASE | re.ASCII,
)


class CellError(ValueError):
    """A cell breaks a data rule; the message says which column, the rule and the value."""


def rule_break(column: str, number: float) -> str:
    """The message for a number that breaks column's value rule."""
    return f"column '{column}' {VALUE_RULES[column][1]}, found {number:g}"


def cell_number(column: str, value: Any) -> float:
    """One cell of a numeric column, checked by the data rules: its number, NaN when empty.

    value is what a path holds: None or a float NaN (empty), a number, or text (a CSV
    cell, a JSON string). Raises CellError saying what is wrong.
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        if not _NUMBER_TEXT.fullmatch(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise CellError(f"column '{column}' must be a number, found {shown!r}")
        number = float(value)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CellError(f"column '{column}' must be a number, found {value_kind(value)}")
    else:
        try:
            number = float(value)
        except OverflowError:  # a whole number beyond any float
            number = math.inf if value > 0 else -math.inf
        if math.isnan(number):  # a DataFrame's empty cell, not text that says nan
            return math.nan
    if not VALUE_RULES[column][0](number):
        raise CellError(rule_break(column, number))
    return number


def value_kind(value: Any) -> str:
    """What kind of value a cell holds, for messages ('a boolean', 'a list', ...)."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def first_rule_break(
    column: str, values: np.ndarray, empty: np.ndarray | None = None
) -> int | None:
    """Index of the first value of a numeric column that breaks its rule, else None.

    Empty cells pass: those marked in `empty`, or without it, NaN (as pandas has them).
    """
    import numpy as np

    is_valid, _ = VALUE_RULES[column]
    bad = ~is_valid(values) & ~(np.isnan(values) if empty is None else empty)
    return int(bad.argmax()) if bad.any() else None


def check_frame(frame: pd.DataFrame, source: str, require_target: bool = False) -> pd.DataFrame:
    """Check an in-memory table like a file: columns present, cells by the data rules.

    Returns the features (and the target when required) as float columns, plus
    corporation when present. Raises DataError naming source, the row and the problem.
    """
    import numpy as np
    import pandas as pd

    required = list(FEATURES) + ([TARGET] if require_target else [])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
    result = pd.DataFrame(index=frame.index)
    if ID_COLUMN in frame.columns:
        result[ID_COLUMN] = frame[ID_COLUMN]
    for column in required:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            bad = first_rule_break(column, values)
            if bad is not None:
                raise DataError(f"{source}: row {bad}: {rule_break(column, values[bad])}")
        else:
            values = np.empty(len(series))
            for position, cell in enumerate(series.tolist()):
                try:
                    values[position] = cell_number(column, None if cell is pd.NA else cell)
                except CellError as error:
                    raise DataError(f"{source}: row {position}: {error}") from None
        result[column] = values
    return result


# Longest header line read; a longer one is refused rather than read into memory whole.
MAX_HEADER_BYTES = 64 << 20
ARROW_BLOCK_BYTES = 1 << 20
_ARROW_CONVERSION_ERROR = re.compile(r"CSV conversion error to \w+")
_ARROW_RAGGED_ROW = re.compile(r"Expected \d+ columns, got \d+")


def read_table(path: Path, require_target: bool = True) -> pa.Table:
    """Read and validate one dataset CSV as an Arrow table with the columns in order.

    Raises DataError naming the file, the problem and the line where it is known.
    The target column is optional when require_target is False (data to predict).
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    name = path.name
    header, header_bytes = _read_header(path)
    required = list(COLUMNS) if require_target else list(COLUMNS[:-1])
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(map(repr, missing))}")
    duplicated = sorted({c for c in header if c in COLUMNS and header.count(c) > 1})
    if duplicated:
        raise DataError(f"{name}: column(s) {', '.join(map(repr, duplicated))} appear twice")
    extra = [column for column in header if column not in COLUMNS]
    if extra:
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        logger.info(
            "%s: ignoring extra column(s) %s%s", name, ", ".join(map(repr, extra[:10])), more
        )
    wanted = [column for column in COLUMNS if column in header]
    types = {ID_COLUMN: pa.string(), **{column: pa.float64() for column in wanted[1:]}}
    try:
        # The header as read above (stripped, BOM removed) names the columns, so a
        # header like "corporation, exited" does not lose its columns to the spaces.
        # Only an empty cell is missing (Arrow would also take NA, NULL, nan, ...).
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(
                column_names=header,
                skip_rows=1,
                block_size=max(ARROW_BLOCK_BYTES, 2 * header_bytes),
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=wanted, null_values=[""]
            ),
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"{name}: {_explain_arrow_error(path, str(error))}") from None
    if table.num_rows == 0:
        raise DataError(f"{name}: no data rows (header only)")
    for column in wanted[1:]:
        chunked = table.column(column)
        values = chunked.to_numpy()
        bad = first_rule_break(column, values, chunked.is_null().to_numpy())
        if bad is not None:
            raise DataError(
                f"{name}: line {_line_of_row(path, bad)}: {rule_break(column, values[bad])}"
            )
    return table


def _line_of_row(path: Path, index: int) -> int:
    """The line where data row `index` starts, counted as Arrow does (blank lines skipped)."""
    for seen, (line, _) in enumerate(_data_rows(path)):
        if seen == index:
            return line
    return index + 2


def _data_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line where it starts, fields) of each non-blank row after the header.

    The slow way, for error messages only: Arrow's CSV errors do not say the line.
    Bytes that are not UTF-8 come through as surrogates (see _is_utf8), not as a crash.
    """
    import csv

    csv.field_size_limit(MAX_HEADER_BYTES)  # a cell may be as long as a header line
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        rows = csv.reader(handle)
        try:
            next(rows, None)
            start = rows.line_num + 1
            for row in rows:
                if row:
                    yield start, row
                start = rows.line_num + 1
        except csv.Error as error:
            raise DataError(
                f"{path.name}: line {rows.line_num}: not parseable as CSV ({error})"
            ) from None


def _is_utf8(fields: list[str]) -> bool:
    try:
        "".join(fields).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_dataset(path: Path, require_target: bool = True) -> pd.DataFrame:
    """Read and validate one dataset CSV as a DataFrame: corporation, features, target."""
    return read_table(path, require_target).to_pandas()


def _read_header(path: Path) -> tuple[list[str], int]:
    """The header's column names (stripped, BOM removed) and its length in bytes."""
    import csv

    csv.field_size_limit(MAX_HEADER_BYTES)
    with open(path, "rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES + 1)
        if len(first) > MAX_HEADER_BYTES:
            raise DataError(f"{path.name}: line 1 is over {MAX_HEADER_BYTES >> 20} MiB long")
        if not first.strip():
            if any(line.strip() for line in handle):
                raise DataError(f"{path.name}: line 1 is blank; the header row must come first")
            raise DataError(f"{path.name}: empty file")
        if b"\0" in first:
            raise DataError(f"{path.name}: not a CSV file (binary content)")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{path.name}: line 1: not UTF-8 text") from None
        if not any(line.strip() for line in handle):
            raise DataError(f"{path.name}: no data rows (header only)")
    return [column.strip() for column in next(csv.reader([text]))], len(first)


def _explain_arrow_error(path: Path, message: str) -> str:
    """Arrow's CSV errors do not say the line; find the first bad row with a slow scan.

    Rows are checked in file order with the data rules, so the first problem of the
    file is the one reported, whichever Arrow met first.
    """
    header, _ = _read_header(path)
    numeric = [(i, c) for i, c in enumerate(header) if c in COLUMNS and c != ID_COLUMN]
    ragged = bool(_ARROW_RAGGED_ROW.search(message))
    for line, row in _data_rows(path):
        if not _is_utf8(row):
            return f"line {line}: not UTF-8 text"
        if ragged and len(row) != len(header):
            return f"line {line}: {len(row)} field(s) where the header has {len(header)}"
        for index, column in numeric:
            try:
                cell_number(column, row[index] if index < len(row) else "")
            except CellError as error:
                return f"line {line}: {error}"
    first_line = message.strip().splitlines()[0] if message.strip() else "unreadable"
    return f"not parseable as CSV ({first_line})"


def write_table_csv(table: pa.Table, target: Path) -> None:
    """Write an Arrow table as CSV, atomically (Arrow's writer is several times pandas')."""
    import pyarrow.csv as pa_csv

    with atomic_path(target) as tmp:
        pa_csv.write_csv(table, tmp)


LOCK_POLL_S = 0.1


@contextlib.contextmanager
def pipeline_lock(config: Config, wait_s: float = 0.0) -> Iterator[bool]:
    """Yield True while holding the pipeline lock, False when another run kept it for wait_s.

    Every step that writes the model, the score, the ingestion record or the
    deployment takes it, so no hand-run step mixes its files into a run's. flock is
    released by the kernel when a holder dies: a killed run leaves no stale lock.
    """
    config.deployment_folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(config.lock_path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(LOCK_POLL_S)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def step_lock(config: Config) -> Iterator[None]:
    """Hold the pipeline lock for a hand-run step, waiting up to lock_wait_seconds for it."""
    with pipeline_lock(config, config.lock_wait_s) as held:
        if not held:
            raise BusyError(
                f"busy: another pipeline run holds {config.lock_path} "
                f"(waited {config.lock_wait_s:g} s); try again when it has finished"
            )
        yield


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestion_runs (
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, duration_s REAL NOT NULL,
    input_folder TEXT NOT NULL, status TEXT NOT NULL,
    rows_before INTEGER, rows_after INTEGER, files_json TEXT NOT NULL, rejected_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_checks (
    folder TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    verdict TEXT NOT NULL, reason TEXT, rows INTEGER, checked_at TEXT NOT NULL,
    PRIMARY KEY (folder, name, sha256)
);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, f1 REAL NOT NULL,
    model_sha256 TEXT, dataset TEXT NOT NULL, purpose TEXT NOT NULL, dataset_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, release_id TEXT NOT NULL,
    action TEXT NOT NULL, model_sha256 TEXT NOT NULL, f1 REAL
);
CREATE TABLE IF NOT EXISTS diagnostics (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, payload_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_drift (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, feature TEXT NOT NULL,
    measure TEXT NOT NULL, value REAL, threshold REAL NOT NULL, drifted INTEGER NOT NULL,
    reference TEXT NOT NULL, current TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_files (
    folder TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    processed_at TEXT NOT NULL, pipeline_run_id INTEGER,
    PRIMARY KEY (folder, name, sha256)
);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
    outcome TEXT NOT NULL, exit_code INTEGER, release_id TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY, written_at TEXT NOT NULL, release_id TEXT NOT NULL,
    pipeline_run_id INTEGER, files_json TEXT NOT NULL
);
"""
# Seconds a writer waits for another to finish before the history counts as locked.
HISTORY_BUSY_S = 30
# What SQLite's error codes mean for a user (sqlite3's exceptions say little more than
# "database is locked" and never which file).
_HISTORY_PROBLEMS = {
    sqlite3.SQLITE_BUSY: f"locked: another process kept it for {HISTORY_BUSY_S} s",
    sqlite3.SQLITE_LOCKED: f"locked: another process kept it for {HISTORY_BUSY_S} s",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "read-only (check its and its folder's permissions)",
    sqlite3.SQLITE_CANTOPEN: "cannot open it (is the folder missing or not writable?)",
    sqlite3.SQLITE_IOERR: "input/output error while reading or writing it",
    sqlite3.SQLITE_PERM: "permission denied",
}
_DAMAGED = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}


# Columns added since the first release, for databases made before them: (table, column).
_NEW_COLUMNS = (("scores", "dataset_sha256 TEXT"),)


def _add_new_columns(connection: sqlite3.Connection) -> None:
    for table, column in _NEW_COLUMNS:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (its extended code carries more bits)."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


class HistoryError(PipelineError):
    """The run history cannot be used (locked, full disk, permissions): nothing was moved."""


class History:
    """The run history: one SQLite file in WAL mode, one writer and many readers at once.

    A deleted database is simply created again. Only a file that SQLite says is not
    a database, or that fails its integrity check, is moved aside (never deleted) and
    a new one started; any other failure (locked, disk full, permissions) is a
    HistoryError naming the file and the cause, and every file stays as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._connection = self._open()
        except sqlite3.DatabaseError as error:
            if not self._damaged(error):
                raise self._error(error) from None
            self._move_aside(error)
            try:
                self._connection = self._open()
            except sqlite3.Error as again:
                raise self._error(again) from None

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror
            raise HistoryError(f"{self.path}: cannot create its folder ({reason})") from None
        connection = sqlite3.connect(self.path, timeout=HISTORY_BUSY_S, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {HISTORY_BUSY_S * 1000}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            _add_new_columns(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _damaged(self, error: sqlite3.DatabaseError) -> bool:
        """Whether the file itself is broken: not a database, or failing its integrity check."""
        code = _primary_code(error)
        if code == sqlite3.SQLITE_NOTADB:
            return True
        if code != sqlite3.SQLITE_CORRUPT:
            return False
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=HISTORY_BUSY_S)) as check:
                verdict = check.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as failed:
            return _primary_code(failed) in _DAMAGED
        return verdict != "ok"

    def _move_aside(self, error: sqlite3.DatabaseError) -> None:
        """Rename the broken file (and its journal files) to <name>.broken-<PID>."""
        aside = self.path.with_name(f"{self.path.name}.broken-{os.getpid()}")
        try:
            for suffix in ("-wal", "-shm", ""):
                journal = self.path.with_name(self.path.name + suffix)
                if journal.exists():
                    replace(journal, aside.with_name(aside.name + suffix))
        except OSError as failed:
            raise HistoryError(
                f"{self.path}: damaged ({error}) and cannot be moved aside ({failed.strerror})"
            ) from None
        logger.warning("%s: damaged (%s); moved to %s, starting anew", self.path, error, aside)

    def _error(self, error: sqlite3.Error) -> HistoryError:
        problem = _HISTORY_PROBLEMS.get(_primary_code(error), str(error))
        return HistoryError(f"{self.path}: run history {problem}")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes of the block one atomic change (all or none, even if killed)."""
        self._run("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.rollback()
            raise
        self._run("COMMIT")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[int, list[dict[str, Any]]]:
        """Execute one statement; (last row id, rows).

        Damage found only now (a broken page deep in the file) is handled as at
        opening: the file is moved aside and the statement runs on a new database,
        unless a transaction is open (its earlier writes went with the old file).
        """
        try:
            return self._execute(sql, params)
        except sqlite3.DatabaseError as error:
            if self._connection.in_transaction or not self._damaged(error):
                raise self._error(error) from None
            self._connection.close()
            self._move_aside(error)
        try:
            self._connection = self._open()
            return self._execute(sql, params)
        except sqlite3.Error as error:
            raise self._error(error) from None

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[int, list[dict[str, Any]]]:
        cursor = self._connection.execute(sql, params)
        return int(cursor.lastrowid or 0), [dict(row) for row in cursor]

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Add one row (values that are dicts or lists are stored as JSON); returns its id."""
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        verb = "INSERT OR REPLACE" if table in {"file_checks", "processed_files"} else "INSERT"
        row_id, _ = self._run(
            f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(values.values())
        )
        return row_id

    def update(self, table: str, row_id: int, changes: dict[str, Any]) -> None:
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in changes.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        self._run(
            f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608 (our names only)
            (*values.values(), row_id),
        )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._run(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self._run(sql, params)[1]


def open_history(config: Config) -> History:
    return History(config.history_path)


class ModelIntegrityError(PipelineError):
    pass


def load_model(path: Path, expected_sha256: str | None = None) -> Any:
    """Unpickle a model, refusing it first if its bytes do not match expected_sha256.

    Unpickling runs code, so a deployed model is only loaded once its hash matches
    the one recorded when it was deployed.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: model not found") from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ModelIntegrityError(
                f"{path}: SHA-256 {actual[:12]}... does not match the deployed "
                f"{expected_sha256[:12]}...; refusing to load it"
            )
    import pickle

    return pickle.loads(data)
