"""The state and its one verdict, from tiny inputs: every condition, every way to go live."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drs import runs, state
from drs.conditions import Condition
from drs.releases import By
from drs.runs import Outcome, RunRecord, Severity

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
EARLIER = "2026-12-06T08:00:00.000Z"
LATER = "2026-12-06T08:30:00.000Z"
A, B = "20261206T070000000000Z", "20261206T080000000000Z"


def run(**fields: Any) -> RunRecord:
    defaults: dict[str, Any] = {"id": 1, "started_at": EARLIER, "finished_at": EARLIER}
    return RunRecord(**{**defaults, **fields})


def compute(**inputs: Any) -> state.State:
    defaults: dict[str, Any] = {
        "live": {"id": A, "deployed_at": EARLIER, "test_f1": 0.71, "expected_f1": 0.7},
        "damage": None,
        "staged": [],
        "runs": [],
        "last_check": None,
        "last_test_check": None,
        "deployments": [],
        "deployed_by_run": None,
        "last_ingestion": None,
        "owed_alert": None,
        "test_data_sha256": lambda: "same",
        "drift_test": "raw",
        "now": NOW,
    }
    return state.compute(**{**defaults, **inputs})


def deployment(action: str, release_id: str, at: str, by: str | None) -> state.Deployment:
    return state.Deployment(at, release_id, action, by)


REDEPLOYED = run(
    id=2,
    outcome=Outcome.REDEPLOYED,
    decision=Outcome.REDEPLOYED,
    release_before={"release_id": A, "f1": 0.71},
    deployed={"release_id": B, "f1": 0.6},
    model_drift={"drifted": True, "reason": "new-data F1 0.3 < deployed 0.7"},
    new_files=["d3.csv"],
)


def test_after_a_rollback_the_verdict_names_the_release_rolled_back_to() -> None:
    found = compute(
        runs=[REDEPLOYED],
        deployments=[
            deployment("deploy", A, "2026-12-06T07:00:00Z", By.RUN),
            deployment("deploy", B, EARLIER, By.RUN),
            deployment("rollback", A, LATER, By.HAND),
        ],
    )
    assert found.live is not None and found.live.how == state.HowLive.ROLLED_BACK
    said = state.verdict(found)
    assert said.severity == Severity.NOTICE
    assert said.headline == f"rolled back by hand to release {A} (from {B})"
    assert said.release_id == A and B not in (said.action or "")


def test_after_a_promotion_the_promoted_release_is_live_not_staged() -> None:
    staged = run(
        outcome=Outcome.STAGED,
        decision=Outcome.STAGED,
        release_before={"release_id": A, "f1": 0.7149},
        staged={"release_id": B, "f1": 0.6},
        model_drift={"drifted": True, "reason": "x"},
    )
    found = compute(
        live={"id": B, "deployed_at": LATER},
        runs=[staged],
        deployments=[
            deployment("deploy", A, "2026-12-06T07:00:00Z", By.RUN),
            deployment("stage", B, EARLIER, By.RUN),
            deployment("promote", B, LATER, By.HAND),
        ],
    )
    said = state.verdict(found)
    assert found.live is not None and found.live.how == state.HowLive.PROMOTED
    assert said.headline == f"release {B} promoted by hand, replacing {A}"
    assert "staged" not in said.headline and "0.7149" not in " ".join(said.details)


def test_a_rejected_only_batch_is_a_warning_and_keeps_stale_test_data_open() -> None:
    stale = run(
        id=1,
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        test_data_checked=True,
        test_data_stale="features drifted",
        test_data_sha256="same",
        model_drift={"drifted": False, "reason": "ok"},
    )
    rejected_only = run(
        id=2,
        finished_at=LATER,
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        new_files=["bad.csv"],
        rejected={"bad.csv": "column 'exited' missing"},
    )
    found = compute(
        runs=[stale, rejected_only],
        last_check=stale,
        last_test_check=stale,
        last_ingestion={"started_at": LATER, "rejected_json": json.dumps(rejected_only.rejected)},
    )
    said = state.verdict(found)
    assert said.severity == Severity.WARNING
    assert [c.condition for c in found.conditions] == [
        Condition.FILES_REJECTED,
        Condition.TEST_DATA_STALE,
    ]
    assert said.headline.startswith("1 file rejected at the last ingestion (also: test data stale)")
    assert "bad.csv: column 'exited' missing" in " ".join(said.details)
    assert said.action and "rejected files" in said.action


def test_stale_test_data_closes_when_the_test_data_changes() -> None:
    stale = run(test_data_checked=True, test_data_stale="x", test_data_sha256="old")
    found = compute(runs=[stale], last_test_check=stale, test_data_sha256=lambda: "new")
    assert not found.conditions


@pytest.mark.parametrize(("drift_test", "advises_expected"), [("raw", True), ("expected", False)])
def test_the_stale_action_advises_the_expected_test_only_when_not_used(
    drift_test: str, advises_expected: bool
) -> None:
    stale = run(test_data_checked=True, test_data_stale="x")
    said = state.verdict(compute(runs=[stale], last_test_check=stale, drift_test=drift_test))
    assert ("drift_test 'expected'" in (said.action or "")) is advises_expected


def test_a_failure_is_critical_until_a_later_run_succeeds() -> None:
    failed = run(id=3, outcome=Outcome.FAILED, step="training", problem="disk full")
    said = state.verdict(compute(runs=[REDEPLOYED, failed], live={"id": B}))
    assert said.severity == Severity.CRITICAL
    assert said.headline == f"failed at training: disk full; release {B} live"
    later = run(id=4, outcome=Outcome.NO_NEW_DATA, finished_at=LATER)
    assert state.verdict(compute(runs=[REDEPLOYED, failed, later], live={"id": B})).severity == (
        Severity.NOTICE
    )


def test_an_interrupted_run_is_open_until_a_later_run_finishes() -> None:
    killed = run(
        id=3,
        outcome=Outcome.INTERRUPTED,
        step="reporting",
        finished_at=None,
        decision=Outcome.REDEPLOYED,
        deployed={"release_id": B},
        release_before={"release_id": A},
    )
    found = compute(runs=[killed], live={"id": B})
    assert [c.condition for c in found.conditions] == [Condition.RUN_INTERRUPTED]
    caught_up = run(id=4, outcome=Outcome.REPORTS_CAUGHT_UP, about_run=3, finished_at=LATER)
    said = state.verdict(compute(runs=[killed, caught_up], live={"id": B}))
    assert said.severity == Severity.NOTICE
    assert said.headline == f"no model drift, retrained and redeployed: release {B} replaces {A}"


def test_damage_and_undelivered_alerts_are_critical() -> None:
    said = state.verdict(compute(live=None, damage="current: not a deployment link"))
    assert (said.severity, said.release_id) == (Severity.CRITICAL, None)
    assert said.headline.startswith("deployment damaged: current: not a deployment link")
    owed = {"attempts": 2, "last_error": "exit 3: nope", "created_at": EARLIER}
    said = state.verdict(compute(owed_alert=owed))
    assert said.severity == Severity.CRITICAL and "alerts not delivered: exit 3: nope" in (
        said.headline
    )


def test_a_staged_release_waiting_is_a_warning_with_the_promote_command() -> None:
    said = state.verdict(compute(staged=[B]))
    assert said.severity == Severity.WARNING
    assert said.headline == f"release {B} staged, waiting for promotion; release {A} live"
    assert said.action == f"Check release {B}, then deployment.py --promote makes it live."


def test_news_turns_to_ok_after_a_day() -> None:
    kept = run(
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        model_drift={"drifted": False},
        new_files=["a.csv", "b.csv"],
        release_before={"release_id": A},
    )
    said = state.verdict(compute(runs=[kept]))
    assert said.severity == Severity.NOTICE
    assert (
        said.headline == f"2 new files, no model drift; kept the deployed model; release {A} live"
    )
    said = state.verdict(compute(runs=[kept], now=NOW + timedelta(days=2)))
    assert said.severity == Severity.OK and said.action is None


def test_drift_found_on_the_new_rows_without_a_better_model_is_a_warning() -> None:
    kept = run(
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        model_drift={"drifted": False, "reason": "F1 fine"},
        exits_drift={"drifted": True, "reason": "90 of 300 left", "on_new_rows": True},
        release_before={"release_id": A},
    )
    found = compute(runs=[kept], last_check=kept)
    said = state.verdict(found)
    assert said.severity == Severity.WARNING
    assert said.headline.startswith("model drift found, no better model")
    assert "Model drift found (90 of 300 left)" in found.conditions[0].detail


def test_drift_found_on_all_the_data_only_is_news_not_a_warning() -> None:
    """The raw test's drift weighs every ingested row; the new rows showed no better model."""
    kept = run(
        outcome=Outcome.KEPT,
        decision=Outcome.KEPT,
        model_drift={"drifted": True, "reason": "new-data F1 0.7252 < deployed 0.7254"},
        new_files=["b.csv"],
        release_before={"release_id": A},
    )
    said = state.verdict(compute(runs=[kept], last_check=kept))
    assert said.severity == Severity.NOTICE
    assert said.headline == (
        "1 new file, model drift found; no retrained model did better on the newest rows, "
        f"kept the deployed model; release {A} live"
    )


def test_how_the_live_release_went_live() -> None:
    first = run(outcome=Outcome.FIRST_DEPLOYED, deployed={"release_id": A})
    found = compute(
        runs=[first],
        deployments=[deployment("deploy", A, EARLIER, By.RUN)],
        deployed_by_run=first,
    )
    assert found.live is not None and found.live.how == state.HowLive.FIRST
    found = compute(deployments=[deployment("deploy", A, EARLIER, By.HAND)])
    assert found.live is not None and found.live.how == state.HowLive.BY_HAND
    assert state.verdict(found).headline == f"release {A} deployed by hand"
    # An older history does not say who deployed: a run's record tells.
    found = compute(
        runs=[REDEPLOYED],
        live={"id": B},
        deployments=[deployment("deploy", B, EARLIER, None)],
        deployed_by_run=REDEPLOYED,
    )
    assert found.live is not None and found.live.how == state.HowLive.RETRAINED


@pytest.mark.parametrize("size", [0, 1, 50, 5_000, 500_000])
def test_the_outcome_line_is_bounded_whatever_the_input(size: int) -> None:
    flood = run(
        outcome=Outcome.FAILED,
        step="ingestion\n" * size,
        problem="\x00bad\r\n" * size,
        new_files=[f"f{i}.csv" for i in range(size)],
    )
    said = state.verdict(compute(runs=[flood]))
    line = state.outcome_line(said, runs.run_words(flood), 1)
    assert len(line) <= state.LINE_CHARS
    assert line.startswith("CRITICAL: failed at ")
    assert line.endswith("; exit 1") and "\n" not in line and "\x00" not in line
    assert "action: " in line


def test_the_outcome_line_says_what_the_run_did_then_the_verdict() -> None:
    stale = run(test_data_checked=True, test_data_stale="x")
    said = state.verdict(compute(runs=[stale], last_test_check=stale))
    line = state.outcome_line(said, "no new data", 0)
    assert line.startswith(
        f"WARNING: no new data; the test data no longer represents the clients; release {A} live; "
        "action: "
    )
    assert line.endswith("; exit 0") and len(line) <= state.LINE_CHARS


def test_metrics_say_the_verdict_and_the_live_release_in_prometheus_text() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from drs import metrics

    found = compute(
        runs=[REDEPLOYED],
        live={"id": B, "deployed_at": EARLIER, "test_f1": 0.6, "expected_f1": 0.65},
        last_check=REDEPLOYED,
        last_ingestion={"rows_after": 1234, "rejected_json": "{}"},
    )
    body, content_type = metrics.exposition(found, state.verdict(found))
    assert content_type.startswith("text/plain; version=")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples[("drs_severity", ())] == 1.0  # notice
    assert samples[("drs_verdict", (("severity", "notice"),))] == 1.0
    assert samples[("drs_live_release_info", (("how", "not recorded"), ("release", B)))] == 1.0
    assert samples[("drs_live_release_age_seconds", ())] == 3600.0
    assert samples[("drs_f1", (("kind", "expected"),))] == 0.65
    assert samples[("drs_drift", (("check", "model"),))] == 1.0
    assert samples[("drs_last_run_outcome", (("outcome", "redeployed"),))] == 1.0
    assert samples[("drs_rows_ingested", ())] == 1234.0


def test_a_record_reads_back_as_written_with_its_figures_to_six_digits() -> None:
    written = RunRecord(
        outcome=Outcome.KEPT,
        id=7,
        started_at=EARLIER,
        finished_at=EARLIER,
        exit_code=0,
        new_files=["b.csv"],
        new_file_count=1,
        performance={"new_files": {"f1": 0.7254321987654321, "rows": 300}},
        data_drift={"features": {"a": {"value": 0.123456789, "drifted": True}}, "edges": [1 / 3]},
        timings={"ingestion.py": 0.0123456789},
    )
    detail = written.to_json()
    assert detail["performance"] == {"new_files": {"f1": 0.725432, "rows": 300}}
    assert detail["data_drift"]["edges"] == [0.333333]
    assert detail["timings"] == {"ingestion.py": 0.0123457}
    row = {
        "id": 7,
        "started_at": EARLIER,
        "finished_at": EARLIER,
        "outcome": Outcome.KEPT.value,
        "exit_code": 0,
        "release_id": None,
        "detail_json": json.dumps(detail),
    }
    read = RunRecord.from_row(row)
    assert read.performance == detail["performance"]
    assert (read.outcome, read.new_files, read.decision) == (Outcome.KEPT, ["b.csv"], Outcome.KEPT)
    assert len(json.dumps(detail)) < len(json.dumps(written._asdict(), default=str))
