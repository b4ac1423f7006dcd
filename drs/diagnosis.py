"""Diagnose the pipeline: predictions, data summary, missing values, timings, packages.

The command line prints all five as JSON (predictions of the deployed model on
testdata.csv) and records the run in the run history, for trends.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import releasefolder
from drs.cli import describe_error, errno_text
from drs.clock import parse_stamp, utc_now
from drs.config import FEATURES, ID_COLUMN, PROJECT_DIR, Config, load_config
from drs.datarules import check_frame, read_dataset
from drs.errors import DataError, PipelineError
from drs.files import csv_files, process_exists
from drs.history import open_history

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

REQUIREMENTS_PATH = PROJECT_DIR / "requirements.txt"
# PyPI's JSON API: <base>/<name>/json answers {"info": {"version": <latest release>}}.
PACKAGE_INDEX_URL = "https://pypi.org/pypi"
# Names another index (a mirror, or a closed port for offline tests) without a code change.
PACKAGE_INDEX_ENV_VAR = "DRS_PACKAGE_INDEX_URL"
# Seconds for the whole package-index question (all packages are asked at once).
INDEX_TIMEOUT_S = 5.0
INDEX_WORKERS = 8
# Seconds each timed script may take before the measurement is abandoned.
SCRIPT_TIMEOUT_S = 600.0
TIMED_SCRIPTS = ("ingestion.py", "training.py")
SCRIPT_TIMING = "as scripts (a new Python process each) on a throw-away copy of the input data"
# Timing workspaces are <temp dir>/drs-timing-<PID of their process>-<random>.
TIMING_PREFIX = "drs-timing-"

# Fetches the latest version of one package: (name, index_url, timeout_s) -> version.
Fetch = Callable[[str, str, float], str]


class NothingDeployedError(PipelineError):
    """No model is deployed yet (the API answers 503)."""


class DiagnosticsError(PipelineError):
    pass


def _config(config: Config | None) -> Config:
    return config if config is not None else load_config()


def deployed_release(config: Config) -> releasefolder.Release:
    """The deployed release; NothingDeployedError when there is none."""
    release = releasefolder.current_release(config.deployment_folder)
    if release is None:
        raise NothingDeployedError(
            f"{config.deployment_folder}: no model deployed yet; "
            "run deployment.py or fullprocess.py first"
        )
    return release


def model_predictions(data: pd.DataFrame, config: Config | None = None) -> list[int]:
    """The deployed model's 0/1 predictions for data's rows, in input order.

    The model is loaded from the deployment after its SHA-256 is checked; blank
    feature cells are filled by the model's own imputer.
    """
    release = deployed_release(_config(config))
    features = check_frame(data, "data")[list(FEATURES)]
    if features.empty:
        return []
    model = release.load_model()
    return [int(value) for value in model.predict(features)]


def final_data(config: Config) -> pd.DataFrame:
    """config's finaldata.csv, validated; a clear error when ingestion has not run yet."""
    if not config.final_data_path.exists():
        raise DataError(f"{config.final_data_path}: not found; run ingestion.py first")
    return read_dataset(config.final_data_path)


def _number(value: Any) -> float | None:
    """A JSON-safe number: NaN (e.g. the std of one value) becomes None."""
    number = float(value)
    return number if math.isfinite(number) else None


def summarize(frame: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean, median and sample std (pandas' ddof=1) of frame's numeric columns."""
    numeric = frame.select_dtypes("number")
    return {
        str(column): {
            "mean": _number(numeric[column].mean()),
            "median": _number(numeric[column].median()),
            "std": _number(numeric[column].std()),
        }
        for column in numeric.columns
    }


def missing_percentages(frame: pd.DataFrame) -> dict[str, float]:
    """Percent of empty cells of every column of frame (an empty client id counts too)."""
    missing = frame.isna()
    if ID_COLUMN in frame.columns:
        ids = frame[ID_COLUMN]
        missing[ID_COLUMN] |= ids.astype("string").str.strip().eq("").fillna(False)
    if frame.empty:
        return {str(column): 0.0 for column in frame.columns}
    return {str(column): float(missing[column].mean() * 100) for column in frame.columns}


def dataframe_summary(config: Config | None = None) -> dict[str, dict[str, float | None]]:
    """Mean, median and std of every numeric column of finaldata.csv."""
    return summarize(final_data(_config(config)))


def missing_data(config: Config | None = None) -> dict[str, float]:
    """Percent of missing values of every column of finaldata.csv."""
    return missing_percentages(final_data(_config(config)))


def execution_time(
    config: Config | None = None, timeout: float = SCRIPT_TIMEOUT_S
) -> dict[str, float]:
    """Seconds ingestion.py and training.py take as scripts, run in a throw-away workspace.

    The workspace is a temporary copy of the input data with a config whose every
    folder and history database lie inside it, so the real folders, deployment and
    run history stay exactly as they were.
    """
    config = _config(config)
    files = csv_files(config.input_folder)
    remove_abandoned_workspaces()
    with tempfile.TemporaryDirectory(prefix=f"{TIMING_PREFIX}{os.getpid()}-") as tmp:
        root = Path(tmp)
        (root / "input").mkdir()
        for path in files:
            shutil.copyfile(path, root / "input" / path.name)
        scratch = root / "config.json"
        scratch.write_text(
            json.dumps(
                {
                    "input_folder_path": "input",
                    "output_folder_path": "ingested",
                    "test_data_path": "test",
                    "output_model_path": "models",
                    "prod_deployment_path": "deployment",
                    "history_path": "history.sqlite",
                    "drift_test": config.drift_test,
                    "api_url": config.api_url,
                    "deployments_kept": config.deployments_kept,
                }
            ),
            encoding="utf-8",
        )
        return {script: _time_script(script, scratch, timeout) for script in TIMED_SCRIPTS}


def remove_abandoned_workspaces() -> None:
    """Delete timing workspaces whose process is gone (killed while timing).

    TemporaryDirectory cleans up after itself only when its process lives to do it;
    the owner's PID is in each folder's name.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{TIMING_PREFIX}*-*"):
        owner = folder.name.removeprefix(TIMING_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not process_exists(int(owner)):
            logger.info("removing %s, left by a killed run", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _time_script(script: str, config_path: Path, timeout: float) -> float:
    """Wall-clock seconds of one project script run as a process with config_path."""
    command = [sys.executable, str(PROJECT_DIR / script), "--config", str(config_path)]
    clock = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=config_path.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DiagnosticsError(f"{script}: still running after {timeout:g} s; gave up") from None
    seconds = time.perf_counter() - clock
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise DiagnosticsError(
            f"{script} failed while timed (exit {done.returncode}): "
            f"{lines[-1] if lines else 'no message'}"
        )
    logger.info("%s took %.2f s", script, seconds)
    return seconds


def pinned_requirements(path: Path = REQUIREMENTS_PATH) -> list[tuple[str, str, str]]:
    """(name, version, role) of every `name==version` line of a requirements file, in order.

    role is "development" for the pins after a comment line starting "# Development"
    (test and lint tools), "runtime" for the others, until the next such heading.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DiagnosticsError(f"{path}: not found") from None
    pins, role = [], "runtime"
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("# ").lower()
            role = "development" if heading.startswith("development") else "runtime"
            continue
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in requirement:
            name, version = (part.strip() for part in requirement.split("==", 1))
            pins.append((name.split("[", 1)[0], version, role))
    return pins


def fetch_latest(name: str, index_url: str, timeout: float) -> str:
    """The latest release of one package according to a PyPI-style JSON API."""
    import requests

    answer = requests.get(f"{index_url.rstrip('/')}/{name}/json", timeout=timeout)
    if answer.status_code == 404:
        raise LookupError("not found on the package index")
    answer.raise_for_status()
    return str(answer.json()["info"]["version"])


def outdated_packages_list(
    config: Config | None = None,
    timeout: float = INDEX_TIMEOUT_S,
    index_url: str | None = None,
    fetch: Fetch = fetch_latest,
    requirements: Path = REQUIREMENTS_PATH,
) -> list[dict[str, Any]]:
    """For each pinned requirement: required, installed and latest version, and whether outdated.

    All packages are asked for at once and the whole question takes at most about
    `timeout` seconds; a package whose latest version stays unknown (index
    unreachable, slow or without the package) has latest None and a reason.
    config is accepted like every diagnostic's; the requirements lie beside the scripts.
    index_url defaults to $DRS_PACKAGE_INDEX_URL, else PyPI.
    """
    from packaging.version import InvalidVersion, Version

    del config
    index_url = index_url or package_index_url()
    packages = installed_versions(requirements)
    latest: dict[str, str] = {}
    reasons: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=INDEX_WORKERS, thread_name_prefix="index")
    try:
        futures = {
            pool.submit(fetch, package["name"], index_url, timeout): package["name"]
            for package in packages
        }
        done, _ = wait(futures, timeout=timeout)
        for future, name in futures.items():
            if future not in done:
                reasons[name] = f"package index gave no answer within {timeout:g} s"
            elif future.exception() is not None:
                reasons[name] = _index_failure(future.exception(), index_url)
            else:
                latest[name] = future.result()
    finally:
        # Unanswered requests are left to their own timeout rather than waited for.
        pool.shutdown(wait=False, cancel_futures=True)
    if reasons:
        common_reason = max(set(reasons.values()), key=list(reasons.values()).count)
        logger.warning(
            "latest version unknown for %d of %d package(s): %s",
            len(reasons),
            len(packages),
            common_reason,
        )
    for package in packages:
        newest = latest.get(package["name"])
        try:
            outdated = (
                None
                if newest is None
                else Version(newest) > Version(package["installed"] or package["required"])
            )
        except InvalidVersion:
            outdated = None
        package.update(latest=newest, outdated=outdated, reason=reasons.get(package["name"]))
    return packages


def installed_versions(requirements: Path = REQUIREMENTS_PATH) -> list[dict[str, Any]]:
    """name, required (pinned) and installed version (None if absent), role of each requirement."""
    packages = []
    for name, required, role in pinned_requirements(requirements):
        try:
            installed: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        packages.append({"name": name, "required": required, "installed": installed, "role": role})
    return packages


def _index_failure(error: BaseException | None, index_url: str) -> str:
    """Why the index did not say a package's latest version, in one line."""
    import requests

    if isinstance(error, LookupError):
        return str(error).strip("'\"")
    if isinstance(error, requests.Timeout | TimeoutError):
        return f"package index unreachable: {index_url} did not answer in time"
    if isinstance(error, requests.ConnectionError | OSError):
        detail = errno_text(error) or type(error).__name__
        return f"package index unreachable: {index_url}: {detail}"
    return f"package index answer not usable: {type(error).__name__}: {error}"[:200]


def package_index_url() -> str:
    """The JSON API asked for latest versions: $DRS_PACKAGE_INDEX_URL, else PyPI."""
    return os.environ.get(PACKAGE_INDEX_ENV_VAR) or PACKAGE_INDEX_URL


def run(
    config: Config,
    index_url: str | None = None,
    index_timeout: float = INDEX_TIMEOUT_S,
) -> dict[str, Any]:
    """All five diagnostics (predictions on testdata.csv); the run is recorded in the history.

    The history keeps the predictions' count and number of exits, not the list.
    """
    started_at = utc_now()
    predictions = model_predictions(
        read_dataset(config.test_data_path, require_target=False), config
    )
    result = {
        "model_predictions": predictions,
        "dataframe_summary": dataframe_summary(config),
        "missing_data": missing_data(config),
        "execution_time": execution_time(config),
        "outdated_packages": outdated_packages_list(config, index_timeout, index_url),
    }
    payload = {
        **result,
        "model_predictions": {
            "dataset": str(config.test_data_path),
            "rows": len(predictions),
            "predicted_exits": sum(predictions),
        },
        "release_id": deployed_release(config).id,
        "source": "diagnostics.py",
        "timed": SCRIPT_TIMING,
    }
    record(config, payload, started_at)
    return result


def compact_json(result: dict[str, Any]) -> str:
    """The diagnostics as JSON a person can scroll: one line a diagnostic, a line a package.

    Valid JSON, the same values as json.dumps would give, in a few dozen lines rather than
    one line per prediction.
    """

    def one(value: Any) -> str:
        return json.dumps(value, allow_nan=False)

    lines = ["{"]
    for position, (key, value) in enumerate(result.items()):
        comma = "," if position < len(result) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            inner = [f"    {one(v)}" for v in value]
            lines += [f"  {one(key)}: [", ",\n".join(inner), f"  ]{comma}"]
        else:
            lines.append(f"  {one(key)}: {one(value)}{comma}")
    lines.append("}")
    return "\n".join(lines)


def summary_text(result: dict[str, Any]) -> str:
    """A short readable summary: timings, missing data, packages, predictions and positives."""
    predictions = result["model_predictions"]
    positives = sum(predictions)
    share = f" ({positives / len(predictions):.1%})" if predictions else ""
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in result["execution_time"].items())
    missing = {k: v for k, v in result["missing_data"].items() if v}
    packages = result["outdated_packages"]
    outdated = [p["name"] for p in packages if p.get("outdated")]
    unknown = [p for p in packages if p.get("latest") is None]
    lines = [
        f"predictions: {len(predictions):,} rows of the test data, {positives:,} predicted "
        f"to exit{share}",
        f"timings: {timings}",
        "missing values: " + (", ".join(f"{k} {v:.1f}%" for k, v in missing.items()) or "none"),
        f"packages: {len(packages)} pinned, {len(outdated)} outdated"
        + (f" ({', '.join(outdated)})" if outdated else "")
        + (
            f", latest version unknown for {len(unknown)} ({unknown[0].get('reason')})"
            if unknown
            else ""
        ),
    ]
    return "\n".join(lines)


# Diagnostics rows kept: only the newest usable one is ever read (RECORDS_LOOKED_AT are
# looked through for it), and each holds the whole package list, so a year of data runs
# would otherwise keep hundreds of megabytes nobody reads.
RECORDS_KEPT = 50


def record(config: Config, payload: dict[str, Any], at: str | None = None) -> None:
    """Add a diagnostics run to the history: the latest one is what /diagnostics answers."""
    with open_history(config) as history, history.transaction():
        history.insert("diagnostics", {"recorded_at": at or utc_now(), "payload_json": payload})
        history.execute(
            "DELETE FROM diagnostics WHERE id < (SELECT min(id) FROM "
            "(SELECT id FROM diagnostics ORDER BY id DESC LIMIT ?))",
            (RECORDS_KEPT,),
        )


# The recorded diagnostics count as current for this long; older, the API refreshes them.
FRESH_FOR_S = 3600.0


def age_s(recorded: dict[str, Any]) -> float:
    """Seconds since recorded diagnostics were recorded (infinite when that is not known)."""
    from datetime import UTC, datetime

    when = parse_stamp(recorded.get("recorded_at"))
    return math.inf if when is None else max((datetime.now(UTC) - when).total_seconds(), 0.0)


class Refresher:
    """Brings the recorded diagnostics up to date off the request path.

    Times the scripts and asks the package index in a background thread, and records
    the result for every process to answer from. One refresh at a time across all
    processes that share the history (a lock file beside it), none while the latest
    record is younger than fresh_for_s; a failed refresh is not retried for a minute.
    """

    RETRY_AFTER_S = 60.0

    def __init__(self, config: Config, fresh_for_s: float = FRESH_FOR_S) -> None:
        self.config = config
        self.fresh_for_s = fresh_for_s
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed_at = -math.inf

    @property
    def lock_path(self) -> Path:
        history = self.config.history_path
        return history.with_name(f"{history.name}.diagnostics.lock")

    @property
    def running(self) -> bool:
        return self._thread is not None

    def refresh_if_stale(self, recorded: dict[str, Any] | None) -> None:
        """Start a refresh unless recorded is fresh, one is running, or one failed just now."""
        if recorded is not None and age_s(recorded) < self.fresh_for_s:
            return
        with self._lock:
            if self._thread is not None or time.monotonic() - self._failed_at < self.RETRY_AFTER_S:
                return
            self._thread = threading.Thread(
                target=self._run, name="diagnostics-refresh", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float) -> None:
        """Wait up to timeout seconds for a running refresh (a server about to stop)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            with open(self.lock_path, "a+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another process is refreshing; its record serves this one too
                recorded = latest_recorded(self.config)
                if recorded is not None and age_s(recorded) < self.fresh_for_s:
                    return
                payload = {
                    "source": "the risk API's refresh",
                    "execution_time": execution_time(self.config),
                    "timed": SCRIPT_TIMING,
                    "outdated_packages": package_check(self.config),
                }
                record(self.config, payload)
                self.problem = None
        except Exception as error:
            if isinstance(error, PipelineError | OSError):
                self.problem = describe_error(error)
                logger.warning("diagnostics refresh failed: %s", self.problem)
            else:
                self.problem = f"{type(error).__name__}: {error}"
                logger.exception("diagnostics refresh failed")
            self._failed_at = time.monotonic()
        finally:
            with self._lock:
                self._thread = None


# A pipeline run or a refresh waits this long for the package index at most; an
# answer (the index's, or that it did not answer) is used for a day before asking again.
CHECK_INDEX_TIMEOUT_S = 1.0
PACKAGES_REMEMBERED_S = 86_400.0


def package_check(config: Config) -> list[dict[str, Any]]:
    """The outdated-packages answer to record: the recorded one if younger than a day, else asked.

    An index that does not answer then delays the caller by CHECK_INDEX_TIMEOUT_S at
    most, once a day.
    """
    recorded = latest_recorded(config)
    if (
        recorded is not None
        and isinstance(recorded.get("outdated_packages"), list)
        and age_s(recorded) < PACKAGES_REMEMBERED_S
    ):
        return recorded["outdated_packages"]
    return outdated_packages_list(config, CHECK_INDEX_TIMEOUT_S)


# How many of the newest diagnostics rows are looked through for one that is usable.
RECORDS_LOOKED_AT = 20


def latest_recorded(config: Config) -> dict[str, Any] | None:
    """The newest usable recorded diagnostics run: its payload plus recorded_at, or None.

    A row whose payload is not a JSON object, or whose timings are not a table of
    seconds, is passed over for the one before it.
    """
    with open_history(config) as history:
        rows = history.rows(
            "SELECT recorded_at, payload_json FROM diagnostics ORDER BY id DESC LIMIT ?",
            (RECORDS_LOOKED_AT,),
        )
    for row in rows:
        try:
            payload = json.loads(row["payload_json"])
        except (TypeError, json.JSONDecodeError):
            continue
        timings = payload.get("execution_time") if isinstance(payload, dict) else None
        if isinstance(timings, dict) and all(
            isinstance(value, int | float) for value in timings.values()
        ):
            return {**payload, "recorded_at": row["recorded_at"]}
    return None
