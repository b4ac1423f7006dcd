"""Report on the deployed model: a confusion-matrix PNG and a PDF report for people (§6).

The PNG (confusionmatrix.png by default) shows the deployed model's confusion
matrix on testdata.csv. The PDF (report.pdf by default) adds the model's identity,
its F1 history from the run history (§9), summary statistics, missing values,
per-feature data drift, the ingested files, script timings and outdated packages.
Pieces that are not available yet (no history, nothing timed) are said so on the page.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import common
import deployment
import diagnostics

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONFUSION_MATRIX_NAME = "confusionmatrix.png"
REPORT_NAME = "report.pdf"
CLASS_LABELS = ("stayed (0)", "exited (1)")
# Wasserstein-1 distance between a feature's reference and current values, divided by
# the reference's standard deviation: unit-free, so one threshold fits every feature.
DRIFT_MEASURE = "normalised Wasserstein distance"
DRIFT_THRESHOLD = 0.1
SECTIONS = (
    "Model and deployment",
    "F1 score over time",
    "Confusion matrix",
    "Summary statistics and missing values",
    "Data drift",
    "Ingested files",
    "Script timings",
    "Outdated packages",
)
SCORE_PURPOSES = {
    "test": "new model on testdata (at training)",
    "drift-check": "deployed model on new data (drift check)",
}
HISTORY_ROWS_SHOWN = 8
# The F1 plot's time axis spans at least this much, however close together the scores.
MIN_TIME_AXIS = timedelta(minutes=2)
PAGE_SIZE = (8.27, 11.69)  # A4 portrait, inches
MARGIN = 0.7
BODY_SIZE = 9.5
# Below this many rows the distance of two samples of one distribution can reach ~0.1.
SMALL_SAMPLE = 1_000
ORPHAN_ROWS = 3  # fewest table rows carried over to a new page
ROW_HEIGHT = 1.9  # table row height, in multiples of the font size
NOT_CHECKED = "not checked; run diagnostics.py"


@dataclass(frozen=True)
class Confusion:
    """Confusion counts of the deployed model on a dataset, and what they were counted on."""

    matrix: np.ndarray  # rows: actual 0, 1; columns: predicted 0, 1
    labels: list[int]
    release: deployment.Release
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


def confusion(config: common.Config) -> Confusion:
    """Count the deployed model's predictions on testdata.csv against its target."""
    from sklearn.metrics import confusion_matrix

    release = diagnostics.deployed_release(config)
    data = common.read_dataset(config.test_data_path)
    labelled = data[data[common.TARGET].notna()]
    if labelled.empty:
        raise common.DataError(f"{config.test_data_path}: no row with a value in 'exited'")
    predictions = release.load_model().predict(labelled[list(common.FEATURES)])
    labels = [0, 1]
    matrix = confusion_matrix(labelled[common.TARGET].astype(int), predictions, labels=labels)
    return Confusion(matrix, labels, release, config.test_data_path, len(labelled))


def confusion_counts(config: common.Config) -> tuple[np.ndarray, list[int]]:
    """The deployed model's confusion matrix on testdata.csv and its class labels [0, 1]."""
    counted = confusion(config)
    return counted.matrix, counted.labels


def _draw_confusion(ax: Axes, counted: Confusion) -> None:
    """Counts in labelled cells, actual classes down, predicted across."""
    matrix = counted.matrix
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    names = (("true negatives", "false positives"), ("false negatives", "true positives"))
    total = max(int(matrix.sum()), 1)
    for row in range(2):
        for column in range(2):
            count = int(matrix[row, column])
            dark = count > 0.55 * matrix.max()
            colour = "white" if dark else "black"
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
    release = counted.release
    return (
        f"Deployed model {release.id} (SHA-256 {release.model_sha256[:12]})\n"
        f"on {counted.dataset.name}, {counted.rows:,} rows"
    )


def confusion_matrix_plot(config: common.Config, name: str = CONFUSION_MATRIX_NAME) -> Path:
    """Write the deployed model's confusion matrix on testdata.csv as a labelled PNG."""
    from matplotlib.figure import Figure

    target = config.output_file(name)
    counted = confusion(config)
    figure = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = figure.add_subplot()
    _draw_confusion(ax, counted)
    ax.set_title(f"Confusion matrix\n{_confusion_title(counted)}", fontsize=11)
    with common.atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    logger.info("wrote %s", target)
    return target


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per feature: normalised Wasserstein distance of current from reference, and whether > 0.1.

    Empty cells are left out. With a constant reference (std 0) any difference is
    infinite drift; a feature without values on either side is unknown (value None).
    """
    import numpy as np
    from scipy.stats import wasserstein_distance

    drift = {}
    for feature in common.FEATURES:
        before = reference[feature].dropna().to_numpy(dtype=float)
        after = current[feature].dropna().to_numpy(dtype=float)
        value: float | None
        if len(before) == 0 or len(after) == 0:
            value = None
        else:
            distance = float(wasserstein_distance(before, after))
            spread = float(np.std(before, ddof=1)) if len(before) > 1 else 0.0
            value = distance / spread if spread > 0 else 0.0 if distance == 0 else math.inf
        drift[feature] = {
            "value": value,
            "threshold": DRIFT_THRESHOLD,
            "drifted": value is not None and value > DRIFT_THRESHOLD,
        }
    return drift


@dataclass(frozen=True)
class DriftData:
    """The two samples drift is measured between, each with a sentence saying what it is."""

    reference: pd.DataFrame
    reference_label: str
    current: pd.DataFrame
    current_label: str


def drift_data(config: common.Config, release: deployment.Release) -> DriftData:
    """Training data of the deployed model against the newest data.

    Reference: the deployed model's ingested files, when all are still in the input
    folder, else finaldata.csv. Current: the valid input files the deployed model
    was not trained on, else testdata.csv.
    """
    import pandas as pd

    trained_on = release.ingested_files()
    inputs = common.csv_files(config.input_folder) if config.input_folder.is_dir() else []
    names = {path.name for path in inputs}
    if trained_on and all(name in names for name in trained_on):
        reference = pd.concat(
            [common.read_dataset(config.input_folder / name) for name in trained_on],
            ignore_index=True,
        )
        reference_label = f"the deployed model's training files ({', '.join(trained_on)})"
    else:
        reference = common.read_dataset(config.final_data_path)
        reference_label = f"{config.final_data_path.name} (the latest ingested data)"
    newer = []
    for path in inputs:
        if path.name not in trained_on:
            try:
                newer.append((path.name, common.read_dataset(path)))
            except common.DataError as error:
                logger.info("drift: leaving out %s", error)
    if newer:
        current = pd.concat([frame for _, frame in newer], ignore_index=True)
        current_label = f"new input files ({', '.join(name for name, _ in newer)})"
    else:
        current = common.read_dataset(config.test_data_path, require_target=False)
        current_label = f"{config.test_data_path.name} (no input file is newer than the model)"
    return DriftData(reference, reference_label, current, current_label)


def _history(config: common.Config, sql: str, params: tuple[Any, ...] = ()) -> list[dict]:
    with common.open_history(config) as history:
        return history.rows(sql, params)


def score_history(config: common.Config) -> list[dict[str, Any]]:
    """Every recorded F1 (scores table), oldest first: recorded_at, f1, purpose, dataset, model."""
    return _history(
        config,
        "SELECT recorded_at, f1, purpose, dataset, model_sha256 FROM scores ORDER BY id",
    )


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(stamp: str) -> str:
    """A recorded UTC time stamp as people read it: to the second, no T or Z."""
    return stamp[:19].replace("T", " ")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:,.{digits}f}"
    return str(value)


class _Writer:
    """Lays text, tables and plots down A4 pages from the top, starting pages as needed."""

    def __init__(self, pdf: PdfPages, footer: str) -> None:
        self.pdf = pdf
        self.footer = footer
        self.figure: Figure | None = None
        self.number = 0
        self.y = 0.0  # inches from the top of the page already used
        self.width = PAGE_SIZE[0] - 2 * MARGIN

    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.finish_page()
        self.figure = Figure(figsize=PAGE_SIZE)
        self.number += 1
        self.y = MARGIN

    def finish_page(self) -> None:
        if self.figure is not None:
            self.figure.text(
                0.5,
                0.3 / PAGE_SIZE[1],
                f"{self.footer} - page {self.number}",
                ha="center",
                fontsize=7.5,
                color="0.4",
            )
            self.pdf.savefig(self.figure)
            self.figure = None

    def room(self) -> float:
        return PAGE_SIZE[1] - MARGIN - self.y

    def need(self, inches: float) -> Figure:
        """The current page, or a new one when fewer than `inches` remain."""
        if self.figure is None or self.room() < inches:
            self.new_page()
        assert self.figure is not None
        return self.figure

    def _text_at(self, text: str, size: float, **style: Any) -> None:
        figure = self.need(size * 1.5 / 72)
        figure.text(
            MARGIN / PAGE_SIZE[0], 1 - self.y / PAGE_SIZE[1], text, va="top", fontsize=size, **style
        )
        self.y += size * 1.45 / 72

    def title(self, text: str) -> None:
        self._text_at(text, 18, fontweight="bold")
        self.y += 0.1

    def heading(self, text: str, keep_with: float = 1.0) -> None:
        """A section heading, kept on one page with the next `keep_with` inches."""
        self.need(0.45 + keep_with)
        self.y += 0.12
        self._text_at(text, 13, fontweight="bold", color="#12355b")
        self.y += 0.05

    def paragraph(self, text: str, size: float = BODY_SIZE, **style: Any) -> None:
        columns = int(self.width * 72 / (size * 0.52))
        for line in textwrap.wrap(text, columns) or [""]:
            self._text_at(line, size, **style)
        self.y += 0.06

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[Any]],
        widths: Sequence[float],
        size: float = 8.5,
    ) -> None:
        """A table with a header row, split over pages when long; cells cut to fit."""
        height = size * ROW_HEIGHT / 72
        limits = [max(int(w * self.width * 72 / (size * 0.55)), 4) for w in widths]

        def cut(value: Any, limit: int) -> str:
            text = value if isinstance(value, str) else _fmt(value)
            return text if len(text) <= limit else text[: limit - 1] + "…"

        remaining = [[cut(v, limit) for v, limit in zip(row, limits, strict=True)] for row in rows]
        while True:
            self.need(3 * height)
            fit = max(int(self.room() / height) - 1, 1)
            if 0 < len(remaining) - fit < ORPHAN_ROWS < fit:
                # Carry a few rows over rather than leave one alone on the next page.
                fit = len(remaining) - ORPHAN_ROWS
            chunk, remaining = remaining[:fit], remaining[fit:]
            box = (len(chunk) + 1) * height
            assert self.figure is not None
            ax = self.figure.add_axes(
                (
                    MARGIN / PAGE_SIZE[0],
                    1 - (self.y + box) / PAGE_SIZE[1],
                    self.width / PAGE_SIZE[0],
                    box / PAGE_SIZE[1],
                )
            )
            ax.axis("off")
            table = ax.table(
                cellText=chunk or [["" for _ in header]],
                colLabels=list(header),
                colWidths=list(widths),
                cellLoc="left",
                bbox=(0, 0, 1, 1),
            )
            table.auto_set_font_size(False)
            table.set_fontsize(size)
            for (row, _), cell in table.get_celld().items():
                cell.set_edgecolor("0.75")
                cell.PAD = 0.02
                if row == 0:
                    cell.set_facecolor("#dfe7f0")
                    cell.get_text().set_fontweight("bold")
            self.y += box + 0.15
            if not remaining:
                return

    def axes(self, height: float, left: float = 0.6, bottom: float = 0.45) -> Axes:
        """An axes block of the given height (inches) with room for tick labels."""
        figure = self.need(height)
        ax = figure.add_axes(
            (
                (MARGIN + left) / PAGE_SIZE[0],
                1 - (self.y + height - bottom) / PAGE_SIZE[1],
                (self.width - left - 0.1) / PAGE_SIZE[0],
                (height - bottom - 0.1) / PAGE_SIZE[1],
            )
        )
        self.y += height + 0.1
        return ax


def write_report(
    config: common.Config,
    name: str = REPORT_NAME,
    *,
    timings: dict[str, float] | None = None,
    packages: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the PDF report on the deployed model to output_model_path; returns its path.

    timings: seconds of the caller's own steps (e.g. fullprocess.py's run), shown beside
    the script timings of the newest recorded diagnostics.py run. packages: an
    outdated_packages_list answer; by default the newest recorded one, else the pinned
    and installed versions with the latest left unchecked (no network here).
    """
    from matplotlib.backends.backend_pdf import PdfPages

    target = config.output_file(name)
    counted = confusion(config)
    release = counted.release
    recorded = diagnostics.latest_recorded(config)
    with common.atomic_path(target) as tmp:
        metadata = {
            "Title": f"Attrition-risk model report, release {release.id}",
            "Subject": "Deployed model, F1 history, data quality and drift",
            "Creator": "reporting.py",
        }
        with PdfPages(tmp, metadata=metadata) as pdf:
            writer = _Writer(pdf, f"Attrition-risk model report - release {release.id}")
            writer.new_page()
            _identity_section(writer, config, counted)
            _f1_section(writer, config)
            _confusion_section(writer, counted)
            _data_section(writer, config)
            _drift_section(writer, config, release)
            _ingestion_section(writer, config, release)
            _timings_section(writer, timings, recorded)
            _packages_section(writer, config, packages, recorded)
            writer.finish_page()
    logger.info("wrote %s", target)
    return target


def _identity_section(writer: _Writer, config: common.Config, counted: Confusion) -> None:
    release = counted.release
    writer.title("Attrition-risk model report")
    writer.paragraph(
        f"Written {common.utc_now()} from {config.path}. Sections: " + "; ".join(SECTIONS) + ".",
        color="0.3",
    )
    writer.heading(SECTIONS[0])
    writer.table(
        ("item", "value"),
        [
            ("release id", release.id),
            ("deployed at", release.manifest.get("deployed_at", "unknown")),
            ("model SHA-256", release.model_sha256),
            ("F1 recorded at deployment", _fmt(release.score())),
            ("F1 now on " + counted.dataset.name, _fmt(counted.rates()["F1"])),
            ("trained on", ", ".join(release.ingested_files()) or "(none recorded)"),
            ("deployment folder", str(config.deployment_folder)),
        ],
        (0.28, 0.72),
    )


def _f1_section(writer: _Writer, config: common.Config) -> None:
    import matplotlib.dates as mdates

    scores = score_history(config)
    writer.heading(SECTIONS[1], keep_with=3.4)
    if not scores:
        writer.paragraph("No F1 score has been recorded in the run history yet.")
        return
    deployments = _history(
        config, "SELECT recorded_at, release_id, action FROM deployments ORDER BY id"
    )
    writer.paragraph(
        f"{len(scores)} score(s) from the run history ({config.history_path.name}); "
        "dotted lines mark deployments and rollbacks."
    )
    ax = writer.axes(3.3)
    for row in deployments:
        ax.axvline(_when(row["recorded_at"]), color="0.6", linestyle=":", linewidth=1)
    purposes = sorted(
        {row["purpose"] for row in scores}, key=lambda p: (p not in SCORE_PURPOSES, p)
    )
    for purpose in purposes:
        points = [row for row in scores if row["purpose"] == purpose]
        ax.plot(
            [_when(row["recorded_at"]) for row in points],
            [row["f1"] for row in points],
            marker="o",
            markersize=4,
            linewidth=1.2,
            label=SCORE_PURPOSES.get(purpose, purpose),
        )
    if deployments:
        ax.plot([], [], color="0.6", linestyle=":", label="deployment")
    ax.set_ylim(0, 1.05)
    ax.margins(x=0.08)
    moments = [_when(row["recorded_at"]) for row in (*scores, *deployments)]
    if max(moments) - min(moments) < MIN_TIME_AXIS:
        # One moment (or a few within seconds) gives the date axis nothing to divide.
        middle = min(moments) + (max(moments) - min(moments)) / 2
        ax.set_xlim(middle - MIN_TIME_AXIS / 2, middle + MIN_TIME_AXIS / 2)
    ax.set_ylabel("F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(labelsize=8)
    writer.paragraph(f"Latest {min(len(scores), HISTORY_ROWS_SHOWN)} of them:")
    writer.table(
        ("recorded at (UTC)", "F1", "what was scored", "dataset", "model SHA-256"),
        [
            (
                _stamp(row["recorded_at"]),
                _fmt(row["f1"]),
                SCORE_PURPOSES.get(row["purpose"], row["purpose"]),
                Path(row["dataset"]).name,
                (row["model_sha256"] or "")[:12],
            )
            for row in reversed(scores[-HISTORY_ROWS_SHOWN:])
        ],
        (0.22, 0.09, 0.37, 0.16, 0.16),
    )


def _confusion_section(writer: _Writer, counted: Confusion) -> None:
    writer.heading(SECTIONS[2], keep_with=4.6)
    writer.paragraph(_confusion_title(counted).replace("\n", " ") + ".")
    ax = writer.axes(4.1, left=1.9, bottom=0.55)
    ax.set_anchor("W")
    _draw_confusion(ax, counted)
    rates = counted.rates()
    writer.paragraph(
        "Rows are the actual outcome, columns the model's prediction. "
        + ", ".join(f"{key} {_fmt(value)}" for key, value in rates.items())
        + "."
    )


def _or_unavailable(writer: _Writer, read: Callable[[], T]) -> T | None:
    """read(), or None after saying on the page why its data is not available."""
    try:
        return read()
    except (common.PipelineError, OSError) as error:
        writer.paragraph(f"Not available: {common.describe_error(error)}")
        return None


def _data_section(writer: _Writer, config: common.Config) -> None:
    writer.heading(SECTIONS[3])
    frame = _or_unavailable(writer, lambda: diagnostics.final_data(config))
    if frame is None:
        return
    summary = diagnostics.summarize(frame)
    missing = diagnostics.missing_percentages(frame)
    writer.paragraph(
        f"{config.final_data_path.name}: {len(frame):,} rows. Standard deviation is the "
        "sample standard deviation; missing is the percent of empty cells."
    )
    rows = []
    for column in frame.columns:
        stats = summary.get(str(column), {})
        rows.append(
            (
                column,
                _fmt(stats.get("mean"), 2) if stats else "-",
                _fmt(stats.get("median"), 2) if stats else "-",
                _fmt(stats.get("std"), 2) if stats else "-",
                f"{missing[str(column)]:.2f} %",
            )
        )
    writer.table(
        ("column", "mean", "median", "std", "missing"), rows, (0.3, 0.18, 0.18, 0.18, 0.16)
    )


def _drift_section(writer: _Writer, config: common.Config, release: deployment.Release) -> None:
    import numpy as np

    writer.heading(SECTIONS[4], keep_with=2.5)
    data = _or_unavailable(writer, lambda: drift_data(config, release))
    if data is None:
        return
    drift = feature_drift(data.reference, data.current)
    writer.paragraph(
        f"Measure: {DRIFT_MEASURE}, the Wasserstein (earth mover's) distance between a "
        "feature's reference and current values divided by the reference values' standard "
        f"deviation. A feature has drifted when it exceeds {DRIFT_THRESHOLD}, a shift of a "
        "tenth of a standard deviation. Empty cells are left out."
    )
    writer.paragraph(f"Reference: {data.reference_label}, {len(data.reference):,} rows.")
    writer.paragraph(f"Current: {data.current_label}, {len(data.current):,} rows.")
    if min(len(data.reference), len(data.current)) < SMALL_SAMPLE:
        writer.paragraph(
            f"With fewer than {SMALL_SAMPLE:,} rows on a side, distances near the threshold "
            "can be chance: read them with care.",
            fontweight="bold",
        )
    writer.table(
        ("feature", "distance", "threshold", "drifted", "mean (reference)", "mean (current)"),
        [
            (
                feature,
                _fmt(d["value"], 3),
                _fmt(d["threshold"], 2),
                "yes" if d["drifted"] else ("unknown" if d["value"] is None else "no"),
                _fmt(float(data.reference[feature].mean()), 1),
                _fmt(float(data.current[feature].mean()), 1),
            )
            for feature, d in drift.items()
        ],
        (0.27, 0.13, 0.12, 0.1, 0.19, 0.19),
    )
    figure = writer.need(2.4)
    top = writer.y
    panel = (writer.width - 0.4 * (len(common.FEATURES) - 1)) / len(common.FEATURES)
    for index, feature in enumerate(common.FEATURES):
        ax = figure.add_axes(
            (
                (MARGIN + index * (panel + 0.4)) / PAGE_SIZE[0],
                1 - (top + 1.9) / PAGE_SIZE[1],
                panel / PAGE_SIZE[0],
                1.55 / PAGE_SIZE[1],
            )
        )
        before = data.reference[feature].dropna().to_numpy(dtype=float)
        after = data.current[feature].dropna().to_numpy(dtype=float)
        both = np.concatenate([before, after])
        if both.size:
            high = float(np.quantile(both, 0.99)) or 1.0
            bins = np.linspace(0, high, 30)
            ax.hist(before, bins=bins, density=True, alpha=0.55, label="reference")
            ax.hist(after, bins=bins, density=True, alpha=0.55, label="current")
        ax.set_title(feature, fontsize=8.5)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if index == 0:
            ax.legend(fontsize=7)
    writer.y = top + 2.4
    writer.paragraph("Histograms up to each feature's 99th percentile, as densities.", size=8)
    recorded = _history(
        config,
        "SELECT recorded_at, feature, value, drifted, current FROM data_drift "
        "ORDER BY id DESC LIMIT ?",
        (HISTORY_ROWS_SHOWN,),
    )
    if recorded:
        writer.paragraph("Drift recorded by fullprocess.py runs (newest first):")
        writer.table(
            ("recorded at (UTC)", "feature", "distance", "drifted", "new data"),
            [
                (
                    _stamp(r["recorded_at"]),
                    r["feature"],
                    _fmt(r["value"], 3),
                    "yes" if r["drifted"] else "no",
                    r["current"],
                )
                for r in recorded
            ],
            (0.25, 0.24, 0.12, 0.09, 0.3),
        )


def _ingestion_section(writer: _Writer, config: common.Config, release: deployment.Release) -> None:
    import json

    writer.heading(SECTIONS[5])
    files = release.ingested_files()
    writer.paragraph(
        f"The deployed model was trained on {len(files)} file(s): {', '.join(files) or 'none'}."
    )
    runs = _history(
        config,
        "SELECT started_at, duration_s, input_folder, status, rows_before, rows_after, "
        "files_json, rejected_json FROM ingestion_runs ORDER BY id DESC LIMIT 1",
    )
    if not runs:
        writer.paragraph("No ingestion run is recorded in the run history yet.")
        return
    run = runs[0]
    writer.paragraph(
        f"Latest ingestion run: {_stamp(run['started_at'])} UTC, {run['status']}, "
        f"from {run['input_folder']}; "
        f"{run['rows_before'] or 0:,} rows, {run['rows_after'] or 0:,} after removing "
        f"duplicates, in {run['duration_s']:.2f} s."
    )
    rejected = json.loads(run["rejected_json"])
    rows = [
        (f["name"], "ingested", f"{f['rows']:,}", f["sha256"][:16])
        for f in json.loads(run["files_json"])
    ]
    rows += [(name, "rejected", "-", "(reason below)") for name in rejected]
    writer.table(("file", "verdict", "rows", "SHA-256 (start)"), rows, (0.34, 0.16, 0.2, 0.3))
    for name, reason in rejected.items():
        writer.paragraph(f"Rejected {name}: {reason}")


def _timings_section(
    writer: _Writer, timings: dict[str, float] | None, recorded: dict[str, Any] | None
) -> None:
    writer.heading(SECTIONS[6])
    measured = (recorded or {}).get("execution_time")
    if measured:
        writer.paragraph(
            f"Scripts timed by diagnostics.py at {_stamp(recorded['recorded_at'])} UTC "
            "(run as processes on a throw-away copy of the data):"
        )
        writer.table(
            ("script", "seconds"), [(k, _fmt(v, 2)) for k, v in measured.items()], (0.5, 0.5)
        )
    else:
        writer.paragraph("Scripts not timed yet: run diagnostics.py to measure them.")
    if timings:
        writer.paragraph("Steps of the run that wrote this report:")
        writer.table(("step", "seconds"), [(k, _fmt(v, 2)) for k, v in timings.items()], (0.5, 0.5))


def _packages_section(
    writer: _Writer,
    config: common.Config,
    packages: list[dict[str, Any]] | None,
    recorded: dict[str, Any] | None,
) -> None:
    if packages is not None:
        source = "Package versions as checked for this report."
    elif recorded and recorded.get("outdated_packages"):
        packages = recorded["outdated_packages"]
        when = _stamp(recorded["recorded_at"])
        source = f"Package versions as checked by diagnostics.py at {when} UTC."
    else:
        try:
            packages = [
                {**package, "latest": None, "outdated": None, "reason": NOT_CHECKED}
                for package in diagnostics.installed_versions()
            ]
        except common.PipelineError as error:
            writer.heading(SECTIONS[7])
            writer.paragraph(f"Not available: {error}")
            return
        source = "Latest versions not checked yet: run diagnostics.py to ask the package index."
    # The heading stays with the whole table when it fits on one page.
    size = 7.5
    table_height = (len(packages) + 1) * size * ROW_HEIGHT / 72
    writer.heading(SECTIONS[7], keep_with=min(table_height + 1.0, 9.0))
    outdated = [p for p in packages if p.get("outdated")]
    unknown = [p for p in packages if p.get("latest") is None]
    writer.paragraph(
        f"{source} {len(packages)} pinned package(s): {len(outdated)} outdated, "
        f"{len(unknown)} with the latest version unknown."
    )
    why: dict[str, list[str]] = {}
    for package in unknown:
        why.setdefault(str(package.get("reason") or "no reason given"), []).append(package["name"])
    for reason, names in why.items():
        who = "all of them" if len(names) == len(packages) > 1 else ", ".join(names)
        writer.paragraph(f"Latest version unknown for {who}: {reason}")
    rows = []
    for package in sorted(packages, key=lambda p: (not p.get("outdated"), p["name"].lower())):
        if package.get("outdated"):
            status = "OUTDATED"
        elif package.get("latest") is None:
            status = "unknown (see above)"
        else:
            status = "up to date"
        rows.append(
            (
                package["name"],
                package.get("required") or "",
                package.get("installed") or "not installed",
                package.get("latest") or "?",
                status,
            )
        )
    writer.table(
        ("package", "required", "installed", "latest", "status"),
        rows,
        (0.2, 0.17, 0.17, 0.17, 0.29),
        size=size,
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__)
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
        config = common.load_config(args.config)
        print(confusion_matrix_plot(config, args.name))
        print(write_report(config, args.pdf))

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
