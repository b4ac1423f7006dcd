"""One account of the system: after a rollback, a promotion, a kill while reporting and a
rejected-only batch, the outcome line, the alert, the report, the page, /health and
/metrics name the same live release and the same severity."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    CronWorkspace,
    page_one,
    run_script,
    switch_to_source,
)

import reporting
from drs import releasefolder, releases
from drs.config import load_config
from drs.files import KILL_AT_ENV_VAR
from drs.runs import Severity
from drs.web.factory import create_app


class Account(CronWorkspace):
    """A workspace run by cron's command line whose every surface can be asked what it says."""

    def surfaces(self, line: str, report: Path | None = None) -> dict[str, tuple[str, str]]:
        """(severity, live release) as each surface says it; line: a tick's outcome line."""
        config = self.config
        said = line.split(": ", 1)[1] if " fullprocess: " in line else line
        live = releases.live_release_id(config.deployment_folder) or "-"
        found: dict[str, tuple[str, str]] = {}
        found["line"] = (said.split(":", 1)[0].lower(), live if live in said else "?")
        _, payload = self.alerts_received()[-1]
        found["alert"] = (payload["severity"], payload["release"])
        if report is None:
            report = reporting.write_report(config, "report.pdf")
        text = page_one(report)
        severity = re.search(r"Attrition-risk model: (OK|NOTICE|WARNING|CRITICAL)", text)
        assert severity is not None, text[:300]
        found["report"] = (
            severity.group(1).lower(),
            live if f"live release {live}" in text else "?",
        )
        client = create_app(config).test_client()
        page = client.get("/model-health").get_data(as_text=True)
        shown = re.search(r'class="status severity-(\w+)"', page)
        assert shown is not None, page[:2000]
        found["page"] = (shown.group(1), live if f"Model: release {live}" in page else "?")
        trust = re.search(r'class="freshness trust-(\w+)"', client.get("/").get_data(as_text=True))
        assert trust is not None
        found["list page"] = (
            {"ok": found["page"][0], "care": "warning", "alarm": "critical"}[trust.group(1)],
            found["page"][1],
        )
        health = client.get("/health").get_json()
        found["health"] = (health["verdict"]["severity"], health["verdict"]["release_id"])
        metrics = client.get("/metrics").get_data(as_text=True)
        level = int(float(re.search(r"^drs_severity (\S+)$", metrics, re.M).group(1)))  # type: ignore[union-attr]
        release = re.search(r'^drs_live_release_info\{.*release="([^"]+)"', metrics, re.M)
        found["metrics"] = (list(Severity)[level].value, release.group(1) if release else "-")
        return found


def assert_one_account(found: dict[str, tuple[str, str]], severity: Severity, live: str) -> None:
    assert set(found.values()) == {(severity.value, live)}, found


@pytest.fixture(scope="module")
def redeployed_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after its first deployment (A) and a drift run that redeployed (B)."""
    space = Account(tmp_path_factory.mktemp("account") / "workspace")
    assert space.tick()[0] == 0
    switch_to_source(space.config_path)
    status, line = space.tick()
    assert status == 0 and "retrained and redeployed" in line, line
    return space.config_path.parent


def copy_of(snapshot: Path, tmp_path: Path) -> Account:
    """A copy of the workspace folder snapshot, its alert command writing into the copy."""
    root = tmp_path / "workspace"
    shutil.copytree(snapshot, root, symlinks=True)
    space = Account.__new__(Account)
    space.config_path = root / "config.json"
    space.alerts = root / "alerts.txt"
    space.log = root / "logs" / "fullprocess.log"
    raw = json.loads(space.config_path.read_text())
    raw["alert_command"] = raw["alert_command"].replace(str(snapshot), str(root))
    space.config_path.write_text(json.dumps(raw))
    return space


@pytest.mark.slow
def test_after_a_rollback_every_surface_names_the_release_rolled_back_to(
    redeployed_once: Path, tmp_path: Path
) -> None:
    space = copy_of(redeployed_once, tmp_path)
    config = space.config
    before = [r["release"] for r in releasefolder.release_table(config.deployment_folder)]
    done = run_script(
        "deployment.py", "--config", str(space.config_path), "--rollback", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    live = releases.live_release_id(config.deployment_folder)
    assert live == before[1]
    status, line = space.tick()
    assert status == 0
    rolled = f"rolled back by hand to release {live} (from {before[0]})"
    assert f"NOTICE: no new data; {rolled}" in line
    found = space.surfaces(line)
    assert_one_account(found, Severity.NOTICE, live)
    subject, payload = space.alerts_received()[-1]
    assert subject == f"[risk model NOTICE] {rolled}"
    assert payload["release"] == live and payload["why"] == "release changed"
    health = create_app(space.config).test_client().get("/health").get_json()
    assert health["verdict"]["went_live"].endswith(", rolled back by hand")
    listed = run_script("deployment.py", "--config", str(space.config_path), "--list", cwd=tmp_path)
    assert "rolled back by hand" in listed.stdout


@pytest.mark.slow
def test_after_a_promotion_every_surface_names_the_promoted_release(tmp_path: Path) -> None:
    space = Account(tmp_path / "workspace")
    space.set(stage_retrained=True)
    assert space.tick()[0] == 0
    first = releases.live_release_id(space.config.deployment_folder)
    switch_to_source(space.config_path)
    status, line = space.tick()
    staged = releases.promotable(space.config.deployment_folder)[-1].id
    assert status == 0 and line.split(" fullprocess: ")[1].startswith("WARNING: model drift found")
    assert f"release {staged} staged" in line and "action: Check release " in line
    assert space.alerts_received()[-1][1]["severity"] == "warning"
    done = run_script(
        "deployment.py", "--config", str(space.config_path), "--promote", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    status, line = space.tick()
    assert f"NOTICE: no new data; release {staged} promoted by hand, replacing {first}" in line
    found = space.surfaces(line)
    assert_one_account(found, Severity.NOTICE, staged)
    report = reporting.write_report(space.config, "report.pdf")
    assert "0.7149" not in page_one(report) and "staged" not in page_one(report).split("Next")[0]


@pytest.mark.slow
def test_a_rejected_only_batch_is_a_warning_everywhere_and_keeps_stale_test_data(
    tmp_path: Path,
) -> None:
    space = Account(tmp_path / "workspace")
    assert space.tick()[0] == 0
    live = releases.live_release_id(space.config.deployment_folder)
    (space.config.input_folder / "bad.csv").write_text("corporation,exited\nabc,1\n")
    status, line = space.tick()
    assert status == 0
    assert "WARNING: 1 new file (1 rejected)" in line
    assert f"1 file rejected at the last ingestion; release {live} live" in line
    assert "action: Fix or remove the r" in line
    found = space.surfaces(line, space.config.model_folder / "report2.pdf")
    assert_one_account(found, Severity.WARNING, live)
    assert "bad.csv" in " ".join(space.alerts_received()[-1][1]["details"])


def interrupted_step(config_path: Path) -> str | None:
    """The step the newest run was at when it was killed, if it was (else None)."""
    config = load_config(config_path)
    with sqlite3.connect(config.history_path) as connection:
        row = connection.execute(
            "SELECT outcome, detail_json FROM pipeline_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    if row is None or row[0] not in ("running", "interrupted"):
        return None
    return json.loads(row[1]).get("step")


@pytest.mark.slow
def test_a_kill_at_every_file_boundary_of_reporting_loses_no_report_and_no_alert(
    tmp_path: Path,
) -> None:
    """Kill a drift run at each file boundary of its reporting; the next tick catches up.

    The catch-up writes the reports about the killed run, sends the alert it owed, and
    every surface names the release the killed run deployed.
    """
    space = Account(tmp_path / "snapshot" / "workspace")
    assert space.tick()[0] == 0
    switch_to_source(space.config_path)
    snapshot = space.config_path.parent

    def killed_at(boundary: int) -> Account:
        copy = copy_of(snapshot, tmp_path / f"kill{boundary}")
        result = run_script(
            "fullprocess.py",
            "--config",
            str(copy.config_path),
            cwd=tmp_path,
            env={KILL_AT_ENV_VAR: str(boundary)},
        )
        assert result.returncode in {0, -signal.SIGKILL}, result.stderr
        return copy

    # The first boundary of reporting: a binary search over where the kill landed.
    low, high = 1, 200
    while low < high:
        middle = (low + high) // 2
        copy = killed_at(middle)
        step = interrupted_step(copy.config_path)
        if step is None or step == "reporting":
            high = middle
        else:
            low = middle + 1
        shutil.rmtree(copy.config_path.parent)
    kills = 0
    for boundary in range(low, low + 50):
        copy = killed_at(boundary)
        if interrupted_step(copy.config_path) != "reporting":
            break
        kills += 1
        status, line = copy.tick()
        assert status == 0, line
        live = releases.live_release_id(copy.config.deployment_folder)
        assert live is not None
        assert "NOTICE: reports caught up; model drift found, retrained and redeployed" in line
        subject, payload = copy.alerts_received()[-1]
        assert payload["release"] == live and "retrained and redeployed" in subject
        found = copy.surfaces(line, copy.config.model_folder / "report2.pdf")
        assert_one_account(found, Severity.NOTICE, live)
        report = page_one(copy.config.model_folder / "report2.pdf")
        assert "model drift found, retrained and redeployed" in report
        shutil.rmtree(copy.config_path.parent)
    assert kills >= 3, "reporting writes three files"
