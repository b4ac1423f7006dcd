"""The report's sections on the data and the system: drift, data, files, timings, packages."""

from __future__ import annotations

from typing import Any

from drs import diagnosis, drift
from drs.errors import PipelineError
from drs.files import some_names
from drs.pdfpages import POINTS_PER_INCH, ROW_HEIGHT, SMALL_SIZE, PageWriter, cell_text
from drs.report.charts import draw_histograms
from drs.report.facts import Facts
from drs.report.words import stamp

NOT_CHECKED = "not checked; run diagnostics.py"
# Files the report's ingestion table lists; the rest are counted (a year is 50,000 files).
FILES_LISTED = 20


def drift_section(writer: PageWriter, facts: Facts) -> None:
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
    draw_histograms(writer, story)


def data_section(writer: PageWriter, facts: Facts) -> None:
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


def ingestion_section(writer: PageWriter, facts: Facts) -> None:
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
        f"Latest ingestion run: {stamp(run['started_at'])} UTC, {run['status']}, "
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


def timings_section(writer: PageWriter, facts: Facts) -> None:
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
            f"{stamp(diagnosed['recorded_at'])} UTC, {diagnosed.get('timed', '')}:"
        )
        writer.table(
            ("script", "seconds"),
            [(k, cell_text(v, 2)) for k, v in diagnosed["execution_time"].items()],
            (0.5, 0.5),
        )
    else:
        writer.paragraph("Scripts not timed yet: run diagnostics.py or fullprocess.py.")


def packages_section(writer: PageWriter, facts: Facts) -> None:
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
        when = stamp(recorded["recorded_at"])
        return recorded["outdated_packages"], f"Package versions as checked at {when} UTC."
    try:
        installed = diagnosis.installed_versions()
    except PipelineError as error:
        return None, str(error)
    unchecked = [{**p, "latest": None, "outdated": None, "reason": NOT_CHECKED} for p in installed]
    return unchecked, "Latest versions not checked yet."


def identity_section(writer: PageWriter, facts: Facts) -> None:
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
