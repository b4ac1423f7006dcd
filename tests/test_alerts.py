"""Alerts: when a verdict is news, what the command gets, and a command that misbehaves."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import pipeline_run

from drs import alerts, state
from drs.config import load_config
from drs.history import open_history
from drs.runs import Outcome, RunRecord, Severity

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
A, B = "20261206T070000000000Z", "20261206T080000000000Z"


def verdict_of(**inputs: Any) -> tuple[state.Verdict, state.State]:
    defaults: dict[str, Any] = {
        "live": {"id": A, "deployed_at": "2026-12-06T07:00:00Z", "test_f1": 0.7},
        "damage": None,
        "staged": [],
        "runs": [],
        "last_check": None,
        "last_test_check": None,
        "deployments": [],
        "deployed_by_run": None,
        "last_ingestion": None,
        "owed_alert": None,
        "test_data_sha256": lambda: None,
        "drift_test": "raw",
        "now": NOW,
    }
    found = state.compute(**{**defaults, **inputs})
    return state.verdict(found), found


def sent(verdict: state.Verdict, hours_ago: float = 0.0) -> dict[str, Any]:
    return {
        "key": verdict.key,
        "severity": verdict.severity.value,
        "release_id": verdict.release_id,
        "created_at": (NOW - timedelta(hours=hours_ago)).isoformat(),
        "delivered_at": None,
    }


STALE = RunRecord(id=1, outcome=Outcome.KEPT, test_data_checked=True, test_data_stale="x")
FAILED = RunRecord(id=2, outcome=Outcome.FAILED, step="training", problem="p", finished_at="x")


def test_a_warning_goes_out_when_new_or_worse_and_once_a_day_while_open() -> None:
    stale, _ = verdict_of(runs=[STALE], last_test_check=STALE)
    assert alerts.why_send(stale, None, NOW) == alerts.Why.NEW
    assert alerts.why_send(stale, sent(stale, hours_ago=1), NOW) is None
    assert alerts.why_send(stale, sent(stale, hours_ago=25), NOW) == alerts.Why.REMINDER
    failed, _ = verdict_of(runs=[STALE, FAILED], last_test_check=STALE)
    assert alerts.why_send(failed, sent(stale), NOW) == alerts.Why.WORSE
    staged, _ = verdict_of(staged=[B])
    assert alerts.why_send(staged, sent(stale), NOW) == alerts.Why.NEW


def test_a_notice_goes_out_when_the_release_changes_or_a_problem_clears() -> None:
    quiet, _ = verdict_of()
    stale, _ = verdict_of(runs=[STALE], last_test_check=STALE)
    assert alerts.why_send(quiet, sent(stale), NOW) == alerts.Why.RECOVERED
    redeployed = RunRecord(
        id=3,
        outcome=Outcome.REDEPLOYED,
        decision=Outcome.REDEPLOYED,
        finished_at=NOW.isoformat(),
        deployed={"release_id": B},
        release_before={"release_id": A},
    )
    notice, _ = verdict_of(live={"id": B}, runs=[redeployed])
    assert notice.severity == Severity.NOTICE
    assert alerts.why_send(notice, sent(quiet), NOW) == alerts.Why.RELEASE_CHANGED
    kept = RunRecord(
        id=4,
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        model_drift={},
        finished_at=NOW.isoformat(),
    )
    again, _ = verdict_of(live={"id": B}, runs=[redeployed, kept])
    assert alerts.why_send(again, sent(notice), NOW) is None, "new data on the same release"


def test_the_payload_is_at_most_4_kb_and_keeps_the_verdict_whatever_the_details() -> None:
    flood = RunRecord(
        id=1, outcome=Outcome.FAILED, step="s" * 10_000, problem="p" * 100_000, finished_at="x"
    )
    rejected = json.dumps({"n" * 9000: "r" * 9000})
    verdict, _ = verdict_of(runs=[flood], last_ingestion={"rejected_json": rejected})
    data = alerts.payload(verdict, alerts.Why.NEW, "l" * 300, "/r" * 1000)
    assert len(data) <= alerts.PAYLOAD_BYTES
    subject, body = data.decode().split("\n", 1)
    assert subject.startswith("[risk model CRITICAL] failed at ")
    parsed = json.loads(body)
    assert parsed["severity"] == "critical" and parsed["release"] == A
    assert parsed["action"] and parsed["open"][0] == "last run failed"


def test_the_command_gets_subject_severity_and_headline(tmp_path: Path) -> None:
    heard = tmp_path / "heard"
    problem = alerts.send(
        f'cat > "{heard}"; echo "$DRS_ALERT_SEVERITY|$DRS_ALERT_HEADLINE" >> "{heard}"',
        b"subject\n{}\n",
        {alerts.SEVERITY_ENV_VAR: "warning", alerts.HEADLINE_ENV_VAR: "test data stale"},
        tmp_path,
    )
    assert problem is None
    assert heard.read_text() == "subject\n{}\nwarning|test data stale\n"


def test_the_time_bound_covers_writing_the_input(tmp_path: Path) -> None:
    clock = time.monotonic()
    problem = alerts.send("sleep 30", b"x" * 1_000_000, {}, tmp_path, timeout=1.0)
    assert problem == "still running after 1 s; stopped it"
    assert time.monotonic() - clock < 5


def test_a_flooding_failing_command_costs_4_kb_of_output(tmp_path: Path) -> None:
    problem = alerts.send(
        "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo the real reason >&2; exit 3",
        b"",
        {},
        tmp_path,
    )
    assert problem == "exit 3: the real reason"


@pytest.mark.parametrize(
    ("command", "expected"),
    [("/no/such/command", "exit 127: "), ("echo nope >&2; exit 3", "exit 3: nope")],
)
def test_a_failing_command_says_why(tmp_path: Path, command: str, expected: str) -> None:
    problem = alerts.send(command, b"", {}, tmp_path)
    assert problem is not None and problem.startswith(expected)


def test_a_child_left_in_the_background_does_not_hold_the_sender(tmp_path: Path) -> None:
    clock = time.monotonic()
    assert alerts.send("sleep 3 & echo spawned", b"", {}, tmp_path) is None
    assert time.monotonic() - clock < 2


def test_an_alert_is_owed_until_delivered_retried_with_back_off_and_never_under_the_lock(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing command leaves the alert owed (critical meanwhile); the next due run sends it."""
    config = load_config(config_path)
    heard, failing = config.root / "heard.txt", config.root / "failing"
    failing.touch()
    command = (
        f'flock -n "{config.lock_path}" true && echo lock-free >> "{heard}" || '
        f'echo lock-held >> "{heard}"; cat >> "{heard}"; test ! -e "{failing}"'
    )
    raw = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**raw, "alert_command": command}))
    status, line = pipeline_run(config_path, capsys)
    assert status == 0 and line.startswith("NOTICE: first model deployed"), line
    assert heard.read_text().startswith("lock-free\n[risk model NOTICE] first model deployed")
    with open_history(config) as history:
        [owed] = history.rows("SELECT * FROM alerts")
        assert (owed["status"], owed["attempts"]) == ("owed", 1)
        assert owed["last_error"] == "exit 1: no message"
    status, line = pipeline_run(config_path, capsys)
    assert line.startswith("CRITICAL: no new data; alerts not delivered: exit 1: no message"), line
    with open_history(config) as history:
        rows = history.rows("SELECT status, attempts, severity FROM alerts ORDER BY id")
    # The critical verdict replaced the owed notice, keeping its back-off: not tried yet.
    assert rows == [
        {"status": "superseded", "attempts": 1, "severity": "notice"},
        {"status": "owed", "attempts": 1, "severity": "critical"},
    ]
    assert heard.read_text().count("[risk model") == 1, "within the back-off, not tried again"
    failing.unlink()
    with open_history(config) as history:  # the back-off has passed
        history.execute("UPDATE alerts SET next_attempt_at = '2020-01-01T00:00:00.000Z'")
    status, line = pipeline_run(config_path, capsys)
    said = heard.read_text()
    assert said.count("[risk model") == 2 and "[risk model CRITICAL] alerts not delivered" in said
    assert "lock-held" not in said, "the command never runs while the pipeline lock is held"
    with open_history(config) as history:
        [last] = history.rows("SELECT status FROM alerts ORDER BY id DESC LIMIT 1")
    assert last["status"] == "delivered"
    status, line = pipeline_run(config_path, capsys)
    assert line.startswith("NOTICE: no new data; first model deployed"), "delivered: cleared"
    assert "[risk model NOTICE]" in heard.read_text().split("[risk model CRITICAL]")[1], (
        "the recovery is said"
    )
