"""What the system says about itself: the cron log's last line, the alert, the report's page 1."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import (
    PROJECT,
    CronWorkspace,
    make_workspace,
    page_one,
    run_script,
    switch_to_source,
)

import fullprocess
import reporting
from drs import datagen, releases
from drs.config import FEATURES, ID_COLUMN, TARGET, Config, load_config
from drs.report.charts import draw_f1
from drs.runs import Severity


def details(space: Workspace) -> str:
    """The log's details line of the last run (just before its outcome line)."""
    return [line for line in space.log.read_text().splitlines() if " details: " in line][-1]


class Workspace(CronWorkspace):
    """A throw-away checkout run by cron's command line, with an alert command that records."""

    def add_clients(self, name: str, scale: float) -> None:
        """New clients like the training ones (features times scale), each leaving with the
        probability the model gives it (seeded).

        The model is right about all of them: no model drift, whatever the features do.
        """
        config = self.config
        frame = pd.read_csv(config.input_folder / "dataset1.csv").sample(400, random_state=3)
        for feature in FEATURES:
            frame[feature] = (frame[feature] * scale).round()
        frame[ID_COLUMN] = [f"n{number:04d}" for number in range(len(frame))]
        release = releases.current_release(config.deployment_folder)
        assert release is not None
        chance = release.load_model().predict_proba(frame[list(FEATURES)])[:, 1]
        frame[TARGET] = (np.random.default_rng(5).random(len(frame)) < chance).astype(int)
        frame.to_csv(config.input_folder / name, index=False)


@pytest.mark.slow
def test_each_outcome_is_said_in_the_log_the_alert_and_the_report(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "workspace")

    status, line = space.tick()
    assert status == 0
    assert " INFO fullprocess: NOTICE: first model deployed: release " in line
    assert line.endswith("; exit 0")
    assert "reports: confusionmatrix2.png, apireturns2.txt, report2.pdf" in space.log.read_text()
    report = space.config.model_folder / fullprocess.REPORT_NAME
    assert "Attrition-risk model: NOTICE first model deployed: release " in page_one(report)
    [(subject, payload)] = space.alerts_received()
    assert subject.startswith("[risk model NOTICE] first model deployed: release ")
    assert payload["severity"] == "notice" and payload["why"] == "new"
    assert payload["outcome_line"] == line.split(" INFO fullprocess: ")[1]

    status, line = space.tick()
    assert (status, line.split("INFO fullprocess: ")[1].split(";")[0]) == (
        0,
        "NOTICE: no new data",
    )
    assert len(space.alerts_received()) == 1, "no alert for a quiet tick"

    # The course's raw test compares F1s on different data: on clients as the model says
    # it flips a coin. The expected test holds the model to what it promised.
    space.set(drift_test="expected")
    space.add_clients("dataset8.csv", scale=1.0)
    status, line = space.tick()
    assert status == 0
    assert "NOTICE: 1 new file, no model drift; kept the deployed model; release " in line
    assert "no feature drifted" in details(space)
    assert "Attrition-risk model: NOTICE 1 new file, no model drift" in page_one(report)
    assert len(space.alerts_received()) == 1, "no alert: new data on the same release"

    space.add_clients("dataset9.csv", scale=2.5)
    status, line = space.tick()
    assert status == 0
    assert "kept the deployed model" in line
    assert "3 of 3 features drifted" in details(space)
    assert len(space.alerts_received()) == 1, "feature drift alone is reported, not alerted"
    log = space.log.read_text()
    assert (
        "data drift (normalised Wasserstein distance, threshold 0.1) of new files dataset9.csv"
        in log
    )
    assert "lastmonth_activity" in log and "DRIFTED" in log

    switch_to_source(space.config_path)
    status, line = space.tick()
    assert status == 0
    assert "NOTICE: model drift found, retrained and redeployed: release " in line
    assert "model drift found (new-data F1" in details(space)
    report = space.config.model_folder / fullprocess.REPORT_NAME
    text = page_one(report)
    assert "Attrition-risk model: NOTICE model drift found, retrained and redeployed" in text
    subject, payload = space.alerts_received()[-1]
    assert payload["why"] == "release changed" and "retrained and redeployed" in subject

    space.set(drift_test="fancy")
    status, line = space.tick()
    assert status == 1
    assert " ERROR fullprocess: CRITICAL: failed at looking for new data: " in line
    assert "(found 'fancy')" in line and line.endswith("; exit 1")
    assert len(line.split(" fullprocess: ")[1]) <= 200
    subject, payload = space.alerts_received()[-1]
    assert payload["severity"] == "critical" and payload["why"] == "worse"
    assert subject.startswith("[risk model CRITICAL] failed at looking for new data: ")
    space.set(drift_test="raw")
    done = run_script("reporting.py", "--config", str(space.config_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    by_hand = space.config.model_folder / reporting.REPORT_NAME
    assert "Attrition-risk model: CRITICAL failed at looking for new data" in page_one(by_hand)

    log = space.log.read_text()
    assert "HTTP/1.1" not in log, "the temporary API's access lines stay out of the cron log"
    assert "GET /diagnostics" not in log


@pytest.mark.parametrize(
    ("severity", "headline", "action"),
    [
        (Severity.OK, "all well; last change 2026-12-01 10:00 UTC: kept", None),
        (Severity.NOTICE, "model drift found, retrained and redeployed: release R2", None),
        (Severity.WARNING, "test data stale; release R2 live", "Replace testdata.csv."),
        (Severity.CRITICAL, "failed at training: disk full", "Fix the cause."),
    ],
)
def test_page_one_opens_with_the_verdict(
    deployed_workspace: Config,
    tmp_path: Path,
    severity: Severity,
    headline: str,
    action: str | None,
) -> None:
    facts = reporting.gather(deployed_workspace)
    assert facts.verdict.release_id == facts.release.id
    verdict = facts.verdict._replace(
        severity=severity,
        headline=headline,
        action=action,
        details=("The first detail.",),
    )
    facts = dataclasses.replace(facts, verdict=verdict)
    target = reporting.write_report(deployed_workspace, f"{tmp_path.name}.pdf", facts)
    text = page_one(target)
    assert text.startswith(f"Attrition-risk model: {severity.value.upper()} {headline}")
    assert f"Next action: {action or 'none; nothing needs doing'}" in text
    assert "The first detail." in text
    assert f"live release {facts.release.id}" in text
    assert facts.release.model_sha256 not in text, "identity details live in the appendix"


@pytest.fixture(scope="module")
def deployed_workspace(tmp_path_factory: pytest.TempPathFactory) -> Config:
    from helpers import deploy_workspace

    return deploy_workspace(tmp_path_factory.mktemp("verdicts") / "workspace", rows=300)


def test_the_f1_chart_draws_each_dataset_as_its_own_series(
    deployed_workspace: Config,
) -> None:
    from matplotlib.figure import Figure

    scores = [
        {
            "recorded_at": f"2026-12-0{day}T10:00:00Z",
            "f1": f1,
            "purpose": purpose,
            "dataset": dataset,
            "dataset_sha256": sha,
            "model_sha256": "m",
        }
        for day, f1, purpose, dataset, sha in [
            (1, 0.71, "test", "/x/testdata.csv", "a"),
            (2, 0.35, "drift-check", "/x/finaldata.csv with d3.csv", "b"),
            (2, 0.60, "test", "/x/testdata.csv", "a"),
            (3, 0.52, "drift-check", "/x/finaldata.csv with d5.csv", "c"),
            (4, 0.65, "test", "/x/testdata.csv", "z"),  # the test data was replaced
        ]
    ]
    facts = reporting.gather(deployed_workspace)
    facts = dataclasses.replace(facts, scores=scores, checks=[], deployments=[])
    ax = Figure().add_subplot()
    draw_f1(ax, facts)
    lines = {line.get_label(): line for line in ax.get_lines()}
    first = lines["each new model on testdata.csv, version 1"]
    assert list(first.get_ydata()) == [0.71, 0.60]
    assert list(lines["each new model on testdata.csv, version 2"].get_ydata()) == [0.65]
    checks = lines["deployed model on finaldata.csv (the course's drift check)"]
    assert checks.get_linestyle() == "None", "points on different data are never joined"
    assert list(checks.get_ydata()) == [0.35, 0.52]


def test_diagnostics_after_a_run_are_complete_at_once(tmp_path: Path) -> None:
    """/diagnostics answers from what fullprocess.py recorded: never pending after a run."""
    from helpers import make_app

    config_path = make_workspace(tmp_path / "workspace")
    assert run_script("fullprocess.py", "--config", str(config_path), cwd=tmp_path).returncode == 0
    answer = make_app(load_config(config_path)).test_client().get("/diagnostics").get_json()
    assert answer["status"] == "complete"
    assert answer["source"] == "fullprocess.py"
    assert set(answer["execution_time"]) == {"ingestion.py", "training.py"}
    returns = json.loads((config_path.parent / "practicemodels" / "apireturns2.txt").read_text())
    assert returns["diagnostics"]["status"] == "complete"
    assert returns["diagnostics"]["execution_time"] == answer["execution_time"]


SELF_CONTAINED = [
    PROJECT / "README.md",
    PROJECT / "cronjob.txt",
    *sorted(PROJECT.glob("*.py")),
    *sorted((PROJECT / "drs").rglob("*.py")),
    *sorted((PROJECT / "bench").glob("*.py")),
    *sorted((PROJECT / "docs").glob("*.md")),
]


@pytest.mark.parametrize("path", SELF_CONTAINED, ids=lambda path: str(path.relative_to(PROJECT)))
def test_nothing_points_at_documents_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert "SPEC" not in text and "§" not in text


@pytest.mark.parametrize("script", sorted(path.name for path in PROJECT.glob("*.py")))
def test_no_help_text_points_outside_the_repository(script: str, tmp_path: Path) -> None:
    if "def main(" not in (PROJECT / script).read_text():
        pytest.skip("not a command")
    done = subprocess.run(
        [sys.executable, str(PROJECT / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert "SPEC" not in done.stdout + done.stderr and "§" not in done.stdout


def test_the_api_examples_match_what_the_code_produces() -> None:
    api_doc = (PROJECT / "docs" / "api.md").read_text()
    test_rows = datagen.SAMPLE_TEST_ROWS
    assert f'"rows": {test_rows}' in api_doc, "the /scoring example shows the shipped test data"


def test_the_readme_is_short_and_links_to_every_doc() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    for doc in sorted((PROJECT / "docs").glob("*.md")):
        assert f"](docs/{doc.name})" in readme, f"the README leads to {doc.name}"
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)", readme):
        assert (PROJECT / link).is_file(), link
