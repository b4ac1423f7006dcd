"""The report's sections on the model: the verdict, its warnings' lift, F1, the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drs import drift, releases, riskhistory, runs
from drs.clock import readable
from drs.pdfpages import SMALL_SIZE, PageWriter, cell_text
from drs.report.charts import confusion_title, draw_confusion, draw_f1
from drs.report.facts import Facts
from drs.report.words import expected_f1, more, stamp
from drs.runs import ScorePurpose, Severity

# An estimated F1 this far from the realised one on the same rows is called out.
ESTIMATE_GAP = 0.1
F1_PLOT_HEIGHT = 3.6
CONFUSION_HEIGHT = 4.1
SEVERITY_COLOURS = {
    Severity.OK: "#1b7f3b",
    Severity.NOTICE: "#12355b",
    Severity.WARNING: "#9a6700",
    Severity.CRITICAL: "#b42318",
}


def verdict_section(writer: PageWriter, facts: Facts) -> None:
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
            ("F1 expected (cross-validated on its training data)", expected_f1(release)),
            ("features drifted at the last check", drifted),
            (
                "model last retrained",
                f"{stamp(retrained[-1]['recorded_at'])} UTC"
                if retrained
                else f"{stamp(release.manifest.get('deployed_at'))} UTC",
            ),
            (
                "last automated check",
                f"{stamp(checked)} UTC: {runs.run_words(run)}" if run else "none yet",
            ),
            ("report written", f"{stamp(facts.written_at)} UTC"),
        ],
        (0.4, 0.6),
        size=9,
    )


def lift_section(writer: PageWriter, facts: Facts) -> None:
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


def f1_section(writer: PageWriter, facts: Facts) -> None:
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
    draw_f1(writer.axes(F1_PLOT_HEIGHT), facts)
    shown = facts.recent_scores
    writer.table(
        ("recorded at (UTC)", "F1", "what was scored", "on"),
        [
            (
                stamp(row["recorded_at"]),
                cell_text(row["f1"]),
                _purpose(row["purpose"]),
                Path(row["dataset"].split(" with ")[0]).name + _batch(row["dataset"]),
            )
            for row in reversed(shown)
        ],
        (0.2, 0.09, 0.33, 0.38),
    )


SCORE_PURPOSES: dict[str, str] = {
    ScorePurpose.TEST: "new model, at training",
    ScorePurpose.EXPECTED_CV: "new model, cross-validated",
    ScorePurpose.DRIFT_CHECK: "deployed model, drift check",
    ScorePurpose.NEW_FILES: "deployed model, new files",
    ScorePurpose.ESTIMATED: "deployed model, estimated",
}


def _purpose(purpose: str) -> str:
    return SCORE_PURPOSES.get(purpose, purpose)


def _batch(dataset: str) -> str:
    _, _, files = dataset.partition(" with ")
    return f" (new: {files})" if files else ""


def performance_section(writer: PageWriter, facts: Facts) -> None:
    """Expected, realised and estimated F1 side by side; the retraining's candidates."""
    run = facts.run
    performance = (run.performance if run else None) or {}
    retraining = (run.retraining if run else None) or {}
    expected = facts.release.model_card().get("expected") or {}
    writer.heading("Expected, realised and estimated performance", keep_with=1.6)
    writer.paragraph(
        f"The deployed model's expected F1 is its F1 cross-validated on its own training "
        f"data: {expected_f1(facts.release)}. At each check it is compared with the F1 on the "
        "labelled rows of the new files (realised), and, for rows that have no label yet, "
        "with the F1 the model expects of itself from its predicted probabilities "
        "(estimated). The estimate assumes the probabilities are calibrated; the Brier score "
        f"of its cross-validated probabilities is {cell_text(expected.get('brier'))} "
        "(0 is perfect; 0.25 is no better than a coin)."
    )
    _last_check_table(writer, performance)
    _estimate_gap(writer, performance)
    _candidates_table(writer, retraining)
    _reliability_table(writer, expected.get("reliability"))


def _last_check_table(writer: PageWriter, performance: dict[str, Any]) -> None:
    """The F1s the last check measured: realised, estimated on the same rows, estimated."""
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


def _estimate_gap(writer: PageWriter, performance: dict[str, Any]) -> None:
    """Call out an estimate far from the realised F1: the estimates can no longer be trusted."""
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


def _candidates_table(writer: PageWriter, retraining: dict[str, Any]) -> None:
    """The models the last retraining tried, beside the deployed one it had to beat."""
    candidates = retraining.get("candidates")
    if not isinstance(candidates, list):
        return
    writer.paragraph(f"Retraining at the last check: {retraining.get('reason')}.")
    writer.table(
        ("model", "trained on", "rows", "F1 on the newest rows (out of fold)"),
        [
            (
                c.get("window"),
                ", ".join(c.get("files") or [])
                + more(c.get("file_count"), len(c.get("files") or [])),
                f"{c.get('rows', 0):,}",
                cell_text(c.get("f1")) if c.get("f1") is not None else c.get("reason") or "-",
            )
            for c in candidates
            if isinstance(c, dict)
        ]
        + [("the deployed model (champion)", "", "", cell_text(retraining.get("champion_f1")))],
        (0.3, 0.3, 0.1, 0.3),
    )


def _reliability_table(writer: PageWriter, reliability: Any) -> None:
    """How well the deployed model's probabilities matched who left, band by band."""
    if not (isinstance(reliability, list) and reliability):
        return
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


def confusion_section(writer: PageWriter, facts: Facts) -> None:
    counted = facts.counted
    writer.heading("Confusion matrix", keep_with=CONFUSION_HEIGHT + 0.5)
    writer.paragraph(confusion_title(counted).replace("\n", " ") + ".")
    ax = writer.axes(CONFUSION_HEIGHT, left=1.9, bottom=0.55)
    ax.set_anchor("W")
    draw_confusion(ax, counted)
    writer.paragraph(
        "Rows are the actual outcome, columns the model's prediction. "
        + ", ".join(f"{key} {cell_text(value)}" for key, value in counted.rates().items())
        + "."
    )
