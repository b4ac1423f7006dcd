"""The report's charts: the confusion matrix, F1 over time, the drift histograms."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import releases
from drs.clock import parse_stamp
from drs.config import FEATURES
from drs.pdfpages import MARGIN, PAGE_SIZE, SMALL_SIZE, PageWriter, cell_text
from drs.runs import ScorePurpose

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from drs.report.facts import Confusion, Facts
    from drs.runs import RunRecord

CLASS_LABELS = ("stayed (0)", "exited (1)")
# F1 scores drawn as points: (purpose, marker style, legend label).
POINT_SERIES: tuple[tuple[str, dict[str, Any], str], ...] = (
    (
        ScorePurpose.EXPECTED_CV,
        {"marker": "^", "markersize": 5, "color": "#2f855a"},
        "each new model's expected F1 (cross-validated)",
    ),
    (
        ScorePurpose.NEW_FILES,
        {"marker": "D", "markersize": 5, "color": "#b42318"},
        "deployed model on each new batch",
    ),
    (
        ScorePurpose.ESTIMATED,
        {"marker": "o", "markersize": 6, "markerfacecolor": "none", "color": "#9a6700"},
        "estimated F1 without labels (assumes calibrated probabilities)",
    ),
    (
        ScorePurpose.DRIFT_CHECK,
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


# The F1 plot's time axis spans at least this much, however close together the scores.
MIN_TIME_AXIS = timedelta(minutes=2)
HISTOGRAM_HEIGHT = 2.2
HISTOGRAM_GAP = 0.4


def draw_confusion(ax: Axes, counted: Confusion) -> None:
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


def confusion_title(counted: Confusion) -> str:
    return (
        f"Deployed model, release {counted.release.id}\n"
        f"on {counted.dataset.name}, {counted.rows:,} rows"
    )


def _when(stamp: str) -> datetime:
    when = parse_stamp(stamp)
    assert when is not None, "gather() keeps only rows with a time stamp"
    return when


def _day(stamp: str) -> float:
    """A time stamp as matplotlib's date number (days since its epoch): the chart's x."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(_when(stamp)))


def draw_f1(ax: Axes, facts: Facts) -> None:
    """Each dataset its own series; drift checks as single points with their thresholds."""
    marks = _deployment_marks(facts)
    for style, _, rows in marks:
        for row in rows:
            ax.axvline(_day(row["recorded_at"]), linewidth=1, **style)
    _plot_test_scores(ax, facts.scores)
    _plot_point_scores(ax, facts.scores)
    _plot_drift_bounds(ax, facts.checks)
    for style, label, _ in marks:
        ax.plot([], [], label=label, **style)
    ax.set_ylim(0, 1.05)
    ax.margins(x=0.08)
    marked = [row for _, _, rows in marks for row in rows]
    _widen_time_axis(ax, [_day(row["recorded_at"]) for row in (*facts.scores, *marked)])
    _finish_f1_axes(ax)


def _plot_test_scores(ax: Axes, scores: list[dict[str, Any]]) -> None:
    """Each new model on the test data: one line a version of the test file."""
    tests: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for row in scores:
        if row["purpose"] == ScorePurpose.TEST:
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


def _plot_point_scores(ax: Axes, scores: list[dict[str, Any]]) -> None:
    """Scores on data that changes each time: points, never joined by a line."""
    for purpose, style, label in POINT_SERIES:
        points = [row for row in scores if row["purpose"] == purpose]
        if points:
            ax.plot(
                [_day(r["recorded_at"]) for r in points],
                [r["f1"] for r in points],
                linestyle="none",
                label=label,
                **style,
            )


def _plot_drift_bounds(ax: Axes, checks: list[RunRecord]) -> None:
    """The F1 below which each model-drift check called drift, as a short bar at its time."""
    bounds = [
        (finished, (check.model_drift or {})["bound"])
        for check in checks
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


def _widen_time_axis(ax: Axes, moments: list[float]) -> None:
    """Span at least MIN_TIME_AXIS.

    One moment (or a few within seconds) gives the date axis nothing to divide.
    """
    if max(moments) - min(moments) < MIN_TIME_AXIS / timedelta(days=1):
        middle, half = (min(moments) + max(moments)) / 2, MIN_TIME_AXIS / timedelta(days=2)
        ax.set_xlim(middle - half, middle + half)


def _finish_f1_axes(ax: Axes) -> None:
    """Label, grid, legend and a date axis whose ticks say only what changes."""
    import matplotlib.dates as mdates

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


def draw_histograms(writer: PageWriter, story: dict[str, Any]) -> None:
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
