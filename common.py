"""What every script of the risk pipeline shares: config, atomic writes, datasets, run history.

Importing this module is cheap on purpose (standard library only): the cron tick of
fullprocess.py uses it to decide whether there is new data before anything heavy
is imported. pandas and pyarrow are imported inside the functions that read data,
and so are csv, pickle and tempfile, which that tick does not need either.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
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

FINAL_DATA_NAME = "finaldata.csv"
INGESTED_RECORD_NAME = "ingestedfiles.txt"
MODEL_NAME = "trainedmodel.pkl"
SCORE_NAME = "latestscore.txt"
TEST_DATA_NAME = "testdata.csv"

FOLDER_KEYS = (
    "input_folder_path",
    "output_folder_path",
    "test_data_path",
    "output_model_path",
    "prod_deployment_path",
)
DRIFT_TESTS = ("raw", "parametric", "nonparametric")
# Optional keys and their defaults; README.md documents each.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "history_path": "history.sqlite",
    "drift_test": "raw",
    "api_url": "http://127.0.0.1:8000",
    "deployments_kept": 5,
}


class PipelineError(Exception):
    """A mistake the user can fix (config, data, deployment): shown as one line, no traceback."""


class ConfigError(PipelineError):
    pass


class DataError(PipelineError, ValueError):
    pass


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
    def score_path(self) -> Path:
        return self.model_folder / SCORE_NAME

    @property
    def test_data_path(self) -> Path:
        return self.test_data_folder / TEST_DATA_NAME

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
    if options["drift_test"] not in DRIFT_TESTS:
        raise ConfigError(f"{path}: key 'drift_test' must be one of {', '.join(DRIFT_TESTS)}")
    if not isinstance(options["api_url"], str) or not options["api_url"].startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"{path}: key 'api_url' must be an http:// or https:// URL")
    kept = options["deployments_kept"]
    if not isinstance(kept, int) or isinstance(kept, bool) or kept < 2:
        raise ConfigError(f"{path}: key 'deployments_kept' must be a whole number >= 2")
    return Config(
        path=path,
        input_folder=folder("input_folder_path", raw["input_folder_path"]),
        output_folder=folder("output_folder_path", raw["output_folder_path"]),
        test_data_folder=folder("test_data_path", raw["test_data_path"]),
        model_folder=folder("output_model_path", raw["output_model_path"]),
        deployment_folder=folder("prod_deployment_path", raw["prod_deployment_path"]),
        history_path=folder("history_path", options["history_path"]),
        drift_test=options["drift_test"],
        api_url=options["api_url"].rstrip("/"),
        deployments_kept=kept,
    )


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
    logging.captureWarnings(True)  # a library's warning reaches the log (cron's included)


def run_cli(action: Callable[[], int | None]) -> int:
    """Run a script's work and turn expected failures into one log line and exit status 1.

    Anything else is a bug: logged with its traceback (to the log file, under cron),
    exit status 1 too.
    """
    configure_logging()
    try:
        status = action()
    except (PipelineError, OSError) as error:
        logger.error("%s", describe_error(error))
        return 1
    except sqlite3.Error as error:
        logger.error("run history database: %s", error)
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


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success it replaces target in one rename.

    Whatever the caller writes there becomes visible all at once, so a crash at any
    instant leaves either the old file or the new one, never a partial file.
    """
    import tempfile

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


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
    """The *.csv files of a folder, sorted by name; a missing folder is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    return sorted(path for path in folder.glob("*.csv") if path.is_file())


def read_ingested_record(path: Path) -> list[str]:
    """File names from an ingestedfiles.txt: one per line, or the older Python list literal."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        import ast

        try:
            names = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DataError(f"{path}: not a list of file names") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: not a list of file names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


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


_ARROW_CONVERSION_ERROR = re.compile(
    r"CSV conversion error to \w+: invalid value '(?P<value>.*)'", re.S
)
_ARROW_RAGGED_ROW = re.compile(r"Expected \d+ columns, got \d+")


def read_table(path: Path, require_target: bool = True) -> pa.Table:
    """Read and validate one dataset CSV (§1) as an Arrow table with the columns in order.

    Raises DataError naming the file, the problem and the line where it is known.
    The target column is optional when require_target is False (data to predict).
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    name = path.name
    header = _read_header(path)
    required = list(COLUMNS) if require_target else list(COLUMNS[:-1])
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(map(repr, missing))}")
    duplicated = sorted({c for c in header if header.count(c) > 1 and c in COLUMNS})
    if duplicated:
        raise DataError(f"{name}: column(s) {', '.join(map(repr, duplicated))} appear twice")
    extra = [column for column in header if column not in COLUMNS]
    if extra:
        logger.info("%s: ignoring extra column(s) %s", name, ", ".join(map(repr, extra)))
    wanted = [column for column in COLUMNS if column in header]
    types = {ID_COLUMN: pa.string(), **{column: pa.float64() for column in wanted[1:]}}
    try:
        # The header as read above (stripped, BOM removed) names the columns, so a
        # header like "corporation, exited" does not lose its columns to the spaces.
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1),
            convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=wanted),
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"{name}: {_explain_arrow_error(path, str(error))}") from None
    if table.num_rows == 0:
        raise DataError(f"{name}: no data rows (header only)")
    for column in wanted[1:]:
        _check_range(path, column, table.column(column))
    return table


def _check_range(path: Path, column: str, values: pa.ChunkedArray) -> None:
    """Features are finite and >= 0; the target is 0 or 1; empty cells are allowed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column == TARGET:
        bad, problem = pc.invert(pc.is_in(values, pa.array([0.0, 1.0]))), "must be 0 or 1, found"
    else:
        bad = pc.or_(pc.less(values, 0), pc.invert(pc.is_finite(values)))
        problem = "must be a finite number >= 0, found"
    bad = pc.and_(bad, pc.is_valid(values))
    if pc.any(bad).as_py():
        index = pc.index(bad, True).as_py()
        raise DataError(
            f"{path.name}: line {_line_of_row(path, index)}: column '{column}' "
            f"{problem} {values[index].as_py():g}"
        )


def _line_of_row(path: Path, index: int) -> int:
    """The line where data row `index` starts, counted as Arrow does (blank lines skipped)."""
    for seen, (line, _) in enumerate(_data_rows(path)):
        if seen == index:
            return line
    return index + 2


def _data_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line where it starts, fields) of each non-blank row after the header.

    The slow way, for error messages only: Arrow's CSV errors do not say the line.
    """
    import csv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        start = rows.line_num + 1
        for row in rows:
            if row:
                yield start, row
            start = rows.line_num + 1


def read_dataset(path: Path, require_target: bool = True) -> pd.DataFrame:
    """Read and validate one dataset CSV (§1) as a DataFrame: corporation, features, target."""
    return read_table(path, require_target).to_pandas()


def validate_frame(frame: pd.DataFrame, source: str, require_target: bool = False) -> pd.DataFrame:
    """Check an in-memory table (API records) like a file: columns present, numbers numeric.

    Returns the features as float columns (plus corporation when present).
    """
    import pandas as pd

    required = list(FEATURES) + ([TARGET] if require_target else [])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
    result = pd.DataFrame(index=frame.index)
    if ID_COLUMN in frame.columns:
        result[ID_COLUMN] = frame[ID_COLUMN]
    for column in required:
        values = pd.to_numeric(frame[column], errors="coerce")
        not_numeric = values.isna() & frame[column].notna()
        if not_numeric.any():
            position = int(not_numeric.to_numpy().argmax())
            raise DataError(
                f"{source}: row {position}: column '{column}': "
                f"non-numeric value {frame[column].iloc[position]!r}"
            )
        result[column] = values.astype("float64")
    return result


def _read_header(path: Path) -> list[str]:
    import csv

    with open(path, "rb") as handle:
        first = handle.readline(1 << 16)
    if not first.strip():
        with open(path, "rb") as handle:  # error path only: is there anything at all?
            if any(line.strip() for line in handle):
                raise DataError(f"{path.name}: line 1 is blank; the header row must come first")
        raise DataError(f"{path.name}: empty file")
    if b"\0" in first:
        raise DataError(f"{path.name}: not a CSV file (binary content)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path.name}: not a CSV file (not UTF-8 text)") from None
    return [column.strip() for column in next(csv.reader([text]))]


def _explain_arrow_error(path: Path, message: str) -> str:
    """Arrow's CSV errors do not say the line; find it with a slow scan (error path only)."""
    header = _read_header(path)
    if _ARROW_CONVERSION_ERROR.search(message):
        numeric = [(i, c) for i, c in enumerate(header) if c in COLUMNS and c != ID_COLUMN]
        for line, row in _data_rows(path):
            for index, column in numeric:
                value = row[index].strip() if index < len(row) else ""
                if value and not _is_number(value):
                    return f"line {line}: column '{column}': non-numeric value {value!r}"
    if _ARROW_RAGGED_ROW.search(message):
        for line, row in _data_rows(path):
            if len(row) != len(header):
                return f"line {line}: {len(row)} field(s) where the header has {len(header)}"
    first_line = message.strip().splitlines()[0] if message.strip() else "unreadable"
    return f"not parseable as CSV ({first_line})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_table_csv(table: pa.Table, target: Path) -> None:
    """Write an Arrow table as CSV, atomically (Arrow's writer is several times pandas')."""
    import pyarrow.csv as pa_csv

    with atomic_path(target) as tmp:
        pa_csv.write_csv(table, tmp)


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
    model_sha256 TEXT, dataset TEXT NOT NULL, purpose TEXT NOT NULL
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


class History:
    """The run history (§9): one SQLite file in WAL mode, one writer and many readers at once.

    A deleted database is simply created again; an unreadable one is moved aside
    (never deleted) and a new one started, so losing history never stops the pipeline.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._connection = self._open()
        except sqlite3.DatabaseError as error:
            aside = self.path.with_name(f"{self.path.name}.broken-{os.getpid()}")
            logger.warning("%s: unreadable (%s); moved to %s, starting anew", path, error, aside)
            os.replace(self.path, aside)
            self._connection = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.executescript(_SCHEMA)
        return connection

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Add one row (values that are dicts or lists are stored as JSON); returns its id."""
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        verb = "INSERT OR REPLACE" if table in {"file_checks", "processed_files"} else "INSERT"
        cursor = self._connection.execute(
            f"{verb} INTO {table} ({columns}) VALUES ({marks})",
            tuple(values.values()),
        )
        return int(cursor.lastrowid or 0)

    def update(self, table: str, row_id: int, changes: dict[str, Any]) -> None:
        values = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in changes.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        self._connection.execute(
            f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608 (our names only)
            (*values.values(), row_id),
        )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._connection.execute(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._connection.execute(sql, params)]


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
