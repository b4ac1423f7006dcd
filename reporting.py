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
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs.cli import build_parser, configure_logging, run_cli
from drs.config import Config, load_config
from drs.files import atomic_path
from drs.history import open_history
from drs.pdfpages import PageWriter
from drs.report.charts import confusion_title, draw_confusion
from drs.report.data_sections import (
    data_section,
    drift_section,
    identity_section,
    ingestion_section,
    packages_section,
    timings_section,
)
from drs.report.facts import Facts, confusion, gather
from drs.report.model_sections import (
    confusion_section,
    f1_section,
    lift_section,
    performance_section,
    verdict_section,
)

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

CONFUSION_MATRIX_NAME = "confusionmatrix.png"
REPORT_NAME = "report.pdf"
# Every recorded F1, oldest first, with what it was computed on and by which model.
SCORES_QUERY = (
    "SELECT recorded_at, f1, purpose, dataset, dataset_sha256, model_sha256 FROM scores ORDER BY id"
)


def confusion_counts(config: Config) -> tuple[np.ndarray, list[int]]:
    """The deployed model's confusion matrix on testdata.csv and its class labels [0, 1]."""
    counted = confusion(config)
    return counted.matrix, counted.labels


def confusion_matrix_plot(
    config: Config, name: str = CONFUSION_MATRIX_NAME, facts: Facts | None = None
) -> Path:
    """Write the deployed model's confusion matrix on testdata.csv as a labelled PNG."""
    from matplotlib.figure import Figure

    target = config.output_file(name)
    counted = facts.counted if facts is not None else confusion(config)
    figure = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = figure.add_subplot()
    draw_confusion(ax, counted)
    ax.set_title(f"Confusion matrix\n{confusion_title(counted)}", fontsize=11)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    logger.info("wrote %s", target)
    return target


def score_history(config: Config) -> list[dict[str, Any]]:
    """Every recorded F1 (scores table), oldest first: recorded_at, f1, purpose, dataset, model."""
    with open_history(config) as history:
        return history.rows(SCORES_QUERY)


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


class Section(NamedTuple):
    title: str
    render: Callable[[PageWriter, Facts], None]


SECTIONS = (
    Section("Verdict", verdict_section),
    Section("Did the warnings come true?", lift_section),
    Section("F1 over time", f1_section),
    Section("Expected, realised and estimated performance", performance_section),
    Section("Confusion matrix", confusion_section),
    Section("Data drift", drift_section),
    Section("Summary statistics and missing values", data_section),
    Section("Ingested files", ingestion_section),
    Section("Script timings", timings_section),
    Section("Outdated packages", packages_section),
    Section("Appendix: model and deployment identity", identity_section),
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
