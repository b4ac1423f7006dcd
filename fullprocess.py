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
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import drift, inputs, releases, retention
from drs.cli import build_parser, configure_logging, describe_error, run_cli
from drs.clock import utc_now
from drs.config import COLUMNS, FEATURES, TARGET, Config, load_config
from drs.errors import DataError, PipelineError
from drs.files import (
    NAMES_SHOWN,
    file_sha256,
    first_names,
    pipeline_lock,
    read_json,
    shown_name,
    some_names,
)
from drs.history import History, open_history

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FAILED_AFTER_DEPLOYMENT = 2
CONFUSION_MATRIX_NAME = "confusionmatrix2.png"
API_RETURNS_NAME = "apireturns2.txt"
REPORT_NAME = "report2.pdf"
LOG_FILE_BYTES = 1_000_000
LOG_FILE_BACKUPS = 3
ALERT_TIMEOUT_S = 30.0
ALERT_OUTPUT_LINES = 20  # lines of a failed alert command's error output kept for its message
ALERT_OUTPUT_WAIT_S = 0.5
# Outcomes that the alert command hears about (and failures, whatever their step).
ALERTED = ("redeployed", "first model deployed")


class Run:
    """What one run found and did: its history row, its last log line, its alert.

    The steps note what they find here; finish() alone decides the outcome and the
    exit status, records them and says them.
    """

    def __init__(
        self,
        config: Config | None,
        history: History | None = None,
        record_now: bool = True,
    ) -> None:
        """record_now False: a run that records itself only if it fails (a cron tick)."""
        self.config = config
        self.history = history
        self.clock = time.monotonic()
        self.started_at = utc_now()
        self.id: int | None = None
        if history is not None and record_now:
            self._insert()
        self.step = "start"
        self.new_files: list[str] = []
        self.rejected: dict[str, str] = {}
        self.release_before: dict[str, Any] | None = None
        self.model_drift: drift.DriftVerdict | None = None
        self.exits_drift: drift.DriftVerdict | None = None
        self.data_drift: dict[str, Any] | None = None
        self.data_drift_skipped: str | None = None
        self.deployed: dict[str, Any] | None = None
        self.staged: dict[str, Any] | None = None
        self.performance: dict[str, Any] | None = None
        self.retraining: dict[str, Any] | None = None
        self.test_data_stale: str | None = None
        self.reports: list[str] = []
        self.timings: dict[str, float] = {}
        self.problem: str | None = None
        self.failed_after_deployment = False

    def _insert(self) -> None:
        assert self.history is not None
        self.id = self.history.insert(
            "pipeline_runs", {"started_at": self.started_at, "outcome": "running"}
        )

    def note_release(self, release_id: str) -> None:
        """Recorded before the release goes live, so no kill hides what this run deployed."""
        self.deployed = {"release_id": release_id}
        if self.history is not None and self.id is not None:
            self.history.update("pipeline_runs", self.id, {"release_id": release_id})

    def fail(self, error: BaseException) -> None:
        """Note a failure of the current step; logged with a traceback when it is a bug."""
        if isinstance(error, KeyboardInterrupt):
            self.problem = "interrupted"
        elif isinstance(error, PipelineError | OSError):
            self.problem = describe_error(error)
        else:
            logger.exception("%s failed with an unexpected error", self.step)
            self.problem = f"unexpected error ({type(error).__name__}: {error}); see the log"
        deployed_id = (self.deployed or {}).get("release_id")
        if deployed_id is not None and self.config is not None:
            with contextlib.suppress(PipelineError, OSError):
                live = releases.current_release(self.config.deployment_folder)
                self.failed_after_deployment = live is not None and live.id == deployed_id

    def outcome(self) -> str:
        if self.problem is not None:
            return f"failed at {self.step}"
        if self.staged is not None:
            return "retrained and staged"
        if self.deployed is None:
            return "kept the deployed model"
        return "redeployed" if self.release_before else "first model deployed"

    def exit_code(self) -> int:
        if self.problem is None:
            return EXIT_OK
        return EXIT_FAILED_AFTER_DEPLOYMENT if self.failed_after_deployment else EXIT_FAILED

    def line(self, headline: str | None = None) -> str:
        """The outcome, then what led to it, in words a person on call reads."""
        code = self.exit_code()
        parts = [headline or self._headline()]
        if self.new_files:
            rejected = f", {len(self.rejected)} rejected" if self.rejected else ""
            parts.append(f"new data: {some_names(self.new_files)}{rejected}")
        if self.model_drift is not None:
            found = "model drift found" if self.model_drift.drifted else "no model drift"
            parts.append(f"{found} ({self.model_drift.reason})")
        if self.exits_drift is not None and self.exits_drift.drifted:
            parts.append(f"attrition changed ({self.exits_drift.reason})")
        if self.retraining is not None:
            parts.append(f"retraining: {self.retraining['reason']}")
        new = self.deployed or self.staged
        if new and "f1" in new:
            before = (self.release_before or {}).get("f1")
            expected = new.get("expected_f1")
            hoped = f" (expected {expected:.4f}, cross-validated)" if expected else ""
            if self.staged is not None:
                live = f"live {before:.4f}, " if before is not None else ""
                parts.append(f"test F1 {live}staged {new['f1']:.4f}{hoped}")
            else:
                change = f"{before:.4f} -> " if before is not None else ""
                parts.append(f"test F1 {change}{new['f1']:.4f}{hoped}")
        if self.test_data_stale is not None:
            parts.append(f"TEST DATA STALE: {self.test_data_stale}")
        if self.data_drift is not None:
            parts.append(drift.describe_feature_drift(self.data_drift["features"]))
        elif self.data_drift_skipped:
            parts.append(f"data drift not measured ({self.data_drift_skipped})")
        if self.reports:
            parts.append(f"reports: {', '.join(Path(p).name for p in self.reports)}")
        parts.append(f"{time.monotonic() - self.clock:.1f} s")
        parts.append(f"exit {code}")
        return "; ".join(parts)

    def _headline(self) -> str:
        outcome = self.outcome()
        before = (self.release_before or {}).get("release_id")
        after = (self.deployed or {}).get("release_id")
        if self.problem is not None:
            if self.failed_after_deployment:
                live = after or before
                where = f"release {live} is live; the next run writes the reports"
            elif before is not None:
                where = f"the deployed model is unchanged (release {before})"
            else:
                where = "no model is deployed yet"
            return f"FAILED at {self.step}: {self.problem}; {where}"
        if outcome == "redeployed":
            return f"redeployed: release {after} replaces {before}"
        if outcome == "first model deployed":
            return f"first model deployed: release {after}"
        if outcome == "retrained and staged":
            return (
                f"retrained and staged: release {self.staged['release_id']} waits for "
                f"deployment.py --promote; release {before} stays live"
            )
        return f"kept the deployed model (release {before})"

    def summary(self) -> dict[str, Any]:
        """The run as JSON: the history's record of it and what the alert command reads."""
        return {
            "outcome": self.outcome(),
            "exit_code": self.exit_code(),
            "problem": self.problem,
            "step": self.step,
            # Bounded whatever the number of files: the first few and the count.
            "new_files": first_names(self.new_files),
            "new_file_count": len(self.new_files),
            "rejected": dict(list(self.rejected.items())[:NAMES_SHOWN]),
            "rejected_count": len(self.rejected),
            "release_before": self.release_before,
            "deployed": self.deployed,
            "staged": self.staged,
            "model_drift": self.model_drift._asdict() if self.model_drift else None,
            "exits_drift": self.exits_drift._asdict() if self.exits_drift else None,
            "performance": self.performance,
            "retraining": self.retraining,
            "test_data_stale": self.test_data_stale,
            "data_drift": self.data_drift,
            "data_drift_skipped": self.data_drift_skipped,
            "reports": self.reports,
            "timings": self.timings,
            "duration_s": round(time.monotonic() - self.clock, 3),
        }

    def finish(self, headline: str | None = None, outcome: str | None = None) -> int:
        """Record the run, alert when warranted, and log the outcome line last; the exit status.

        Neither a history that cannot be written nor a failing alert command hides the
        outcome line: the line says so instead.
        """
        code = self.exit_code()
        line = self.line(headline)
        summary = {**self.summary(), "outcome": outcome or self.outcome(), "line": line}
        try:
            self._record(summary, code)
        except (PipelineError, OSError) as error:
            line += f"; not recorded in the run history ({describe_error(error)})"
        if self.config is not None and (
            self.problem is not None
            or self.deployed is not None
            or self.staged is not None
            or self.test_data_stale is not None
            or self._drift_found()
        ):
            alert(self.config, line, summary)
        (logger.error if self.problem else logger.info)("%s", line)
        print(line)
        return code

    def _record(self, summary: dict[str, Any], code: int) -> None:
        if self.history is not None and self.id is None and self.problem is not None:
            self._insert()
        if self.history is not None and self.id is not None:
            self.history.update(
                "pipeline_runs",
                self.id,
                {
                    "finished_at": utc_now(),
                    "outcome": summary["outcome"],
                    "exit_code": code,
                    "detail_json": summary,
                },
            )

    def _drift_found(self) -> bool:
        """Whether a test found the model wrong (feature drift alone is reported, not alerted:
        clients who look different can still be judged right by the model)."""
        return any(found is not None and found.drifted for found in self.drift_findings())

    def drift_findings(self) -> list[drift.DriftVerdict | None]:
        return [self.model_drift, self.exits_drift]


def alert(config: Config, line: str, summary: dict[str, Any]) -> None:
    """Run the alert command with the outcome line and the JSON summary on its stdin.

    Bounded in time: the command runs in a process group of its own, killed whole when
    it overstays; what it prints is discarded but for the last lines of its errors, so a
    chatty command costs no memory. Whatever it does, the run's outcome and exit status
    stay as they are.
    """
    command = config.alert_command
    if command is None:
        return
    import collections
    import signal
    import subprocess
    import threading

    payload = f"{line}\n{json.dumps(summary, indent=2, default=str)}\n"
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=config.root,
            start_new_session=True,
        )
    except OSError as error:
        logger.warning("alert command could not start: %s", describe_error(error))
        return
    said: collections.deque[bytes] = collections.deque(maxlen=ALERT_OUTPUT_LINES)

    # Drained by a thread of its own: a child left in the background keeps the pipe open,
    # and the run must not wait for that.
    def drain(stream: Any = process.stderr) -> None:
        with stream:
            said.extend(stream)

    reader = threading.Thread(target=drain, name="alert-output", daemon=True)
    reader.start()
    try:
        with contextlib.suppress(BrokenPipeError):  # a command that reads nothing
            process.stdin.write(payload.encode("utf-8", "backslashreplace"))
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.wait(ALERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        logger.warning("alert command still running after %g s; stopped it", ALERT_TIMEOUT_S)
        return
    reader.join(ALERT_OUTPUT_WAIT_S)
    if process.returncode != 0:
        last = b"".join(said).decode("utf-8", "replace").strip().splitlines()[-1:]
        logger.warning(
            "alert command failed (exit %d): %s", process.returncode, (last or ["no message"])[0]
        )


def find_new_files(
    config: Config, history: History, release: releases.Release | None
) -> dict[Path, str]:
    """Input files whose name and content the last processed ingestion did not take: -> SHA-256.

    New data means the input folder differs from what the last run of this pipeline
    ingested: a content seen long ago but not in that ingestion is new again. A file
    rejected before with the same content is not retried. With no processed ingestion
    recorded (a lost history, a deployment made by hand), the files the deployed
    release's ingestedfiles.txt names count as processed. A file removed from the
    folder is not new data; it drops out at the next ingestion.
    """
    folder = input_folder_key(config)
    processed = set(
        history.tuples("SELECT name, sha256 FROM processed_files WHERE folder = ?", (folder,))
    )
    seen = processed | set(inputs.known_rejections(history, config.input_folder))
    deployed_names = set(release.ingested_files()) if release and not processed else set()
    listed = inputs.listing(config.input_folder)
    hashes = inputs.content_hashes(history, folder, listed)
    return {
        Path(listed[name][0]): digest
        for name, digest in hashes.items()
        if name not in deployed_names and (name, digest) not in seen
    }


def input_folder_key(config: Config) -> str:
    """The input folder as processed_files records it: relative to the config's folder if inside.

    A checkout moved together with its history then still knows its processed files.
    """
    if config.input_folder.is_relative_to(config.root):
        return str(config.input_folder.relative_to(config.root))
    return str(config.input_folder)


def mark_processed(history: History, config: Config, ingested: dict[str, str], run_id: int) -> None:
    """Remember what this ingestion took (name -> SHA-256) as the last processed one.

    Only the difference is written: with a year of files, rewriting every row each run
    would cost more than the rest of the record.
    """
    now = utc_now()
    folder = input_folder_key(config)
    before = set(
        history.tuples("SELECT name, sha256 FROM processed_files WHERE folder = ?", (folder,))
    )
    after = set(ingested.items())
    with history.transaction():
        history.execute_many(
            "DELETE FROM processed_files WHERE folder = ? AND name = ? AND sha256 = ?",
            ((folder, name, digest) for name, digest in before - after),
        )
        history.execute_many(
            "INSERT OR REPLACE INTO processed_files (folder, name, sha256, processed_at, "
            "pipeline_run_id) VALUES (?, ?, ?, ?, ?)",
            ((folder, name, digest, now, run_id) for name, digest in after - before),
        )


def check_model_drift(
    config: Config,
    release: releases.Release,
    history: History,
    run: Run,
    new_rows: pd.DataFrame,
    trained_on: pd.DataFrame | None = None,
) -> tuple[drift.DriftVerdict, drift.DriftVerdict | None]:
    """Score the deployed model on the new data: the configured test's and the exits verdicts.

    On the new finaldata.csv (the course's raw test and the two score-history tests);
    on the labelled rows of the new files only, the F1 the expected test compares with
    the model's expected F1, and the exits that the exits test compares with those the
    model expected (None without labelled rows); on their rows without labels, the F1
    the model expects of itself from its calibrated probabilities (also worked out on
    the labelled rows, to show how good an estimate it is), held to the same estimate on
    trained_on, the model's training data. Every figure is recorded in the history under
    a name that says what it is.
    """
    import scoring
    from drs import modelling
    from drs.datarules import read_dataset

    model = release.load_model()
    new_f1 = modelling.f1_of(model, read_dataset(config.final_data_path))
    batch = some_names(run.new_files)

    def record(f1: float, label: str, purpose: str, sha256: str | None = None) -> None:
        scoring.record_score(config, f1, release.model_sha256, label, purpose, sha256)

    record(
        new_f1,
        f"{config.final_data_path} with {batch}",
        "drift-check",
        file_sha256(config.final_data_path),
    )
    expected = release.model_card().get("expected")
    calibration = expected.get("calibration") if isinstance(expected, dict) else None

    def estimate_on(rows: pd.DataFrame) -> drift.Measured:
        probabilities = model.predict_proba(rows[list(FEATURES)])[:, 1]
        return drift.estimated(drift.calibrated(probabilities, calibration), probabilities > 0.5)

    labelled = new_rows[new_rows[TARGET].notna()]
    unlabelled = new_rows[new_rows[TARGET].isna()]
    measured = on_labelled = exits = None
    if len(labelled):
        actual = labelled[TARGET].astype(int)
        probabilities = model.predict_proba(labelled[list(FEATURES)])[:, 1]
        measured = drift.realised(actual, probabilities > 0.5)
        record(measured.f1, f"labelled rows of {batch}", "new-files")
        on_labelled = estimate_on(labelled)
        record(on_labelled.f1, f"labelled rows of {batch}, labels set aside", "estimated-cbpe")
        exits = drift.exits(actual, probabilities)
    estimate = None
    if len(unlabelled):
        estimate = estimate_on(unlabelled)
        record(estimate.f1, f"rows without labels of {batch}", "estimated-cbpe")
    run.performance = {
        "expected": expected,
        "new_files": measured._asdict() if measured else None,
        "estimated": estimate._asdict() if estimate else None,
        "estimated_on_labelled": on_labelled._asdict() if on_labelled else None,
        "calibrated": bool(calibration),
    }
    evidence = drift.Evidence(
        new_f1,
        release.score(),
        drift.past_test_scores(history),
        expected if isinstance(expected, dict) else None,
        measured,
        estimate,
        on_labelled,
        estimate_on(trained_on) if estimate is not None and trained_on is not None else None,
    )
    return drift.model_drift(config.drift_test, evidence), exits


def measure_data_drift(
    history: History, reference: Any, current: pd.DataFrame, label: str
) -> dict[str, Any]:
    """Feature drift of the new files against the deployed model's training data; recorded."""
    frame, reference_label = reference
    measured = drift.measure(frame, reference_label, current, label)
    now = utc_now()
    for feature, found in measured["features"].items():
        history.insert(
            "data_drift",
            {
                "recorded_at": now,
                "feature": feature,
                "measure": drift.FEATURE_DRIFT_MEASURE,
                "value": found["value"],
                "threshold": found["threshold"],
                "drifted": int(found["drifted"]),
                "reference": reference_label,
                "current": label,
            },
        )
    logger.info(
        "data drift (%s, threshold %g) of %s against the %s: %s",
        drift.FEATURE_DRIFT_MEASURE,
        drift.FEATURE_DRIFT_THRESHOLD,
        label,
        reference_label,
        ", ".join(
            f"{feature} {found['value']:.3f} {'DRIFTED' if found['drifted'] else 'ok'}"
            if found["value"] is not None
            else f"{feature} unknown"
            for feature, found in measured["features"].items()
        ),
    )
    return measured


def update_model(
    config: Config,
    history: History,
    release: releases.Release | None,
    run: Run,
) -> releases.Release:
    """Ingest, check release for drift, and retrain, rescore and redeploy when needed.

    Returns the release live afterwards. Notes what it finds on run.
    """

    import ingestion
    from drs import modelling
    from drs.datarules import read_dataset, read_many

    reference = None
    if release is None:
        run.data_drift_skipped = "no model deployed yet"
    else:
        try:
            reference = drift.training_data(config, release)
        except DataError as error:
            run.data_drift_skipped = str(error)
            logger.warning("data drift not measured: %s", error)

    run.step = "ingestion"
    clock = time.perf_counter()
    result = ingestion.run(config)
    run.timings["ingestion.py"] = time.perf_counter() - clock
    run.rejected = {
        name: result.rejected[name] for name in run.new_files if name in result.rejected
    }
    new_valid = [name for name in run.new_files if name in result.ingested]
    new_rows = read_many([config.input_folder / name for name in new_valid]) if new_valid else None
    label = f"new files {some_names(new_valid)}"

    run.step = "drift check"
    if reference is not None and new_rows is not None:
        run.data_drift = measure_data_drift(history, reference, new_rows, label)
    elif reference is not None:
        run.data_drift_skipped = "every new file was rejected"
    if release is not None and new_rows is not None:
        run.model_drift, run.exits_drift = check_model_drift(
            config, release, history, run, new_rows, reference[0] if reference else None
        )
        logger.info(
            "model drift %s: %s",
            "found" if run.model_drift.drifted else "not found",
            run.model_drift.reason,
        )
        if run.exits_drift is not None:
            logger.info(
                "exits %s: %s",
                "changed" if run.exits_drift.drifted else "as expected",
                run.exits_drift.reason,
            )

    if release is None:
        release = retrain(config, run)
    elif new_rows is not None:
        release = challenge(config, run, release, new_rows, result)
    if "training.py" not in run.timings:
        run.step = "timing training"
        clock = time.perf_counter()
        modelling.train(read_dataset(config.final_data_path))  # timed, not kept
        run.timings["training.py"] = time.perf_counter() - clock
    run.step = "checking the test data"
    run.test_data_stale = check_test_data(config, release, new_rows)
    run.step = "recording"
    mark_processed(history, config, {name: result.hashes[name] for name in result.ingested}, run.id)
    return release


# What a drift found on an estimate alone leads to: no model can be trained without labels.
WAIT_FOR_LABELS = (
    "not retrained: the drift rests on an F1 estimated without labels; "
    "waiting for the labels of these rows"
)


def challenge(
    config: Config,
    run: Run,
    release: releases.Release,
    new_rows: pd.DataFrame,
    result: Any,
) -> releases.Release:
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
    if not found and (config.drift_test == "raw" or not new_rows[TARGET].notna().any()):
        return release
    return retrain_on_the_best_window(config, run, release, result, bool(found))


def retrain_on_the_best_window(
    config: Config,
    run: Run,
    release: releases.Release,
    result: Any,
    drift_found: bool,
) -> releases.Release:
    """Train candidates on windows of the data; retrain on the winner's, if one beats release.

    result: the ingestion's. When this run's labelled rows are too few to judge, a drift
    found retrains on all the data (the course's rule) and says the choice was not
    judged; without a drift found nothing changes. Returns the release live afterwards.
    """
    import pandas as pd

    from drs import retraining

    run.step = "choosing the retraining data"
    frames = retraining.read_files(config.input_folder, list(result.ingested))
    chosen = retraining.windows(list(result.ingested), run.new_files, config.newest_files)
    new_valid = [name for name in run.new_files if name in result.ingested]
    choice = retraining.choose(frames, chosen, new_valid, release.load_model(), drift_found)
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
) -> releases.Release | None:
    """Train (on finaldata.csv, or on data: the rows of trained_on), score, deploy or stage.

    Returns the release made live, or None when the new one was only staged.
    """
    import scoring
    import training

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


def check_test_data(
    config: Config, release: releases.Release, new_rows: pd.DataFrame | None
) -> str | None:
    """Whether testdata.csv still represents the clients; the reason when it does not.

    Logged as a warning with what to do; the outcome line, the report and the page say it.
    """
    if new_rows is None:
        return None
    from drs.datarules import read_dataset

    test = read_dataset(config.test_data_path)
    labelled = test[test[TARGET].notna()]
    model = release.load_model()
    chance = model.predict_proba(labelled[list(FEATURES)])[:, 1]
    on_test = drift.realised(labelled[TARGET].astype(int), chance > 0.5)
    expected = release.model_card().get("expected")
    known = expected if isinstance(expected, dict) else None
    calibration = (known or {}).get("calibration")
    estimate = drift.estimated(drift.calibrated(chance, calibration), chance > 0.5)
    reason = drift.stale_test_data(on_test, known, estimate)
    if reason is not None:
        logger.warning("%s: %s. %s", drift.STALE_TEST_DATA, reason, drift.STALE_TEST_ACTION)
    return reason


def record_diagnostics(config: Config, release: releases.Release, run: Run, packages: Any) -> None:
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


def make_reports(config: Config, release: releases.Release, run: Run) -> list[Path]:
    """confusionmatrix2.png, apireturns2.txt and report2.pdf for the deployed model.

    The API calls run in a thread beside the drawing: they mostly wait on HTTP.
    """
    from concurrent.futures import ThreadPoolExecutor

    import reporting

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-calls") as pool:
        api_returns = pool.submit(write_api_returns, config, release)
        facts = reporting.gather(config, run=run.summary())
        confusion_matrix = reporting.confusion_matrix_plot(config, CONFUSION_MATRIX_NAME, facts)
        report = reporting.write_report(config, REPORT_NAME, facts)
        return [confusion_matrix, api_returns.result(), report]


def write_api_returns(config: Config, release: releases.Release) -> Path:
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
    deployed: releases.Release | None,
) -> int:
    """Steps 3-7 for the new files, deployed being the release found; returns the exit status."""
    from concurrent.futures import ThreadPoolExecutor

    from drs import diagnosis, riskhistory

    run = Run(config, history)
    run.new_files = sorted(shown_name(path.name) for path in new_files)
    logger.info("new data: %d file(s): %s", len(run.new_files), some_names(run.new_files))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="package-check") as pool:
        # The package index answers within a few seconds at most; it is asked meanwhile.
        packages = pool.submit(diagnosis.outdated_packages_list, config)
        try:
            if deployed is not None:
                run.release_before = {"release_id": deployed.id, "f1": None}
                run.release_before["f1"] = deployed.score()
            release = update_model(config, history, deployed, run)
            run.step = "recording diagnostics"
            record_diagnostics(config, release, run, packages.result())
            run.step = "recording client risks"
            riskhistory.record_live(config, history)
        except (Exception, KeyboardInterrupt) as error:
            run.fail(error)
            return run.finish()
    report_on(config, release, run)
    return run.finish()


def report_on(config: Config, release: releases.Release, run: Run) -> None:
    """Write the reports and record them; a failure is noted on run (the release stays)."""
    run.step = "reporting"
    try:
        run.reports = [str(path) for path in make_reports(config, release, run)]
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


def owes_reports(history: History, release: releases.Release) -> bool:
    """Whether a fullprocess run deployed release and no run has reported on it since.

    That run was killed or failed after deploying; a release deployed by hand is not
    fullprocess's to report on until new data arrives.
    """
    deployed_here = history.rows(
        "SELECT 1 FROM pipeline_runs WHERE release_id = ? LIMIT 1", (release.id,)
    )
    reported = history.rows("SELECT 1 FROM reports WHERE release_id = ? LIMIT 1", (release.id,))
    return bool(deployed_here) and not reported


def catch_up_reports(config: Config, history: History, release: releases.Release) -> int:
    """Report on a release whose deploying run was killed or failed before reporting."""
    logger.info("release %s was deployed by a run that did not report; reporting now", release.id)
    run = Run(config, history)
    run.release_before = {"release_id": release.id, "f1": None}
    report_on(config, release, run)
    if run.problem is not None:
        return run.finish()
    return run.finish(f"reports caught up for release {release.id}", "reports caught up")


def close_interrupted_runs(history: History) -> None:
    """Mark runs left 'running' (killed: this run holds the lock now) as interrupted."""
    history.execute("UPDATE pipeline_runs SET outcome = 'interrupted' WHERE outcome = 'running'")


def run(config: Config) -> int:
    """One whole run under the lock; returns the exit status. Every path ends in Run.finish."""
    with pipeline_lock(config) as held:
        if not held:
            return Run(config).finish(
                "skipped: another pipeline run (fullprocess.py, or a step run by hand) "
                "holds the lock"
            )
        opening = Run(config)
        opening.step = "opening the run history"
        try:
            history = open_history(config)
            close_interrupted_runs(history)
        except (PipelineError, OSError) as error:
            opening.fail(error)
            return opening.finish()
        retention.maintain(history, config.history_days)  # at most once a day, bounded
        with history:
            return look_and_process(config, history)


def look_and_process(config: Config, history: History) -> int:
    """Look for new data and process it, or catch up on reports owed; the exit status."""
    looking = Run(config, history, record_now=False)
    looking.step = "looking for new data"
    try:
        drift.check_test_name(config)
        release = releases.current_release(config.deployment_folder)
        new_files = find_new_files(config, history, release)
        owed = release is not None and not new_files and owes_reports(history, release)
    except (PipelineError, OSError, KeyboardInterrupt) as error:
        looking.fail(error)
        return looking.finish()
    if new_files:
        return process(config, history, new_files, release)
    if owed:
        return catch_up_reports(config, history, release)
    return looking.finish(f"no new data in {config.input_folder}")


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
            return failed.finish()
        return run(config)

    return run_cli(action)


def log_to_file(path: Path) -> None:
    """Send the log to a file whose size stays bounded instead of stderr (cron runs forever)."""
    from drs.cli import RotatingLog

    path.parent.mkdir(parents=True, exist_ok=True)
    configure_logging(handler=RotatingLog(path, LOG_FILE_BYTES, LOG_FILE_BACKUPS))


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
