"""Report on the deployed model: a confusion-matrix PNG and a PDF report for people.

The PNG (confusionmatrix.png by default) shows the deployed model's confusion
matrix on testdata.csv. The PDF (report.pdf by default) opens with the verdict:
is the model fine, what happened at the last automated check, what to do next.
Then the F1 history, the confusion matrix, data drift, the data, the ingested
files, script timings and packages; the deployment's identity is the appendix.
Everything is gathered once (gather) and each section renders from it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import diagnosis, drift, releases, riskhistory, runs, state, timeline
from drs.cli import build_parser, configure_logging, describe_error, run_cli
from drs.clock import parse_stamp, readable, utc_now
from drs.config import FEATURES, TARGET, Config, load_config
from drs.datarules import read_dataset
from drs.errors import DataError, PipelineError
from drs.files import atomic_path, csv_files, file_name_problem, some_names
from drs.history import open_history
from drs.pdfpages import (
    MARGIN,
    PAGE_SIZE,
    POINTS_PER_INCH,
    ROW_HEIGHT,
    SMALL_SIZE,
    PageWriter,
    cell_text,
)
from drs.runs import RunRecord, Severity, Verdict

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

CONFUSION_MATRIX_NAME = "confusionmatrix.png"
REPORT_NAME = "report.pdf"
CLASS_LABELS = ("stayed (0)", "exited (1)")
SCORE_ROWS_SHOWN = 6
RECENT_RUNS = 300  # finished runs read for the drift thresholds drawn and the latest check
# An estimated F1 this far from the realised one on the same rows is called out.
ESTIMATE_GAP = 0.1
# F1 scores drawn as points: (purpose, marker style, legend label).
POINT_SERIES: tuple[tuple[str, dict[str, Any], str], ...] = (
    (
        "expected-cv",
        {"marker": "^", "markersize": 5, "color": "#2f855a"},
        "each new model's expected F1 (cross-validated)",
    ),
    (
        "new-files",
        {"marker": "D", "markersize": 5, "color": "#b42318"},
        "deployed model on each new batch",
    ),
    (
        "estimated-cbpe",
        {"marker": "o", "markersize": 6, "markerfacecolor": "none", "color": "#9a6700"},
        "estimated F1 without labels (assumes calibrated probabilities)",
    ),
    (
        "drift-check",
        {"marker": "x", "markersize": 5, "color": "0.45"},
        "deployed model on finaldata.csv (the course's drift check)",
    ),
)
# Entries of the history's deployments table the F1 plot marks with a vertical line:
# (actions, line style, legend label). Only a change of the live model is marked: a
# staged model changed nothing until it was promoted (its F1 is in the new-model series).
DEPLOYMENT_MARKS: tuple[tuple[tuple[str, ...], dict[str, Any], str], ...] = (
    (releases.WENT_LIVE, {"color": "0.6", "linestyle": ":"}, "deployment: a model went live"),
    (
        (releases.Action.ROLLBACK.value,),
        {"color": "#6b46c1", "linestyle": "-."},
        "rollback to an earlier release",
    ),
)
# Every recorded F1, oldest first, with what it was computed on and by which model.
SCORES_QUERY = (
    "SELECT recorded_at, f1, purpose, dataset, dataset_sha256, model_sha256 FROM scores ORDER BY id"
)
# The F1 plot's time axis spans at least this much, however close together the scores.
MIN_TIME_AXIS = timedelta(minutes=2)
NOT_CHECKED = "not checked; run diagnostics.py"

F1_PLOT_HEIGHT = 3.6
CONFUSION_HEIGHT = 4.1
HISTOGRAM_HEIGHT = 2.2
HISTOGRAM_GAP = 0.4
SEVERITY_COLOURS = {
    Severity.OK: "#1b7f3b",
    Severity.NOTICE: "#12355b",
    Severity.WARNING: "#9a6700",
    Severity.CRITICAL: "#b42318",
}


@dataclass(frozen=True)
class Confusion:
    """Confusion counts of the deployed model on a dataset, and what they were counted on."""

    matrix: np.ndarray  # rows: actual 0, 1; columns: predicted 0, 1
    labels: list[int]
    release: releases.Release
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


def confusion(config: Config, release: releases.Release | None = None) -> Confusion:
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


def confusion_counts(config: Config) -> tuple[np.ndarray, list[int]]:
    """The deployed model's confusion matrix on testdata.csv and its class labels [0, 1]."""
    counted = confusion(config)
    return counted.matrix, counted.labels


@dataclass(frozen=True)
class Facts:
    """Everything a report shows, gathered once (one history read, one confusion matrix)."""

    config: Config
    release: releases.Release
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
        timings=run.timings if run else None,
        written_at=utc_now(),
        lifts=lifts,
    )


def _more(count: Any, listed: int) -> str:
    """' and N more' when a record kept `listed` names of `count` (a bounded record)."""
    return f" and {count - listed:,} more" if isinstance(count, int) and count > listed else ""


def _or_reason(read: Callable[[], Any]) -> Any:
    """read(), or the one line saying why it is not available."""
    try:
        return read()
    except (PipelineError, OSError) as error:
        return describe_error(error)


def _data_drift_story(
    config: Config,
    release: releases.Release,
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
            "when": f"measured at {_stamp(latest.finished_at)} UTC",
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


def _draw_confusion(ax: Axes, counted: Confusion) -> None:
    """Counts in labelled cells, actual classes down, predicted across."""
    matrix = counted.matrix
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    names = (("true negatives", "false positives"), ("false negatives", "true positives"))
    total = max(int(matrix.sum()), 1)
    for row in range(2):
        for column in range(2):
            count = int(matrix[row, column])
            colour = "white" if count > 0.55 * matrix.max() else "black"
            ax.text(
                column,
                row - 0.08,
                f"{count:,}",
                ha="center",
                va="center",
                fontsize=20,
                fontweight="bold",
                color=colour,
            )
            ax.text(
                column,
                row + 0.2,
                f"{names[row][column]}\n{count / total:.1%} of rows",
                ha="center",
                va="center",
                fontsize=8.5,
                color=colour,
            )
    ax.set_xticks([0, 1], CLASS_LABELS)
    ax.set_yticks([0, 1], CLASS_LABELS)
    ax.set_xlabel("predicted", fontsize=11)
    ax.set_ylabel("actual", fontsize=11)
    ax.tick_params(length=0, labelsize=10)


def _confusion_title(counted: Confusion) -> str:
    return (
        f"Deployed model, release {counted.release.id}\n"
        f"on {counted.dataset.name}, {counted.rows:,} rows"
    )


def confusion_matrix_plot(
    config: Config, name: str = CONFUSION_MATRIX_NAME, facts: Facts | None = None
) -> Path:
    """Write the deployed model's confusion matrix on testdata.csv as a labelled PNG."""
    from matplotlib.figure import Figure

    target = config.output_file(name)
    counted = facts.counted if facts is not None else confusion(config)
    figure = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = figure.add_subplot()
    _draw_confusion(ax, counted)
    ax.set_title(f"Confusion matrix\n{_confusion_title(counted)}", fontsize=11)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    logger.info("wrote %s", target)
    return target


def score_history(config: Config) -> list[dict[str, Any]]:
    """Every recorded F1 (scores table), oldest first: recorded_at, f1, purpose, dataset, model."""
    with open_history(config) as history:
        return history.rows(SCORES_QUERY)


def _when(stamp: str) -> datetime:
    when = parse_stamp(stamp)
    assert when is not None, "gather() keeps only rows with a time stamp"
    return when


def _day(stamp: str) -> float:
    """A time stamp as matplotlib's date number (days since its epoch): the chart's x."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(_when(stamp)))


def _stamp(stamp: str | None) -> str:
    """A recorded UTC time stamp as people read it: to the second, no T or Z."""
    return stamp[:19].replace("T", " ") if stamp else "unknown"


def write_report(
    config: Config,
    name: str = REPORT_NAME,
    facts: Facts | None = None,
    *,
    timings: dict[str, float] | None = None,
    packages: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the PDF report on the deployed model to output_model_path; returns its path.

    facts: what gather() read (fullprocess.py gathers once for the PNG and the PDF).
    timings and packages, for a report written outside a run: step timings to show and
    an outdated_packages_list answer.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    target = config.output_file(name)
    facts = facts or gather(config, packages=packages)
    if timings is not None:
        facts = dataclasses.replace(facts, timings=timings)
    release = facts.release
    with atomic_path(target) as tmp:
        metadata = {
            "Title": f"Attrition-risk model report, release {release.id}",
            "Subject": f"{facts.verdict.severity.value}: {facts.verdict.headline}",
            "Creator": "reporting.py",
        }
        with PdfPages(tmp, metadata=metadata) as pdf:
            writer = PageWriter(pdf, f"Attrition-risk model report - release {release.id}")
            writer.new_page()
            for section in SECTIONS:
                section.render(writer, facts)
            writer.finish_page()
    logger.info("wrote %s", target)
    return target


def _verdict_section(writer: PageWriter, facts: Facts) -> None:
    found = facts.verdict
    colour = SEVERITY_COLOURS[found.severity]
    writer.title(f"Attrition-risk model: {found.severity.value.upper()}", color=colour)
    writer.paragraph(found.headline, size=11)
    writer.paragraph(
        f"Next action: {found.action or 'none; nothing needs doing'}", size=11, fontweight="bold"
    )
    for detail in found.details:
        writer.paragraph(detail, size=9)
    release, run = facts.release, facts.run
    rates = facts.counted.rates()
    features = ((run.data_drift if run else None) or {}).get("features")
    drifted = drift.describe_feature_drift(features) if features else "not measured"
    retrained = [d for d in facts.deployments if d["action"] in releases.NEW_MODEL]
    checked = (run.finished_at if run else None) or facts.written_at
    writer.table(
        None,
        [
            (f"F1 now, on {facts.counted.dataset.name}", cell_text(rates["F1"])),
            ("live release", f"{release.id} (went live {found.went_live or 'at an unknown time'})"),
            ("F1 at deployment, same data", cell_text(release.score())),
            ("F1 expected (cross-validated on its training data)", _expected(release)),
            ("features drifted at the last check", drifted),
            (
                "model last retrained",
                f"{_stamp(retrained[-1]['recorded_at'])} UTC"
                if retrained
                else f"{_stamp(release.manifest.get('deployed_at'))} UTC",
            ),
            (
                "last automated check",
                f"{_stamp(checked)} UTC: {state.run_words(run)}" if run else "none yet",
            ),
            ("report written", f"{_stamp(facts.written_at)} UTC"),
        ],
        (0.4, 0.6),
        size=9,
    )


def _expected(release: releases.Release) -> str:
    expected = release.model_card().get("expected") or {}
    if not isinstance(expected.get("f1"), float):
        return "not recorded"
    spread = expected.get("f1_sd", 0.0)
    return f"{expected['f1']:.4f} (spread {spread:.4f} over {expected.get('folds')} folds)"


def _performance_section(writer: PageWriter, facts: Facts) -> None:
    """Expected, realised and estimated F1 side by side; the retraining's candidates."""
    run = facts.run
    performance = (run.performance if run else None) or {}
    retraining = (run.retraining if run else None) or {}
    card = facts.release.model_card()
    expected = card.get("expected") or {}
    writer.heading("Expected, realised and estimated performance", keep_with=1.6)
    writer.paragraph(
        f"The deployed model's expected F1 is its F1 cross-validated on its own training "
        f"data: {_expected(facts.release)}. At each check it is compared with the F1 on the "
        "labelled rows of the new files (realised), and, for rows that have no label yet, "
        "with the F1 the model expects of itself from its predicted probabilities "
        "(estimated). The estimate assumes the probabilities are calibrated; the Brier score "
        f"of its cross-validated probabilities is {cell_text(expected.get('brier'))} "
        "(0 is perfect; 0.25 is no better than a coin)."
    )
    rows = []
    for key, label in (
        ("new_files", "realised, on the labelled rows of the new files"),
        ("estimated_on_labelled", "estimated on those same rows, labels set aside"),
        ("estimated", "estimated, on the new rows without labels"),
    ):
        measured = performance.get(key)
        if isinstance(measured, dict):
            rows.append((label, cell_text(measured.get("f1")), f"{measured.get('rows', 0):,}"))
    if rows:
        writer.table(("F1 at the last check", "F1", "rows"), rows, (0.6, 0.2, 0.2))
    realised, guessed = performance.get("new_files"), performance.get("estimated_on_labelled")
    if isinstance(realised, dict) and isinstance(guessed, dict):
        gap = abs(float(realised.get("f1") or 0.0) - float(guessed.get("f1") or 0.0))
        if gap > ESTIMATE_GAP:
            writer.paragraph(
                f"Here the estimate is {gap:.2f} away from the realised F1: the model's "
                "probabilities no longer fit how the new clients behave, so estimates for "
                "rows without labels cannot be trusted until the model is retrained.",
                fontweight="bold",
            )
    candidates = retraining.get("candidates")
    if isinstance(candidates, list):
        writer.paragraph(f"Retraining at the last check: {retraining.get('reason')}.")
        writer.table(
            ("model", "trained on", "rows", "F1 on held-out newest rows"),
            [
                (
                    c.get("window"),
                    ", ".join(c.get("files") or [])
                    + _more(c.get("file_count"), len(c.get("files") or [])),
                    f"{c.get('rows', 0):,}",
                    cell_text(c.get("f1")) if c.get("f1") is not None else c.get("reason") or "-",
                )
                for c in candidates
                if isinstance(c, dict)
            ]
            + [("the deployed model (champion)", "", "", cell_text(retraining.get("champion_f1")))],
            (0.3, 0.3, 0.1, 0.3),
        )
    reliability = expected.get("reliability")
    if isinstance(reliability, list) and reliability:
        writer.paragraph(
            "Calibration of the deployed model on its training data (cross-validated): for "
            "each band of predicted probability, the mean prediction and the share that left.",
            size=SMALL_SIZE,
        )
        writer.table(
            ("predicted probability", "rows", "mean predicted", "observed"),
            [
                (
                    f"{r['from']:.1f} to {r['to']:.1f}",
                    f"{r['rows']:,}",
                    cell_text(r["predicted"], 3),
                    cell_text(r["observed"], 3),
                )
                for r in reliability
                if isinstance(r, dict)
            ],
            (0.3, 0.2, 0.25, 0.25),
            size=7.5,
        )


def _f1_section(writer: PageWriter, facts: Facts) -> None:
    writer.heading("F1 over time", keep_with=F1_PLOT_HEIGHT)
    if not facts.scores:
        writer.paragraph("No F1 score has been recorded in the run history yet.")
        return
    rollbacks = any(row["action"] == releases.Action.ROLLBACK for row in facts.deployments)
    total = sum(row["count"] for row in facts.scores)
    averaged = f", each point the mean of a {facts.grouped}" if facts.grouped else ""
    writer.paragraph(
        f"{total} score(s) from the run history{averaged}. Each dataset is its own series: "
        "scores on different data are never joined by a line. Dotted lines mark deployments "
        "(a model going live, a promoted staged one included)"
        + ("; dash-dotted lines rollbacks." if rollbacks else ".")
    )
    _draw_f1(writer.axes(F1_PLOT_HEIGHT), facts)
    shown = facts.recent_scores
    writer.table(
        ("recorded at (UTC)", "F1", "what was scored", "on"),
        [
            (
                _stamp(row["recorded_at"]),
                cell_text(row["f1"]),
                _purpose(row["purpose"]),
                Path(row["dataset"].split(" with ")[0]).name + _batch(row["dataset"]),
            )
            for row in reversed(shown)
        ],
        (0.2, 0.09, 0.33, 0.38),
    )


SCORE_PURPOSES = {
    "test": "new model, at training",
    "expected-cv": "new model, cross-validated",
    "drift-check": "deployed model, drift check",
    "new-files": "deployed model, new files",
    "estimated-cbpe": "deployed model, estimated",
}


def _purpose(purpose: str) -> str:
    return SCORE_PURPOSES.get(purpose, purpose)


def _batch(dataset: str) -> str:
    _, _, files = dataset.partition(" with ")
    return f" (new: {files})" if files else ""


def _draw_f1(ax: Axes, facts: Facts) -> None:
    """Each dataset its own series; drift checks as single points with their thresholds."""
    import matplotlib.dates as mdates

    marks = _deployment_marks(facts)
    for style, _, rows in marks:
        for row in rows:
            ax.axvline(_day(row["recorded_at"]), linewidth=1, **style)
    tests: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for row in facts.scores:
        if row["purpose"] == "test":
            tests.setdefault((Path(row["dataset"]).name, row["dataset_sha256"]), []).append(row)
    for number, ((dataset, _), points) in enumerate(tests.items(), start=1):
        version = f", version {number}" if len(tests) > 1 else ""
        ax.plot(
            [_day(r["recorded_at"]) for r in points],
            [r["f1"] for r in points],
            marker="o",
            markersize=4,
            linewidth=1.2,
            label=f"each new model on {dataset}{version}",
        )
    # Scores on data that changes each time are points, never joined by a line.
    for purpose, style, label in POINT_SERIES:
        points = [row for row in facts.scores if row["purpose"] == purpose]
        if points:
            ax.plot(
                [_day(r["recorded_at"]) for r in points],
                [r["f1"] for r in points],
                linestyle="none",
                label=label,
                **style,
            )
    bounds = [
        (finished, (check.model_drift or {})["bound"])
        for check in facts.checks
        if isinstance((check.model_drift or {}).get("bound"), float)
        and (finished := check.finished_at) is not None
        and parse_stamp(finished)
    ]
    if bounds:
        ax.plot(
            [_day(t) for t, _ in bounds],
            [b for _, b in bounds],
            linestyle="none",
            marker="_",
            markersize=14,
            markeredgewidth=2,
            color="0.25",
            label="drift threshold at each check (below it: drift)",
        )
    for style, label, _ in marks:
        ax.plot([], [], label=label, **style)
    ax.set_ylim(0, 1.05)
    ax.margins(x=0.08)
    marked = [row for _, _, rows in marks for row in rows]
    moments = [_day(row["recorded_at"]) for row in (*facts.scores, *marked)]
    if max(moments) - min(moments) < MIN_TIME_AXIS / timedelta(days=1):
        # One moment (or a few within seconds) gives the date axis nothing to divide.
        middle, half = (min(moments) + max(moments)) / 2, MIN_TIME_AXIS / timedelta(days=2)
        ax.set_xlim(middle - half, middle + half)
    ax.set_ylabel("F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.xaxis_date()
    locator = _quiet_date_locator(mdates)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(labelsize=8)


def _quiet_date_locator(mdates: Any) -> Any:
    """matplotlib's AutoDateLocator, without its warning for spans it has no interval for.

    For some spans (minutes to an hour, depending on the figure) it warns and falls back
    to a default interval, which draws well enough; under pytest's warnings-as-errors
    that warning failed the report, depending on how long the test took.
    """
    import warnings

    class QuietLocator(mdates.AutoDateLocator):
        def get_locator(self, dmin: Any, dmax: Any) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "AutoDateLocator was unable", UserWarning)
                return super().get_locator(dmin, dmax)

    return QuietLocator(maxticks=6)


def _deployment_marks(
    facts: Facts,
) -> list[tuple[dict[str, Any], str, list[dict[str, Any]]]]:
    """(line style, legend label, history rows) of each kind of mark with rows to draw."""
    marks: list[tuple[dict[str, Any], str, list[dict[str, Any]]]] = []
    for actions, style, label in DEPLOYMENT_MARKS:
        rows = [row for row in facts.deployments if row["action"] in actions]
        if rows:
            marks.append((style, label, rows))
    return marks


def _confusion_section(writer: PageWriter, facts: Facts) -> None:
    counted = facts.counted
    writer.heading("Confusion matrix", keep_with=CONFUSION_HEIGHT + 0.5)
    writer.paragraph(_confusion_title(counted).replace("\n", " ") + ".")
    ax = writer.axes(CONFUSION_HEIGHT, left=1.9, bottom=0.55)
    ax.set_anchor("W")
    _draw_confusion(ax, counted)
    writer.paragraph(
        "Rows are the actual outcome, columns the model's prediction. "
        + ", ".join(f"{key} {cell_text(value)}" for key, value in counted.rates().items())
        + "."
    )


def _drift_section(writer: PageWriter, facts: Facts) -> None:
    story = facts.data_drift
    writer.heading("Data drift", keep_with=2.0)
    if isinstance(story, str):
        writer.paragraph(story)
        return
    features = story["features"]
    writer.paragraph(f"{drift.describe_feature_drift(features)}.", size=11, fontweight="bold")
    writer.paragraph(
        f"Reference: {story['reference']}, {story['reference_rows']:,} rows. "
        f"Current: {story['current']}, {story['current_rows']:,} rows ({story['when']})."
    )
    writer.paragraph(
        f"Measure: the {story['measure']}, the Wasserstein (earth mover's) distance between a "
        "feature's reference and current values divided by the reference's standard "
        f"deviation. A feature has drifted when it exceeds {story['threshold']:g}, a shift "
        "of a tenth of a standard deviation. Empty cells are left out."
    )
    if min(story["reference_rows"], story["current_rows"]) < drift.SMALL_SAMPLE:
        writer.paragraph(
            f"With fewer than {drift.SMALL_SAMPLE:,} rows on a side, distances near the "
            "threshold can be chance: read them with care.",
            fontweight="bold",
        )
    names = list(features)
    writer.table(
        ("feature", "distance", "threshold", "drifted"),
        [
            (
                feature,
                cell_text(found["value"], 3),
                cell_text(found["threshold"], 2),
                "YES" if found["drifted"] else ("unknown" if found["value"] is None else "no"),
            )
            for feature, found in features.items()
        ],
        (0.4, 0.2, 0.2, 0.2),
        highlight=lambda index: features[names[index]]["drifted"],
    )
    _draw_histograms(writer, story)


def _draw_histograms(writer: PageWriter, story: dict[str, Any]) -> None:
    """Reference and current densities per feature; a drifted feature's panel is framed red."""
    figure = writer.need(HISTOGRAM_HEIGHT + 0.4)
    top = writer.y
    count = len(FEATURES)
    panel = (writer.width - HISTOGRAM_GAP * (count - 1)) / count
    for index, feature in enumerate(FEATURES):
        drawn = story["histograms"][feature]
        found = story["features"][feature]
        ax = figure.add_axes(
            (
                (MARGIN + index * (panel + HISTOGRAM_GAP)) / PAGE_SIZE[0],
                1 - (top + HISTOGRAM_HEIGHT - 0.3) / PAGE_SIZE[1],
                panel / PAGE_SIZE[0],
                (HISTOGRAM_HEIGHT - 0.65) / PAGE_SIZE[1],
            )
        )
        ax.stairs(drawn["reference"], drawn["edges"], fill=True, alpha=0.5, label="reference")
        ax.stairs(drawn["current"], drawn["edges"], fill=True, alpha=0.5, label="current")
        verdict = "DRIFTED" if found["drifted"] else "ok"
        ax.set_title(
            f"{feature}\n{cell_text(found['value'], 3)} vs {found['threshold']:g}: {verdict}",
            fontsize=8,
            color="#b42318" if found["drifted"] else "black",
        )
        if found["drifted"]:
            for spine in ax.spines.values():
                spine.set_edgecolor("#b42318")
                spine.set_linewidth(2)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if index == 0:
            ax.legend(fontsize=7)
    writer.y = top + HISTOGRAM_HEIGHT
    writer.paragraph(
        "Densities up to each feature's 99th percentile; above each panel its distance "
        "against the threshold.",
        size=SMALL_SIZE,
    )


def _data_section(writer: PageWriter, facts: Facts) -> None:
    writer.heading("Summary statistics and missing values")
    frame = facts.data
    if isinstance(frame, str):
        writer.paragraph(f"Not available: {frame}")
        return
    summary = diagnosis.summarize(frame)
    missing = diagnosis.missing_percentages(frame)
    writer.paragraph(
        f"{facts.config.final_data_path.name}: {len(frame):,} rows. Standard deviation is the "
        "sample standard deviation; missing is the percent of empty cells."
    )
    rows = []
    for column in frame.columns:
        stats = summary.get(str(column), {})
        rows.append(
            (
                column,
                *(
                    cell_text(stats.get(key), 2) if stats else "-"
                    for key in ("mean", "median", "std")
                ),
                f"{missing[str(column)]:.2f} %",
            )
        )
    writer.table(
        ("column", "mean", "median", "std", "missing"), rows, (0.3, 0.18, 0.18, 0.18, 0.16)
    )


# Files the report's ingestion table lists; the rest are counted (a year is 50,000 files).
FILES_LISTED = 20


def _ingestion_section(writer: PageWriter, facts: Facts) -> None:
    import json

    writer.heading("Ingested files")
    files = facts.release.trained_on()
    writer.paragraph(
        f"The deployed model was trained on {len(files):,} file(s): {some_names(files) or 'none'}."
    )
    run = facts.ingestion
    if run is None:
        writer.paragraph("No ingestion run is recorded in the run history yet.")
        return
    changed = json.loads(run["files_json"])
    rejected = json.loads(run["rejected_json"])
    count = run.get("file_count")
    taken = f"{count:,} file(s) ingested, " if isinstance(count, int) else ""
    writer.paragraph(
        f"Latest ingestion run: {_stamp(run['started_at'])} UTC, {run['status']}, "
        f"from {run['input_folder']}; {taken}{run['rows_before'] or 0:,} rows, "
        f"{run['rows_after'] or 0:,} after removing duplicates, in {run['duration_s']:.2f} s."
        + (
            f" New or changed since the ingestion before: {len(changed):,} file(s)."
            if isinstance(count, int)
            else ""
        )
    )
    rows = [
        (f["name"], "ingested", f"{f['rows']:,}", f["sha256"][:16]) for f in changed[:FILES_LISTED]
    ]
    rows += [(name, "rejected", "-", "(reason below)") for name in list(rejected)[:FILES_LISTED]]
    writer.table(("file", "verdict", "rows", "SHA-256 (start)"), rows, (0.34, 0.16, 0.2, 0.3))
    hidden = len(changed) - min(len(changed), FILES_LISTED)
    if hidden:
        writer.paragraph(f"And {hidden:,} more ingested file(s), not listed.")
    for name, reason in list(rejected.items())[:FILES_LISTED]:
        writer.paragraph(f"Rejected {name}: {reason}")
    more = (run.get("rejected_count") or len(rejected)) - min(len(rejected), FILES_LISTED)
    if more > 0:
        writer.paragraph(f"And {more:,} more rejected file(s), not listed.")


def _lift_section(writer: PageWriter, facts: Facts) -> None:
    """Did the warnings come true: of the clients flagged high at each scoring, who left."""
    writer.heading("Did the warnings come true?")
    _, headline = riskhistory.lift_headline(facts.lifts)
    if headline is None:
        writer.paragraph(
            "Not measurable yet: it needs two scorings of the clients, and clients leaving "
            "after the first. The risks are recorded each time new data arrives or a new "
            "model goes live."
        )
        return
    writer.paragraph(headline)
    rows = [
        (
            readable(lift.recorded_at),
            f"{lift.high:,}",
            f"{lift.high_left_since:,} ({riskhistory.rate(lift.high_rate)})",
            f"{lift.left_since:,} of {lift.clients:,} ({riskhistory.rate(lift.base_rate)})",
            "-" if lift.lift is None else f"{lift.lift:.1f}x",
        )
        for lift in facts.lifts[-riskhistory.LIFT_ROWS :][::-1]
    ]
    writer.table(
        ("scored", "flagged high", "of them left since", "all clients left since", "lift"),
        rows,
        (0.22, 0.14, 0.22, 0.28, 0.14),
    )


def _timings_section(writer: PageWriter, facts: Facts) -> None:
    writer.heading("Script timings")
    run_timings = facts.timings
    diagnosed = facts.diagnosed or {}
    if run_timings:
        writer.paragraph(
            "Steps of the run this report is about, timed in process (no interpreter start-up):"
        )
        writer.table(
            ("step", "seconds"), [(k, cell_text(v, 2)) for k, v in run_timings.items()], (0.5, 0.5)
        )
    elif diagnosed.get("execution_time"):
        writer.paragraph(
            f"Timed by {diagnosed.get('source', 'diagnostics.py')} at "
            f"{_stamp(diagnosed['recorded_at'])} UTC, {diagnosed.get('timed', '')}:"
        )
        writer.table(
            ("script", "seconds"),
            [(k, cell_text(v, 2)) for k, v in diagnosed["execution_time"].items()],
            (0.5, 0.5),
        )
    else:
        writer.paragraph("Scripts not timed yet: run diagnostics.py or fullprocess.py.")


def _packages_section(writer: PageWriter, facts: Facts) -> None:
    packages, source = _packages(facts)
    if packages is None:
        writer.heading("Outdated packages")
        writer.paragraph(f"Not available: {source}")
        return
    runtime = [p for p in packages if p.get("role") != "development"]
    tools = [p for p in packages if p.get("role") == "development"]
    outdated = [p for p in runtime if p.get("outdated")]
    unknown = [p for p in runtime if p.get("latest") is None]
    listed = outdated + unknown
    reasons = {str(p.get("reason") or "no reason given") for p in unknown}
    collapse = len(unknown) == len(runtime) and len(reasons) == 1
    rows = [] if collapse else listed
    table_height = (len(rows) + 1) * 7.5 * ROW_HEIGHT / POINTS_PER_INCH if rows else 0.0
    writer.heading("Outdated packages", keep_with=min(table_height + 0.8, 6.0))
    writer.paragraph(
        f"{source} {len(runtime)} runtime package(s): {len(outdated)} outdated, "
        f"{len(unknown)} with the latest version unknown, "
        f"{len(runtime) - len(listed)} up to date (not listed)."
    )
    if collapse:
        writer.paragraph(f"Latest version unknown for all of them: {reasons.pop()}")
    elif rows:
        writer.table(
            ("package", "required", "installed", "latest", "status"),
            [
                (
                    p["name"],
                    p.get("required") or "",
                    p.get("installed") or "not installed",
                    p.get("latest") or "?",
                    "OUTDATED" if p.get("outdated") else "unknown (see below)",
                )
                for p in rows
            ],
            (0.24, 0.16, 0.16, 0.16, 0.28),
            size=7.5,
        )
        why: dict[str, list[str]] = {}
        for package in unknown:
            why.setdefault(str(package.get("reason") or "no reason given"), []).append(
                package["name"]
            )
        for reason, names in why.items():
            writer.paragraph(f"Latest version unknown for {', '.join(names)}: {reason}")
    old_tools = [p["name"] for p in tools if p.get("outdated")]
    writer.paragraph(
        f"Development tools ({', '.join(p['name'] for p in tools)}): "
        + (f"outdated: {', '.join(old_tools)}." if old_tools else "none known to be outdated."),
        size=SMALL_SIZE,
    )


def _packages(facts: Facts) -> tuple[list[dict[str, Any]] | None, str]:
    """The package list to show and a sentence saying where it comes from."""
    recorded = facts.diagnosed or {}
    if facts.packages is not None:
        return facts.packages, "Package versions as checked for this report."
    if recorded.get("outdated_packages"):
        when = _stamp(recorded["recorded_at"])
        return recorded["outdated_packages"], f"Package versions as checked at {when} UTC."
    try:
        installed = diagnosis.installed_versions()
    except PipelineError as error:
        return None, str(error)
    unchecked = [{**p, "latest": None, "outdated": None, "reason": NOT_CHECKED} for p in installed]
    return unchecked, "Latest versions not checked yet."


def _identity_section(writer: PageWriter, facts: Facts) -> None:
    release, config = facts.release, facts.config
    writer.heading("Appendix: model and deployment identity")
    card = release.model_card()
    writer.table(
        ("item", "value"),
        [
            ("release id", release.id),
            ("deployed at", release.manifest.get("deployed_at", "unknown")),
            ("model SHA-256", release.model_sha256),
            ("trained at", card.get("trained_at", "not recorded")),
            ("trained on", ", ".join(release.trained_on()) or "(none recorded)"),
            ("F1 recorded at deployment", cell_text(release.score())),
            ("deployment folder", str(config.deployment_folder)),
            ("config", str(config.path)),
        ],
        (0.28, 0.72),
    )


class Section(NamedTuple):
    title: str
    render: Callable[[PageWriter, Facts], None]


SECTIONS = (
    Section("Verdict", _verdict_section),
    Section("Did the warnings come true?", _lift_section),
    Section("F1 over time", _f1_section),
    Section("Expected, realised and estimated performance", _performance_section),
    Section("Confusion matrix", _confusion_section),
    Section("Data drift", _drift_section),
    Section("Summary statistics and missing values", _data_section),
    Section("Ingested files", _ingestion_section),
    Section("Script timings", _timings_section),
    Section("Outdated packages", _packages_section),
    Section("Appendix: model and deployment identity", _identity_section),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument(
        "--name",
        default=CONFUSION_MATRIX_NAME,
        help=f"file name of the confusion-matrix PNG (default {CONFUSION_MATRIX_NAME})",
    )
    parser.add_argument(
        "--pdf",
        default=REPORT_NAME,
        metavar="NAME",
        help=f"file name of the PDF report (default {REPORT_NAME})",
    )
    args = parser.parse_args(argv)

    def action() -> None:
        config = load_config(args.config)
        config.output_file(args.name)
        config.output_file(args.pdf)
        facts = gather(config)
        print(confusion_matrix_plot(config, args.name, facts))
        print(write_report(config, args.pdf, facts))

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
