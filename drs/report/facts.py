"""What a report shows, read once: the deployment, its confusion counts, the history, the data."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import diagnosis, drift, releasefolder, riskhistory, runs, state, timeline
from drs.cli import describe_error
from drs.clock import parse_stamp, utc_now
from drs.config import FEATURES, TARGET, Config
from drs.datarules import read_dataset
from drs.errors import DataError, PipelineError
from drs.files import csv_files, file_name_problem
from drs.history import open_history
from drs.report.words import stamp
from drs.runs import RunRecord, Verdict

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

SCORE_ROWS_SHOWN = 6


RECENT_RUNS = 300  # finished runs read for the drift thresholds drawn and the latest check


@dataclass(frozen=True)
class Confusion:
    """Confusion counts of the deployed model on a dataset, and what they were counted on."""

    matrix: np.ndarray  # rows: actual 0, 1; columns: predicted 0, 1
    labels: list[int]
    release: releasefolder.Release
    dataset: Path
    rows: int  # rows with a target, the ones counted

    def rates(self) -> dict[str, float | None]:
        """Accuracy, precision, recall and F1 from the counts (None where undefined)."""
        (tn, fp), (fn, tp) = self.matrix.tolist()

        def ratio(top: int, bottom: int) -> float | None:
            return top / bottom if bottom else None

        return {
            "accuracy": ratio(tn + tp, tn + fp + fn + tp),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "F1": ratio(2 * tp, 2 * tp + fp + fn) if tp + fp + fn else 0.0,
        }


def confusion(config: Config, release: releasefolder.Release | None = None) -> Confusion:
    """Count the deployed model's predictions on testdata.csv against its target."""
    from sklearn.metrics import confusion_matrix

    release = release or diagnosis.deployed_release(config)
    data = read_dataset(config.test_data_path)
    labelled = data[data[TARGET].notna()]
    if labelled.empty:
        raise DataError(f"{config.test_data_path}: no row with a value in 'exited'")
    predictions = release.load_model().predict(labelled[list(FEATURES)])
    labels = [0, 1]
    matrix = confusion_matrix(labelled[TARGET].astype(int), predictions, labels=labels)
    return Confusion(matrix, labels, release, config.test_data_path, len(labelled))


@dataclass(frozen=True)
class Facts:
    """Everything a report shows, gathered once (one history read, one confusion matrix)."""

    config: Config
    release: releasefolder.Release
    counted: Confusion
    run: RunRecord | None  # the run the report is about: the writer's, or the latest
    verdict: Verdict  # the system's state now, as every surface says it
    scores: list[dict[str, Any]]  # as recorded, or averaged by `grouped` (drs.timeline)
    grouped: str | None
    recent_scores: list[dict[str, Any]]  # the newest, as recorded
    deployments: list[dict[str, Any]]
    checks: list[RunRecord]  # finished pipeline runs with a model-drift verdict
    ingestion: dict[str, Any] | None
    diagnosed: dict[str, Any] | None
    data: pd.DataFrame | str  # finaldata.csv, or why it is not available
    data_drift: dict[str, Any] | str  # the recorded or measured story, or why there is none
    packages: list[dict[str, Any]] | None
    timings: dict[str, float] | None  # step timings of the run the report is about
    written_at: str
    lifts: list[riskhistory.Lift] = dataclasses.field(default_factory=list)


def gather(
    config: Config,
    run: RunRecord | None = None,
    packages: list[dict[str, Any]] | None = None,
    pending: RunRecord | None = None,
) -> Facts:
    """Read what the report needs: the deployment, the confusion matrix, the history, the data.

    run: the record of the fullprocess.py run the report is about (default: the latest
    run that decided something). pending: the record of the run writing the report,
    counted in the verdict as done. packages: an outdated_packages_list answer
    (default: the latest recorded one).
    """

    release = diagnosis.deployed_release(config)
    counted = confusion(config, release)
    with open_history(config) as history:
        grouped = timeline.bucket(history)
        scores = timeline.scores(history, grouped)
        recent = timeline.recent_scores(history, SCORE_ROWS_SHOWN)
        deployments = timeline.deployments(history, grouped)
        finished = runs.latest(history, RECENT_RUNS)
        ingestion_runs = history.rows("SELECT * FROM ingestion_runs ORDER BY id DESC LIMIT 1")
        lifts = riskhistory.lift_of(riskhistory.scorings(history))
        verdict = state.verdict(state.read(config, pending=pending, opened=history))
    finished = [r for r in finished if r.finished]
    latest = next((r for r in reversed(finished) if r.decision is not None), None)
    return Facts(
        config=config,
        release=release,
        counted=counted,
        run=run or latest,
        verdict=verdict,
        scores=[row for row in scores if parse_stamp(row["recorded_at"])],
        grouped=grouped,
        recent_scores=[row for row in recent if parse_stamp(row["recorded_at"])],
        deployments=[row for row in deployments if parse_stamp(row["recorded_at"])],
        checks=[r for r in finished if r.model_drift is not None],
        ingestion=ingestion_runs[0] if ingestion_runs else None,
        diagnosed=diagnosis.latest_recorded(config),
        data=_or_reason(lambda: diagnosis.final_data(config)),
        data_drift=_data_drift_story(config, release, run or latest, finished),
        packages=packages,
        timings=dict(run.timings) if run else None,
        written_at=utc_now(),
        lifts=lifts,
    )


def _or_reason(read: Callable[[], Any]) -> Any:
    """read(), or the one line saying why it is not available."""
    try:
        return read()
    except (PipelineError, OSError) as error:
        return describe_error(error)


def _data_drift_story(
    config: Config,
    release: releasefolder.Release,
    run: RunRecord | None,
    finished: list[RunRecord],
) -> dict[str, Any] | str:
    """The newest batch against the training data of the model deployed when it arrived.

    As the latest run measured and recorded it; with no run that measured it (steps
    run by hand), measured now: the deployed model's training data against the input
    files it was not trained on. Never against the test data.
    """
    measured = [r for r in finished if r.data_drift]
    if run and run.data_drift:
        return {**run.data_drift, "when": "measured by the run this report is about"}
    if measured:
        latest = measured[-1]
        return {
            **(latest.data_drift or {}),
            "when": f"measured at {stamp(latest.finished_at)} UTC",
        }
    newer = [
        path
        for path in (csv_files(config.input_folder) if config.input_folder.is_dir() else [])
        if path.name not in release.trained_on() and file_name_problem(path.name) is None
    ]
    frames = []
    for path in newer:
        try:
            frames.append((path.name, read_dataset(path)))
        except DataError as error:
            logger.info("data drift: leaving out %s", error)
    if not frames:
        return (
            "No input file is newer than the deployed model's training data "
            f"({', '.join(release.trained_on()) or 'none recorded'}): nothing to compare yet."
        )
    try:
        reference, label = drift.training_data(config, release)
    except DataError as error:
        return f"Not measured: {error}."
    import pandas as pd

    current = pd.concat([frame for _, frame in frames], ignore_index=True)
    story = drift.measure(reference, label, current, f"new files {', '.join(n for n, _ in frames)}")
    return {**story, "when": "measured for this report"}
