"""The conditions that stay open until resolved, each in words: what, in full, what to do.

drs.state finds which are open now from what it read; the verdict leads with the worst.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from drs.config import DriftTest
from drs.runs import Outcome, RunRecord, Severity, clean, plural, run_words

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Condition(StrEnum):
    """A condition that stays open until it is resolved; its value is its short name."""

    DEPLOYMENT_DAMAGED = "deployment damaged"
    RUN_FAILED = "last run failed"
    ALERTS_UNDELIVERED = "alerts not delivered"
    NOTHING_DEPLOYED = "no model deployed yet"
    RUN_INTERRUPTED = "last run interrupted"
    FILES_REJECTED = "files rejected"
    TEST_DATA_STALE = "test data stale"
    STAGED_WAITING = "staged release waiting"
    DRIFT_UNRESOLVED = "model drift, no better model"

    @property
    def severity(self) -> Severity:
        return _CONDITION_SEVERITY[self]


_CONDITION_SEVERITY = {
    Condition.DEPLOYMENT_DAMAGED: Severity.CRITICAL,
    Condition.RUN_FAILED: Severity.CRITICAL,
    Condition.ALERTS_UNDELIVERED: Severity.CRITICAL,
    Condition.NOTHING_DEPLOYED: Severity.WARNING,
    Condition.RUN_INTERRUPTED: Severity.WARNING,
    Condition.FILES_REJECTED: Severity.WARNING,
    Condition.TEST_DATA_STALE: Severity.WARNING,
    Condition.STAGED_WAITING: Severity.WARNING,
    Condition.DRIFT_UNRESOLVED: Severity.WARNING,
}


class Open(NamedTuple):
    """One open condition: what it is, in a short phrase and in full, and since when."""

    condition: Condition
    headline: str
    detail: str
    action: str
    since: str | None = None


def open_conditions(
    *,
    live_id: str | None,
    damage: str | None,
    staged: Sequence[str],
    runs: Sequence[RunRecord],
    last_check: RunRecord | None,
    last_test_check: RunRecord | None,
    last_ingestion: dict[str, Any] | None,
    owed_alert: dict[str, Any] | None,
    test_data_sha256: Callable[[], str | None],
    drift_test: str,
) -> tuple[Open, ...]:
    """Every condition open now, worst first (in the order below among equals)."""
    finished = [r for r in runs if r.finished]
    last_done = finished[-1] if finished else None
    found = (
        _deployment(damage, live_id),
        _alerts(owed_alert),
        _failed(last_done, live_id),
        _interrupted(runs, last_done),
        _rejected_files(last_ingestion),
        _stale_test_data(last_test_check, test_data_sha256, drift_test),
        _staged(staged),
        _drift_unresolved(last_check, live_id),
    )
    return tuple(
        sorted((c for c in found if c is not None), key=lambda c: -c.condition.severity.rank)
    )


def _deployment(damage: str | None, live_id: str | None) -> Open | None:
    if damage is not None:
        return Open(
            Condition.DEPLOYMENT_DAMAGED,
            f"deployment damaged: {clean(damage, 80)}",
            clean(damage),
            "Run deployment.py --rollback: it makes the newest intact release live.",
        )
    if live_id is None:
        return Open(
            Condition.NOTHING_DEPLOYED,
            Condition.NOTHING_DEPLOYED.value,
            "No model is deployed yet, so the API cannot answer for clients.",
            "Run fullprocess.py (or install the cron job): it trains and deploys the first model.",
        )
    return None


def _alerts(owed_alert: dict[str, Any] | None) -> Open | None:
    if owed_alert is None or owed_alert.get("attempts", 0) <= 0:
        return None
    return Open(
        Condition.ALERTS_UNDELIVERED,
        f"alerts not delivered: {clean(owed_alert.get('last_error') or '?', 70)}",
        f"The alert command failed {plural(owed_alert['attempts'], 'time')}, last: "
        f"{clean(owed_alert.get('last_error') or '?', 300)}.",
        "Fix the alert command (config key alert_command); the owed alert is sent "
        "again with back-off.",
        owed_alert.get("created_at"),
    )


def _failed(last_done: RunRecord | None, live_id: str | None) -> Open | None:
    if last_done is None or last_done.outcome != Outcome.FAILED:
        return None
    kept = f"release {live_id} is live" if live_id else "no model is deployed"
    return Open(
        Condition.RUN_FAILED,
        run_words(last_done),
        f"The last automated run failed at {last_done.step}: "
        f"{clean(last_done.problem or '?', 300)}; {kept}.",
        "Fix the cause named in the details; the next cron run retries by itself.",
        last_done.finished_at,
    )


def _interrupted(runs: Sequence[RunRecord], last_done: RunRecord | None) -> Open | None:
    interrupted = [r for r in runs if r.outcome == Outcome.INTERRUPTED]
    run = interrupted[-1] if interrupted else None
    if run is None or (last_done is not None and (run.id or 0) <= (last_done.id or 0)):
        return None
    return Open(
        Condition.RUN_INTERRUPTED,
        f"last run interrupted at {run.step or 'an unknown step'}",
        f"The run started at {run.started_at} was stopped at "
        f"{run.step or 'an unknown step'} before it finished.",
        "None if it was stopped on purpose: the next run finishes its work (reports "
        "included). If runs keep stopping, look at the log.",
        run.started_at,
    )


def _rejected_files(last_ingestion: dict[str, Any] | None) -> Open | None:
    rejected = _rejected(last_ingestion)
    if not rejected:
        return None
    names = ", ".join(clean(name, 40) for name in list(rejected)[:3])
    more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
    first = next(iter(rejected))
    return Open(
        Condition.FILES_REJECTED,
        f"{plural(len(rejected), 'file')} rejected at the last ingestion",
        f"Rejected at the last ingestion: {names}{more}. {clean(first, 40)}: "
        f"{clean(rejected[first], 200)}.",
        "Fix or remove the rejected files in the input folder; a fixed file is read "
        "again at the next run.",
        (last_ingestion or {}).get("started_at"),
    )


def _rejected(ingestion: dict[str, Any] | None) -> dict[str, str]:
    if not ingestion:
        return {}
    try:
        rejected = json.loads(ingestion.get("rejected_json") or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in rejected.items()} if isinstance(rejected, dict) else {}


def _stale_test_data(
    last_test_check: RunRecord | None,
    test_data_sha256: Callable[[], str | None],
    drift_test: str,
) -> Open | None:
    """Open while the test data the check found stale is still the same file."""
    if last_test_check is None or not last_test_check.test_data_stale:
        return None
    if (
        last_test_check.test_data_sha256 is not None
        and last_test_check.test_data_sha256 != test_data_sha256()
    ):
        return None
    action = "Replace testdata.csv with a labelled sample of recent clients."
    if drift_test != DriftTest.EXPECTED:
        action += (
            f" Meanwhile the drift_test '{DriftTest.EXPECTED}' measures the model on the new "
            "files instead."
        )
    return Open(
        Condition.TEST_DATA_STALE,
        "the test data no longer represents the clients",
        "The test data no longer represents the clients; drift checks against it "
        f"are blind: {clean(last_test_check.test_data_stale, 300)}.",
        action,
        last_test_check.finished_at,
    )


def _staged(staged: Sequence[str]) -> Open | None:
    if not staged:
        return None
    waiting = staged[-1]
    return Open(
        Condition.STAGED_WAITING,
        f"release {waiting} staged, waiting for promotion",
        f"{plural(len(staged), 'staged release')} newer than the live one: "
        f"{', '.join(staged[-3:])}.",
        f"Check release {waiting}, then deployment.py --promote makes it live.",
    )


def _drift_unresolved(last_check: RunRecord | None, live_id: str | None) -> Open | None:
    if last_check is None:
        return None
    found = last_check.drift_on_new_rows()
    if not (
        found is not None
        and last_check.decision == Outcome.KEPT
        and (last_check.release_before or {}).get("release_id") in (live_id, None)
    ):
        return None
    return Open(
        Condition.DRIFT_UNRESOLVED,
        "model drift found, no better model; kept the deployed model",
        f"Model drift found ({clean(found.get('reason'), 200)}),"
        " and no model trained on the new data did better where it could be checked.",
        "Look at the newest files: the deployed model scores worse on them.",
        last_check.finished_at,
    )
