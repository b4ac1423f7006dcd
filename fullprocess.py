"""One unattended run of the whole pipeline, as cron makes it every 10 minutes.

Take the lock; look for new data (cheaply: no pandas or scikit-learn on that path);
ingest; check the deployed model for drift on the new data; on drift retrain,
rescore and redeploy; report on the model now deployed; record the run. The last
log line of every run says its outcome, and an optional alert command hears about
failures, drift and new deployments.

Exit status: 0 success (also "no new data" and "another run holds the lock"),
1 the run failed before or during deployment (the old deployment stays),
2 the new deployment is in place but the run failed after it (reporting, mostly);
the next run writes the reports it owes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import inputs, releasefolder, retention, runs
from drs.cli import build_parser, configure_logging, run_cli
from drs.clock import utc_now
from drs.config import (
    COLUMNS,
    TARGET,
    Config,
    DriftTest,
    check_drift_test,
    load_config,
)
from drs.errors import DataError, PipelineError
from drs.files import file_sha256, pipeline_lock, read_json, shown_name, some_names
from drs.history import History, open_history
from drs.outcome import REPORTING, Finished, Run, deliver_alerts, owed_reports
from drs.runs import Outcome, ScorePurpose

if TYPE_CHECKING:
    import pandas as pd

    from drs import drift

logger = logging.getLogger(__name__)

CONFUSION_MATRIX_NAME = "confusionmatrix2.png"
API_RETURNS_NAME = "apireturns2.txt"
REPORT_NAME = "report2.pdf"
LOG_FILE_BYTES = 1_000_000
LOG_FILE_BACKUPS = 3


def check_model_drift(
    config: Config,
    release: releasefolder.Release,
    history: History,
    run: Run,
    new_rows: pd.DataFrame,
    trained_on: pd.DataFrame | None = None,
) -> tuple[drift.DriftVerdict, drift.DriftVerdict | None]:
    """Score the deployed model on the new data: the configured test's verdict and the exits'.

    Measured on the new finaldata.csv (the course's test) and on the new files' labelled
    rows (the expected and exits tests); estimated from the calibrated probabilities on
    their rows without labels, held to the same estimate on trained_on, the model's
    training data. Every figure is recorded under a name that says what it is.
    """
    import scoring
    from drs import datachecks, drift, modelling
    from drs.datarules import read_dataset

    judge = datachecks.Judge.of(release)
    new_f1 = modelling.f1_of(judge.model, read_dataset(config.final_data_path))
    batch = some_names(run.new_files)

    def record(f1: float, label: str, purpose: ScorePurpose, sha256: str | None = None) -> None:
        scoring.record_score(config, f1, release.model_sha256, label, purpose, sha256)

    checked = f"{config.final_data_path} with {batch}"
    record(new_f1, checked, ScorePurpose.DRIFT_CHECK, file_sha256(config.final_data_path))
    found = judge.new_rows(new_rows)
    for measured, rows, purpose in (
        (found.measured, "labelled rows of {}", ScorePurpose.NEW_FILES),
        (found.on_labelled, "labelled rows of {}, labels set aside", ScorePurpose.ESTIMATED),
        (found.estimate, "rows without labels of {}", ScorePurpose.ESTIMATED),
    ):
        if measured is not None:
            record(measured.f1, rows.format(batch), purpose)
    run.performance = {
        "expected": judge.expected,
        **found.figures(),
        "calibrated": bool(judge.calibration),
    }
    evidence = drift.Evidence(
        new_f1,
        release.score(),
        drift.past_test_scores(history),
        judge.expected,
        found.measured,
        found.estimate,
        found.on_labelled,
        judge.estimate(trained_on)
        if found.estimate is not None and trained_on is not None
        else None,
    )
    return drift.model_drift(config.drift_test, evidence), found.exits


def update_model(
    config: Config,
    history: History,
    release: releasefolder.Release | None,
    run: Run,
) -> releasefolder.Release:
    """Ingest, check release for drift, and retrain, rescore and redeploy when needed.

    Returns the release live afterwards. Notes what it finds on run.
    """
    import ingestion
    from drs import datachecks, modelling
    from drs.datarules import read_dataset, read_many

    reference = _training_data(config, release, run)
    run.step = "ingestion"
    clock = time.perf_counter()
    result = ingestion.run(config)
    run.timings["ingestion.py"] = time.perf_counter() - clock
    run.rejected = {
        name: result.rejected[name] for name in run.new_files if name in result.rejected
    }
    new_valid = [name for name in run.new_files if name in result.ingested]
    new_rows = read_many([config.input_folder / name for name in new_valid]) if new_valid else None

    run.step = "drift check"
    if reference is not None and new_rows is not None:
        label = f"new files {some_names(new_valid)}"
        run.data_drift = datachecks.measure_data_drift(history, reference, new_rows, label)
    elif reference is not None:
        run.data_drift_skipped = "every new file was rejected"
    if release is not None and new_rows is not None:
        trained_on = reference[0] if reference else None
        run.model_drift, run.exits_drift = check_model_drift(
            config, release, history, run, new_rows, trained_on
        )
        _log_drift(run.model_drift, run.exits_drift)

    if release is None:
        first = retrain(config, run)
        assert first is not None, "a first model goes live: there is no live one to stage beside"
        release = first
    elif new_rows is not None:
        release = challenge(config, run, release, new_rows, result)
    if "training.py" not in run.timings:
        run.step = "timing training"
        clock = time.perf_counter()
        modelling.train(read_dataset(config.final_data_path))  # timed, not kept
        run.timings["training.py"] = time.perf_counter() - clock
    run.step = "checking the test data"
    run.test_data_stale = datachecks.check_test_data(config, release, new_rows)
    if new_rows is not None:
        run.test_data_checked = True
        run.test_data_sha256 = file_sha256(config.test_data_path)
    run.step = "recording"
    assert run.id is not None, "a data run is in the history from its start"
    inputs.mark_processed(
        history, config, {name: result.hashes[name] for name in result.ingested}, run.id
    )
    return release


def _training_data(
    config: Config, release: releasefolder.Release | None, run: Run
) -> tuple[pd.DataFrame, str] | None:
    """The deployed model's training data and its label, for data drift; None, noted, if not."""
    from drs import drift

    if release is None:
        run.data_drift_skipped = "no model deployed yet"
        return None
    try:
        return drift.training_data(config, release)
    except DataError as error:
        run.data_drift_skipped = str(error)
        logger.warning("data drift not measured: %s", error)
        return None


def _log_drift(model_drift: drift.DriftVerdict, exits: drift.DriftVerdict | None) -> None:
    found = "found" if model_drift.drifted else "not found"
    logger.info("model drift %s: %s", found, model_drift.reason)
    if exits is not None:
        changed = "changed" if exits.drifted else "as expected"
        logger.info("exits %s: %s", changed, exits.reason)


# What a drift found on an estimate alone leads to: no model can be trained without labels.
WAIT_FOR_LABELS = (
    "not retrained: the drift rests on an F1 estimated without labels; "
    "waiting for the labels of these rows"
)


def challenge(
    config: Config,
    run: Run,
    release: releasefolder.Release,
    new_rows: pd.DataFrame,
    result: Any,
) -> releasefolder.Release:
    """Challenge the deployed model with models trained on this run's data, when warranted.

    A drift found always leads here (but one resting on an estimate alone waits for
    labels); without one, every run whose new files hold labelled rows challenges the
    champion, except with the course's raw test, where only a drift found retrains.
    Returns the release live afterwards.
    """
    found = [v for v in run.drift_findings() if v is not None and v.drifted]
    if found and all(v.on_estimate for v in found):
        run.retraining = {"reason": WAIT_FOR_LABELS}
        logger.warning("%s", WAIT_FOR_LABELS)
        return release
    if not found and (config.drift_test == DriftTest.RAW or not new_rows[TARGET].notna().any()):
        return release
    changed_here = any(verdict.on_new_rows for verdict in found)
    return retrain_on_the_best_window(config, run, release, result, bool(found), changed_here)


def retrain_on_the_best_window(
    config: Config,
    run: Run,
    release: releasefolder.Release,
    result: Any,
    drift_found: bool,
    changed_here: bool = False,
) -> releasefolder.Release:
    """Train candidates on windows of the data; retrain on the winner's, if one beats release.

    result: the ingestion's; changed_here: a test found this run's rows changed (see
    retraining.choose). When even all the labelled rows are too few to judge, a drift
    found retrains on all the data (the course's rule) and says the choice was not
    judged; without a drift found nothing changes. Returns the release live afterwards.
    """
    import pandas as pd

    from drs import retraining

    run.step = "choosing the retraining data"
    frames = retraining.read_files(config.input_folder, list(result.ingested))
    learnt = release.trained_on()
    chosen = retraining.windows(list(result.ingested), run.new_files, config.newest_files, learnt)
    new_valid = [name for name in run.new_files if name in result.ingested]
    choice = retraining.choose(
        frames,
        chosen,
        new_valid,
        release.load_model(),
        drift_found,
        changed_here,
        learnt,
    )
    if not choice.judged and not drift_found:
        logger.info("no challenge of the deployed model: %s", choice.reason)
        return release
    if not choice.judged:
        choice = choice._replace(
            reason=f"{choice.reason}; drift found, so retrained on all ingested data as the "
            "course does, without comparing the new model with the deployed one"
        )
    run.retraining = choice.summary()
    logger.info("retraining: %s", choice.reason)
    if not choice.judged:
        return retrain(config, run) or release
    if choice.winner is None:
        return release
    if choice.winner.window == retraining.ALL_DATA:
        return retrain(config, run) or release  # on finaldata.csv, as training.py does
    data = pd.concat([frames[name] for name in choice.winner.files], ignore_index=True)
    data = data.drop_duplicates(subset=list(COLUMNS))
    return retrain(config, run, data, choice.winner.files) or release


def retrain(
    config: Config,
    run: Run,
    data: pd.DataFrame | None = None,
    trained_on: list[str] | None = None,
) -> releasefolder.Release | None:
    """Train (on finaldata.csv, or on data: the rows of trained_on), score, deploy or stage.

    Returns the release made live, or None when the new one was only staged.
    """
    import scoring
    import training
    from drs import releases

    run.step = "training"
    clock = time.perf_counter()
    training.run(config, data, trained_on)
    run.timings["training.py"] = time.perf_counter() - clock
    run.step = "scoring"
    f1 = scoring.run(config)
    run.step = "deployment"
    expected = read_json(config.model_card_path).get("expected", {}).get("f1")
    if config.stage_retrained and run.release_before is not None:
        staged = releases.run(config, stage=True)
        run.staged = {"release_id": staged.id, "f1": f1, "expected_f1": expected}
        return None
    release = releases.run(config, before_activate=run.note_release)
    run.deployed = {"release_id": release.id, "f1": f1, "expected_f1": expected}
    return release


def record_diagnostics(
    config: Config, release: releasefolder.Release, run: Run, packages: Any
) -> None:
    """Record the step timings and the package check of this run as the latest diagnostics.

    The API answers /diagnostics from these at once, and the reports show them.
    """
    from drs import diagnosis

    diagnosis.record(
        config,
        {
            "source": "fullprocess.py",
            "execution_time": run.timings,
            "timed": "in process, during the fullprocess.py run (no interpreter start-up)",
            "outdated_packages": packages,
            "release_id": release.id,
        },
    )


def make_reports(
    config: Config, release: releasefolder.Release, run: Run, about: runs.RunRecord
) -> list[Path]:
    """confusionmatrix2.png, apireturns2.txt and report2.pdf on the run about.

    The report's verdict counts run as done (its outcome is settled but for the
    reports). The API calls run in a thread beside the drawing: they mostly wait on HTTP.
    """
    from concurrent.futures import ThreadPoolExecutor

    import reporting

    record = run.record()
    done = record._replace(
        outcome=record.decision or Outcome.REPORTS_CAUGHT_UP, finished_at=utc_now()
    )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-calls") as pool:
        api_returns = pool.submit(write_api_returns, config, release)
        facts = reporting.gather(config, run=about, pending=done)
        confusion_matrix = reporting.confusion_matrix_plot(config, CONFUSION_MATRIX_NAME, facts)
        report = reporting.write_report(config, REPORT_NAME, facts)
        return [confusion_matrix, api_returns.result(), report]


def write_api_returns(config: Config, release: releasefolder.Release) -> Path:
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
            logger.warning(
                "the running API failed (%s), so a temporary one answers for this run", error
            )
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
def temporary_api(config: Config) -> Iterator[str]:
    """Serve the API on a free loopback port for the duration of the block; yields its URL."""
    from drs.web import factory

    with factory.serve_on_loopback(factory.create_app(config)) as url:
        yield url


def process(
    config: Config,
    history: History,
    new_files: dict[Path, str],
    deployed: releasefolder.Release | None,
) -> Finished:
    """Steps 3-7 for the new files, deployed being the release found; returns the exit status."""
    from concurrent.futures import ThreadPoolExecutor

    from drs import diagnosis, riskhistory

    run = Run(config, history)
    run.new_files = sorted(shown_name(path.name) for path in new_files)
    logger.info("new data: %d file(s): %s", len(run.new_files), some_names(run.new_files))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="package-check") as pool:
        # Asked meanwhile; an answer younger than a day is used as it is.
        packages = pool.submit(diagnosis.package_check, config)
        try:
            if deployed is not None:
                run.step = "reading the deployed release"
                run.release_before = {"release_id": deployed.id, "f1": None}
                run.release_before["f1"] = deployed.score()
            release = update_model(config, history, deployed, run)
            run.kept = run.deployed is None and run.staged is None
            run.save_progress()
            run.step = "recording diagnostics"
            record_diagnostics(config, release, run, packages.result())
            run.step = "recording client risks"
            riskhistory.record_live(config, history)
        except (Exception, KeyboardInterrupt) as error:
            run.fail(error)
            return run.finish()
    report_on(config, release, run, run.record())
    return run.finish()


def report_on(
    config: Config, release: releasefolder.Release, run: Run, about: runs.RunRecord
) -> None:
    """Write the reports on the run about, and record them; a failure is noted on run.

    The release stays live whatever happens here.
    """
    run.step = REPORTING
    try:
        run.save_progress()
        run.reports = [str(path) for path in make_reports(config, release, run, about)]
        assert run.history is not None, "a run that reports has its history open"
        run.history.insert(
            "reports",
            {
                "written_at": utc_now(),
                "release_id": release.id,
                "pipeline_run_id": run.id,
                "files_json": run.reports,
            },
        )
    except (Exception, KeyboardInterrupt) as error:
        run.fail(error)
        run.failed_after_deployment = True


def catch_up_reports(
    config: Config, history: History, release: releasefolder.Release, owed: runs.RunRecord
) -> Finished:
    """Write the reports a killed or failed run owes, about what that run did."""
    logger.info(
        "the run started at %s did not write its reports; writing them now", owed.started_at
    )
    run = Run(config, history)
    run.about_run = owed.id
    run.release_before = {"release_id": release.id, "f1": None}
    report_on(config, release, run, owed)
    if run.problem is not None:
        return run.finish()
    return run.finish(Outcome.REPORTS_CAUGHT_UP.value, Outcome.REPORTS_CAUGHT_UP)


def run(config: Config) -> int:
    """One whole run under the lock, then the owed alert; the exit status.

    Every path ends in Run.finish. The alert command runs after the lock is released,
    so a slow command never holds up the pipeline.
    """
    with pipeline_lock(config) as held:
        finished = run_locked(config) if held else None
    if finished is None:
        return (
            Run(config)
            .finish(
                "skipped: another run (fullprocess.py, or a step run by hand) holds the lock",
                Outcome.SKIPPED,
            )
            .say()
        )
    deliver_alerts(config)
    return finished.say()


def run_locked(config: Config) -> Finished:
    """The run's work while it holds the lock; the exit status."""
    opening = Run(config)
    opening.step = "opening the run history"
    try:
        history = open_history(config)
        runs.close_interrupted(history)
    except (PipelineError, OSError) as error:
        opening.fail(error)
        return opening.finish()
    retention.maintain(history, config.history_days)  # at most once a day, bounded
    with history:
        return look_and_process(config, history)


def look_and_process(config: Config, history: History) -> Finished:
    """Look for new data and process it, or catch up on reports owed; the exit status."""
    looking = Run(config, history, record_now=False)
    looking.step = "looking for new data"
    try:
        check_drift_test(config)
        release = releasefolder.current_release(config.deployment_folder)
        new_files = inputs.find_new_files(config, history, release)
        owed = None if new_files or release is None else owed_reports(history)
    except (PipelineError, OSError, KeyboardInterrupt) as error:
        looking.fail(error)
        return looking.finish()
    if new_files:
        return process(config, history, new_files, release)
    if owed is not None and release is not None:
        return catch_up_reports(config, history, release, owed)
    logger.info("no new data in %s", config.input_folder)
    return looking.finish(Outcome.NO_NEW_DATA.value, Outcome.NO_NEW_DATA)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
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
        try:
            config = load_config(args.config)
        except PipelineError as error:
            failed = Run(None)
            failed.step = "reading the config"
            failed.fail(error)
            return failed.finish().say()
        return run(config)

    return run_cli(action)


def log_to_file(path: Path) -> None:
    """Send the log to a file whose size stays bounded instead of stderr (cron runs forever)."""
    from drs.cli import RotatingLog

    path.parent.mkdir(parents=True, exist_ok=True)
    configure_logging(handler=RotatingLog(path, LOG_FILE_BYTES, LOG_FILE_BACKUPS))


if __name__ == "__main__":
    configure_logging()
    status = main()
    # The run is over (history closed, log flushed at exit): spare the interpreter's
    # last garbage searches through every object it made, a sixth of a quiet tick.
    gc.freeze()
    raise SystemExit(status)
