"""One unattended run of the whole pipeline, as cron makes it every 10 minutes (§7).

Take the lock; look for new data (cheaply: no pandas or scikit-learn on that path);
ingest; check the deployed model for drift on the new data; on drift retrain,
rescore and redeploy; report on the model now deployed; record the run.

Exit status: 0 success (also "no new data" and "another run holds the lock"),
1 the run failed before or during deployment (the old deployment stays),
2 the new deployment is in place but the run failed after it (reporting, mostly);
the next run writes the reports it owes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import common
import deployment

logger = logging.getLogger(__name__)

LOCK_NAME = ".fullprocess.lock"
EXIT_FAILED = 1
EXIT_FAILED_AFTER_DEPLOYMENT = 2
# z-score and interquartile-range rules of the selectable drift tests (§7).
Z_THRESHOLD = 2.0
IQR_FACTOR = 1.5
CONFUSION_MATRIX_NAME = "confusionmatrix2.png"
API_RETURNS_NAME = "apireturns2.txt"
REPORT_NAME = "report2.pdf"
# How long the temporary API's /diagnostics waits for its slow parts, so that
# apireturns2.txt holds them rather than "computing"; below apicalls' read timeout.
TEMPORARY_API_DIAGNOSTICS_WAIT_S = 25.0
LOG_FILE_BYTES = 1_000_000
LOG_FILE_BACKUPS = 3


class DriftVerdict(NamedTuple):
    """Whether the deployed model drifted, and the one-line reason shown in the log."""

    drifted: bool
    reason: str


class RunReport:
    """What one run did, stored as the pipeline run's detail in the history."""

    def __init__(self) -> None:
        self.new_files: list[str] = []
        self.drift: dict[str, Any] = {}
        self.deployed_release: str | None = None
        self.reports: list[str] = []


def model_drift(
    new_f1: float, deployed_f1: float, score_history: Sequence[float], test: str = "raw"
) -> DriftVerdict:
    """Decide model drift from F1 scores; pure, so each test is checked on known histories.

    raw: any drop below the deployed score. parametric: more than Z_THRESHOLD standard
    deviations below the mean of the score history. nonparametric: below
    Q1 - IQR_FACTOR * IQR of the score history. The two history tests fall back to raw
    while the history is too short to estimate a spread.
    """
    import statistics  # here, not at the top: a tick without new data never needs it

    if test == "raw" or (test in {"parametric", "nonparametric"} and len(score_history) < 2):
        fallback = "" if test == "raw" else f" ({test} test needs 2+ past scores)"
        drifted = new_f1 < deployed_f1
        verb = "<" if drifted else ">="
        return DriftVerdict(
            drifted, f"new F1 {new_f1:.4f} {verb} deployed {deployed_f1:.4f}{fallback}"
        )
    if test == "parametric":
        mean, spread = statistics.fmean(score_history), statistics.stdev(score_history)
        bound = mean - Z_THRESHOLD * spread
        rule = f"mean {mean:.4f} - {Z_THRESHOLD:g} sd {spread:.4f}"
    elif test == "nonparametric":
        q1, _, q3 = statistics.quantiles(score_history, n=4, method="inclusive")
        bound = q1 - IQR_FACTOR * (q3 - q1)
        rule = f"Q1 {q1:.4f} - {IQR_FACTOR:g} IQR {q3 - q1:.4f}"
    else:
        raise common.ConfigError(f"unknown drift test {test!r}")
    drifted = new_f1 < bound
    verb = "<" if drifted else ">="
    return DriftVerdict(drifted, f"new F1 {new_f1:.4f} {verb} {bound:.4f} ({rule})")


@contextlib.contextmanager
def pipeline_lock(config: common.Config) -> Iterator[bool]:
    """Yield True while holding the pipeline lock, False when another run holds it.

    flock is released by the kernel when a holder dies, so a killed run never
    leaves a stale lock behind.
    """
    config.deployment_folder.mkdir(parents=True, exist_ok=True)
    with open(config.deployment_folder / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_new_files(
    config: common.Config, history: common.History, release: deployment.Release | None
) -> dict[Path, str]:
    """CSV files of the input folder not yet processed with their current content -> SHA-256.

    A file counts as seen when fullprocess processed it with the same SHA-256, or,
    for a file the history never saw, when the deployed release's ingestedfiles.txt
    names it (a deployment made by hand, or a lost history).
    """
    deployed_names = set(release.ingested_files()) if release else set()
    processed = history.rows(
        "SELECT name, sha256 FROM processed_files WHERE folder = ?", (input_folder_key(config),)
    )
    seen = {(row["name"], row["sha256"]) for row in processed}
    names_with_history = {row["name"] for row in processed}
    new = {}
    for path in common.csv_files(config.input_folder):
        if path.name in deployed_names and path.name not in names_with_history:
            continue
        digest = common.file_sha256(path)
        if (path.name, digest) not in seen:
            new[path] = digest
    return new


def input_folder_key(config: common.Config) -> str:
    """The input folder as processed_files records it: relative to the config's folder if inside.

    A checkout moved together with its history then still knows its processed files.
    """
    if config.input_folder.is_relative_to(config.root):
        return str(config.input_folder.relative_to(config.root))
    return str(config.input_folder)


def mark_processed(
    history: common.History, config: common.Config, files: dict[Path, str], run_id: int
) -> None:
    """Remember the files as processed with the content they had when the run found them."""
    now = common.utc_now()
    for path, digest in files.items():
        history.insert(
            "processed_files",
            {
                "folder": input_folder_key(config),
                "name": path.name,
                "sha256": digest,
                "processed_at": now,
                "pipeline_run_id": run_id,
            },
        )


def check_model_drift(
    config: common.Config, release: deployment.Release, history: common.History
) -> DriftVerdict:
    """Score the deployed model on the new finaldata.csv and compare with its deployed score."""
    import scoring

    model = release.load_model()
    new_f1 = scoring.f1_of(model, common.read_dataset(config.final_data_path))
    scoring.record_score(
        config, new_f1, release.model_sha256, str(config.final_data_path), "drift-check"
    )
    past = history.rows("SELECT f1 FROM scores WHERE purpose = 'test' ORDER BY id")
    return model_drift(new_f1, release.score(), [row["f1"] for row in past], config.drift_test)


def record_data_drift(
    history: common.History, reference: Any, current: Any, current_label: str
) -> dict[str, Any]:
    """Measure per-feature drift of the new rows against the data before them; record it."""
    import reporting

    drift = reporting.feature_drift(reference, current)
    now = common.utc_now()
    for feature, measured in drift.items():
        history.insert(
            "data_drift",
            {
                "recorded_at": now,
                "feature": feature,
                "measure": reporting.DRIFT_MEASURE,
                "value": measured["value"],
                "threshold": measured["threshold"],
                "drifted": int(measured["drifted"]),
                "reference": "finaldata.csv before this run",
                "current": current_label,
            },
        )
    return drift


def drift_reference(config: common.Config, new_files: dict[Path, str]) -> Any:
    """finaldata.csv as it was before the new files (a DataFrame), or None, logged why."""
    if not config.final_data_path.exists():
        logger.info("data drift not measured: no earlier data to compare with")
        return None
    earlier = (
        set(common.read_ingested_record(config.ingested_record_path))
        if config.ingested_record_path.exists()
        else set()
    )
    already = sorted(earlier & {path.name for path in new_files})
    if already:
        logger.warning(
            "data drift not measured: %s already holds %s (ingested by an interrupted run)",
            config.final_data_path.name,
            ", ".join(already),
        )
        return None
    return common.read_dataset(config.final_data_path)


def update_model(
    config: common.Config,
    history: common.History,
    new_files: dict[Path, str],
    release: deployment.Release | None,
    record: RunRecord,
) -> tuple[deployment.Release, dict[str, float]]:
    """Ingest, check release for drift, and retrain, rescore and redeploy when needed (3-5).

    Returns the release deployed afterwards and the in-process step timings.
    """
    import pandas as pd

    import ingestion
    import scoring
    import training

    timings: dict[str, float] = {}
    reference = drift_reference(config, new_files)
    clock = time.perf_counter()
    ingested = ingestion.run(config).ingested
    timings["ingestion"] = time.perf_counter() - clock

    new_valid = sorted(path.name for path in new_files if path.name in ingested)
    if reference is not None and new_valid:
        current = pd.concat(
            [common.read_dataset(config.input_folder / name) for name in new_valid],
            ignore_index=True,
        )
        drift = record_data_drift(history, reference, current, ", ".join(new_valid))
        record.report.drift["data"] = {name: bool(d["drifted"]) for name, d in drift.items()}

    verdict = (
        DriftVerdict(True, "no model deployed yet")
        if release is None
        else check_model_drift(config, release, history)
    )
    record.report.drift["model"] = verdict.reason
    logger.info("model drift %s: %s", "found" if verdict.drifted else "not found", verdict.reason)
    if release is None or verdict.drifted:
        clock = time.perf_counter()
        training.run(config)
        timings["training"] = time.perf_counter() - clock
        scoring.run(config)
        release = deployment.run(config, before_activate=record.note_release)
    mark_processed(history, config, new_files, record.id)
    return release, timings


def make_reports(
    config: common.Config, release: deployment.Release, timings: dict[str, float]
) -> list[Path]:
    """confusionmatrix2.png, apireturns2.txt and report2.pdf for the deployed model (step 6).

    The API calls run in a thread beside the drawing: they mostly wait on the API's
    own work (its diagnostics time the scripts in other processes).
    """
    from concurrent.futures import ThreadPoolExecutor

    import reporting

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-calls") as pool:
        api_returns = pool.submit(write_api_returns, config, release)
        confusion_matrix = reporting.confusion_matrix_plot(config, CONFUSION_MATRIX_NAME)
        report = reporting.write_report(config, REPORT_NAME, timings=timings)
        return [confusion_matrix, api_returns.result(), report]


def write_api_returns(config: common.Config, release: deployment.Release) -> Path:
    """apireturns2.txt from the running API if it serves release, else from a temporary one.

    A running API that then fails the calls (one that wants a token cron does not
    have, say) is passed over for the temporary one, with a warning.
    """
    import apicalls

    token = os.environ.get(apicalls.TOKEN_ENV_VAR) or None
    returns = None
    if running_api_serves(config.api_url, release.id):
        logger.info("calling the running API at %s", config.api_url)
        try:
            returns = apicalls.call_api(config.api_url, config, token)
        except apicalls.ApiCallError as error:
            logger.warning("the running API failed (%s); using a temporary one", error)
    if returns is None:
        with temporary_api(config) as url:
            logger.info("calling a temporary API for release %s at %s", release.id, url)
            returns = apicalls.call_api(url, config, token)
    return apicalls.write_returns(config, returns, API_RETURNS_NAME)


def running_api_serves(url: str, release_id: str) -> bool:
    """True when an API answers at url and its /health names release_id."""
    import requests

    try:
        answer = requests.get(f"{url}/health", timeout=2).json()
        return answer["model"]["release_id"] == release_id
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def temporary_api(config: common.Config) -> Iterator[str]:
    """Serve the API on a free loopback port for the duration of the block; yields its URL."""
    import app

    api = app.create_app(config)
    api.config["DIAGNOSTICS_WAIT_S"] = TEMPORARY_API_DIAGNOSTICS_WAIT_S
    try:
        with app.serve_on_loopback(api) as url:
            yield url
    finally:
        app.finish_background_work(api, TEMPORARY_API_DIAGNOSTICS_WAIT_S)


class RunRecord:
    """The history row of one run: opened as 'running', closed with its outcome."""

    def __init__(self, history: common.History, **columns: Any) -> None:
        self.history = history
        self.report = RunReport()
        self.id = history.insert(
            "pipeline_runs", {"started_at": common.utc_now(), "outcome": "running", **columns}
        )

    def note_release(self, release_id: str) -> None:
        """Recorded before the release goes live, so no kill hides what this run deployed."""
        self.report.deployed_release = release_id
        self.history.update("pipeline_runs", self.id, {"release_id": release_id})

    def finish(self, outcome: str, exit_code: int) -> int:
        self.history.update(
            "pipeline_runs",
            self.id,
            {
                "finished_at": common.utc_now(),
                "outcome": outcome,
                "exit_code": exit_code,
                "detail_json": vars(self.report),
            },
        )
        return exit_code


def process(
    config: common.Config,
    history: common.History,
    new_files: dict[Path, str],
    deployed: deployment.Release | None,
) -> int:
    """Steps 3-7 for the new files, deployed being the release found; returns the exit status."""
    record = RunRecord(history)
    record.report.new_files = sorted(path.name for path in new_files)
    logger.info("new data: %s", ", ".join(record.report.new_files))
    try:
        release, timings = update_model(config, history, new_files, deployed, record)
    except Exception as error:
        live = deployment.current_release(config.deployment_folder)
        if live is not None and live.id == record.report.deployed_release:
            log_failure(f"release {live.id} is deployed, but the run failed after deploying", error)
            return record.finish("failed after deployment", EXIT_FAILED_AFTER_DEPLOYMENT)
        log_failure("failed before deployment finished; the deployed model is unchanged", error)
        return record.finish("failed", EXIT_FAILED)
    status = report_on(config, release, timings, record)
    if status:
        return status
    outcome = "redeployed" if record.report.deployed_release else "kept deployed model"
    print(f"{outcome}: release {release.id}; {record.report.drift['model']}")
    return record.finish(outcome, 0)


def report_on(
    config: common.Config,
    release: deployment.Release,
    timings: dict[str, float],
    record: RunRecord,
) -> int:
    """Write the reports and record them; on failure close the run and return 2, else 0."""
    try:
        written = [str(path) for path in make_reports(config, release, timings)]
    except Exception as error:
        log_failure(f"release {release.id} is deployed, but reporting failed", error)
        return record.finish("reporting failed", EXIT_FAILED_AFTER_DEPLOYMENT)
    record.report.reports = written
    record.history.insert(
        "reports",
        {
            "written_at": common.utc_now(),
            "release_id": release.id,
            "pipeline_run_id": record.id,
            "files_json": written,
        },
    )
    return 0


def owes_reports(history: common.History, release: deployment.Release) -> bool:
    """Whether a fullprocess run deployed release and no run has reported on it since.

    That run was killed or failed after deploying; a release deployed by hand is not
    fullprocess's to report on until new data arrives.
    """
    deployed_here = history.rows(
        "SELECT 1 FROM pipeline_runs WHERE release_id = ? LIMIT 1", (release.id,)
    )
    reported = history.rows("SELECT 1 FROM reports WHERE release_id = ? LIMIT 1", (release.id,))
    return bool(deployed_here) and not reported


def catch_up_reports(
    config: common.Config, history: common.History, release: deployment.Release
) -> int:
    """Report on a release whose deploying run was killed or failed before reporting."""
    logger.info("release %s was deployed by a run that did not report; reporting now", release.id)
    record = RunRecord(history)
    status = report_on(config, release, {}, record)
    if status:
        return status
    print(f"reports caught up: release {release.id}")
    return record.finish("reports caught up", 0)


def close_interrupted_runs(history: common.History) -> None:
    """Mark runs left 'running' (killed: this run holds the lock now) as interrupted."""
    history.execute("UPDATE pipeline_runs SET outcome = 'interrupted' WHERE outcome = 'running'")


def log_failure(what: str, error: Exception) -> None:
    """One line for a failure the user can act on; the traceback too for a bug."""
    if isinstance(error, common.PipelineError | OSError):
        logger.error("%s: %s", what, common.describe_error(error))
    else:
        logger.exception("%s: unexpected error", what)


def run(config: common.Config) -> int:
    """One whole run under the lock; returns the exit status."""
    with pipeline_lock(config) as held:
        if not held:
            logger.info("another fullprocess run holds the lock; leaving it to finish")
            print("skipped: another run is in progress")
            return 0
        with common.open_history(config) as history:
            close_interrupted_runs(history)
            release = deployment.current_release(config.deployment_folder)
            new_files = find_new_files(config, history, release)
            if new_files:
                return process(config, history, new_files, release)
            if release is not None and owes_reports(history, release):
                return catch_up_reports(config, history, release)
            logger.info("no new data in %s", config.input_folder)
            print("no new data")
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__)
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help=f"log to PATH instead of stderr, rotated at {LOG_FILE_BYTES // 1_000_000} MB "
        f"({LOG_FILE_BACKUPS} old files kept), as the cron job does",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        if args.log_file:
            log_to_file(Path(args.log_file))
        return run(common.load_config(args.config))

    return common.run_cli(action)


def log_to_file(path: Path) -> None:
    """Send the log to a file whose size stays bounded instead of stderr (cron runs forever)."""
    import logging.handlers

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    root = logging.getLogger()
    handler.setFormatter(root.handlers[0].formatter)
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
