"""The system's state, computed from what is true now, and the one verdict every surface shows.

The state comes from the deployment (`current` and its releases), the run history and
the test data: the live release and how it went live, the latest result of each check,
and the conditions that stay open until resolved. The verdict (a severity, a plain
headline, the action, the details) is computed from the state alone, so the outcome
line, the alert, the report, the page, /health and /metrics never disagree, and a
rollback or promotion by hand shows everywhere at once.

    verdict = drs.state.verdict(drs.state.read(config))
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import alerts, history, releasefolder, releases
from drs.cli import describe_error
from drs.clock import parse_stamp
from drs.conditions import Open, open_conditions
from drs.errors import PipelineError
from drs.files import file_sha256
from drs.releases import GO_LIVE, Action, By
from drs.runs import Outcome, RunRecord, Severity, Verdict, clean, decision_words

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from drs.config import Config

# A change that was handled (new data, a model kept or deployed) is news for this long;
# after it, with nothing open, the verdict is ok.
NOTICE_FOR = timedelta(hours=24)
# Runs looked at for the latest failure, interruption or decision (newest first).
RUNS_LOOKED_AT = 20
# The outcome line's bound, whatever the input.
LINE_CHARS = 200


class HowLive(StrEnum):
    """How the live release went live."""

    FIRST = "first deployment"
    RETRAINED = "retrained after model drift"
    BY_HAND = "deployed by hand"
    PROMOTED = "promoted by hand"
    ROLLED_BACK = "rolled back by hand"
    UNKNOWN = "not recorded"


class Live(NamedTuple):
    """The live release: its identity, when and how it went live, its figures."""

    release_id: str
    went_live_at: str | None
    how: HowLive
    replaced: str | None = None  # the release live before it, when known
    test_f1: float | None = None
    expected_f1: float | None = None


class Event(NamedTuple):
    """The latest change: a run's decision about the model, or a deployment by hand."""

    headline: str
    at: str | None
    release_id: str | None = None


class Deployment(NamedTuple):
    """A row of the history's deployments table, as the state needs it."""

    recorded_at: str
    release_id: str
    action: str
    made_by: str | None = None


class State(NamedTuple):
    """What is true now; verdict() turns it into words."""

    live: Live | None
    conditions: tuple[Open, ...]
    event: Event | None
    last_run: RunRecord | None
    last_check: RunRecord | None  # the newest run that checked the model for drift
    figures: dict[str, float | None]
    now: datetime
    rows_ingested: int | None = None


def read(
    config: Config,
    pending: RunRecord | None = None,
    now: datetime | None = None,
    opened: history.History | None = None,
    sha256: Callable[[Path], str] = file_sha256,
) -> State:
    """The state now, from config's deployment, history and test data.

    pending: the record of the run that is writing a report, counted as finished with
    what it has done so far (a report is written before its run is recorded).
    opened: the history, when the caller has it open.
    sha256: how the live release's files and the test data are hashed.
    """
    live_release, damage = None, None
    try:
        live_release = releasefolder.current_release(config.deployment_folder)
        if live_release is not None:
            releasefolder.verify_release(live_release, sha256)
    except (PipelineError, OSError) as error:
        damage = describe_error(error)
    staged = []
    with contextlib.suppress(PipelineError, OSError):
        staged = [release.id for release in releases.promotable(config.deployment_folder)]
    with contextlib.ExitStack() as stack:
        if opened is None:
            opened = stack.enter_context(history.open_history(config))
        inputs = _gather(opened, live_release.id if live_release else None)
        owed = alerts.undelivered(opened)
    if pending is not None:
        inputs["runs"] = [r for r in inputs["runs"] if r.id != pending.id] + [pending]
        if pending.model_drift is not None:
            inputs["last_check"] = pending
    live_facts = None
    if live_release is not None:
        live_facts = _release_facts(live_release)

    def test_data_sha256() -> str | None:
        try:
            return sha256(config.test_data_path)
        except OSError:
            return None

    return compute(
        live=live_facts,
        damage=damage,
        staged=staged,
        runs=inputs["runs"],
        last_check=inputs["last_check"],
        last_test_check=inputs["last_test_check"],
        deployments=inputs["deployments"],
        deployed_by_run=inputs["deployed_by_run"],
        last_ingestion=inputs["last_ingestion"],
        owed_alert=owed,
        test_data_sha256=test_data_sha256,
        drift_test=config.drift_test,
        now=now or datetime.now(UTC),
    )


def _release_facts(release: Any) -> dict[str, Any]:
    """id, deployed_at, test F1 and expected F1 of a release (None where unreadable)."""
    facts: dict[str, Any] = {"id": release.id, "deployed_at": release.manifest.get("deployed_at")}
    try:
        facts["test_f1"] = release.score()
    except Exception:
        facts["test_f1"] = None
    try:
        expected = release.model_card().get("expected")
        facts["expected_f1"] = expected.get("f1") if isinstance(expected, dict) else None
    except Exception:
        facts["expected_f1"] = None
    return facts


def _gather(opened: history.History, live_id: str | None) -> dict[str, Any]:
    """The history's part of the state: bounded reads, whatever the history's length."""
    from drs import runs

    recent = runs.latest(opened, RUNS_LOOKED_AT)
    last_check = next((r for r in reversed(recent) if r.model_drift is not None), None)
    if last_check is None:
        last_check = runs.latest_where(opened, "detail_json LIKE '%\"drifted\"%'")
    last_test_check = next((r for r in reversed(recent) if r.test_data_checked), None)
    if last_test_check is None:
        last_test_check = runs.latest_where(opened, 'detail_json LIKE \'%"test_data_stale": "%\'')
    rows = opened.rows(
        "SELECT recorded_at, release_id, action, made_by FROM deployments ORDER BY id DESC LIMIT ?",
        (RUNS_LOOKED_AT,),
    )
    deployments = [Deployment(**row) for row in reversed(rows)]
    deployed_by_run = None
    if live_id is not None:
        deployed_by_run = runs.latest_where(opened, "release_id = ?", (live_id,))
    ingestion = opened.rows(
        "SELECT started_at, rejected_json, rows_after FROM ingestion_runs ORDER BY id DESC LIMIT 1"
    )
    return {
        "runs": recent,
        "last_check": last_check,
        "last_test_check": last_test_check,
        "deployments": deployments,
        "deployed_by_run": deployed_by_run,
        "last_ingestion": ingestion[0] if ingestion else None,
    }


def compute(
    *,
    live: dict[str, Any] | None,
    damage: str | None,
    staged: Sequence[str],
    runs: Sequence[RunRecord],
    last_check: RunRecord | None,
    last_test_check: RunRecord | None,
    deployments: Sequence[Deployment],
    deployed_by_run: RunRecord | None,
    last_ingestion: dict[str, Any] | None,
    owed_alert: dict[str, Any] | None,
    test_data_sha256: Callable[[], str | None],
    drift_test: str,
    now: datetime,
) -> State:
    """The state from its inputs (no reading here): conditions, the live release, the event."""
    live_state = _live(live, deployments, deployed_by_run)
    conditions = open_conditions(
        live_id=live_state.release_id if live_state else None,
        damage=damage,
        staged=staged,
        runs=runs,
        last_check=last_check,
        last_test_check=last_test_check,
        last_ingestion=last_ingestion,
        owed_alert=owed_alert,
        test_data_sha256=test_data_sha256,
        drift_test=drift_test,
    )
    return State(
        live=live_state,
        conditions=conditions,
        event=_event(live_state, runs, deployments),
        last_run=runs[-1] if runs else None,
        last_check=last_check,
        figures=_figures(live_state, last_check),
        now=now,
        rows_ingested=(last_ingestion or {}).get("rows_after"),
    )


def _live(
    live: dict[str, Any] | None,
    deployments: Sequence[Deployment],
    deployed_by_run: RunRecord | None,
) -> Live | None:
    """The live release and how it went live: its newest go-live in the deployments table."""
    if live is None:
        return None
    release_id = live["id"]
    went, replaced, previous = None, None, None
    for row in deployments:
        if row.action in GO_LIVE:
            if row.release_id == release_id:
                went, replaced = row, previous
            previous = row.release_id
    how = _how(went, replaced, deployed_by_run)
    if replaced == release_id:
        replaced = None
    return Live(
        release_id=release_id,
        went_live_at=live.get("deployed_at") if isinstance(live.get("deployed_at"), str) else None,
        how=how,
        replaced=replaced,
        test_f1=_number(live.get("test_f1")),
        expected_f1=_number(live.get("expected_f1")),
    )


def _how(
    went: Deployment | None, replaced: str | None, deployed_by_run: RunRecord | None
) -> HowLive:
    """How a release went live: its go-live row, the release before it, the run that made it."""
    if went is None:
        made = deployed_by_run
        return HowLive.UNKNOWN if made is None else _how_made(made)
    by_action = {Action.ROLLBACK: HowLive.ROLLED_BACK, Action.PROMOTE: HowLive.PROMOTED}
    if went.action in by_action:
        return by_action[Action(went.action)]
    if went.made_by == By.HAND or (went.made_by is None and deployed_by_run is None):
        return HowLive.BY_HAND
    if replaced is None and not (deployed_by_run and deployed_by_run.release_before):
        return HowLive.FIRST
    return HowLive.RETRAINED


def _how_made(run: RunRecord) -> HowLive:
    return HowLive.RETRAINED if run.release_before else HowLive.FIRST


class GoLive(NamedTuple):
    """One time a release went live: when, which, how, and the release it replaced."""

    at: str
    release_id: str
    how: HowLive
    replaced: str | None


# Go-lives deployment.py --list reads back, at most.
GO_LIVES_LISTED = 200


def go_lives(config: Config) -> list[GoLive]:
    """Each time a release went live, oldest first (the newest GO_LIVES_LISTED)."""
    from drs import runs

    with history.open_history(config) as opened:
        rows = opened.rows(
            "SELECT recorded_at, release_id, action, made_by FROM deployments "
            "WHERE action IN (?, ?, ?) ORDER BY id DESC LIMIT ?",
            (*GO_LIVE, GO_LIVES_LISTED),
        )
        made = {
            row.release_id: runs.latest_where(opened, "release_id = ?", (row.release_id,))
            for row in (Deployment(**r) for r in rows)
        }
    found, previous = [], None
    for row in (Deployment(**r) for r in reversed(rows)):
        how = _how(row, previous, made.get(row.release_id))
        found.append(GoLive(row.recorded_at, row.release_id, how, previous))
        previous = row.release_id
    return found


def describe_go_lives(went: Sequence[GoLive], shown: int = 10) -> str:
    """The newest go-lives, newest first, one a line: when, which release, how, replacing what."""
    lines = [f"went live (newest {min(shown, len(went))} of {len(went)}, UTC):"]
    for each in reversed(went[-shown:]):
        replacing = f", replacing {each.replaced}" if each.replaced else ""
        lines.append(
            f"  {each.at[:19].replace('T', ' ')}  {each.release_id}  {each.how.value}{replacing}"
        )
    return "\n".join(lines)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _event(
    live: Live | None, runs: Sequence[RunRecord], deployments: Sequence[Deployment]
) -> Event | None:
    """The latest change: a hand deployment newer than the last decided run, else that run."""
    decided = [
        r
        for r in runs
        if r.decision is not None and (r.outcome != Outcome.FAILED or r.failed_after_deployment)
    ]
    run = decided[-1] if decided else None
    run_at = (run.finished_at or run.started_at) if run else None
    by_hand = [d for d in deployments if d.action in GO_LIVE and d.made_by != By.RUN]
    hand = by_hand[-1] if by_hand else None
    if (
        hand is not None
        and hand.action == Action.DEPLOY
        and hand.made_by is None
        and run is not None
        and (run.deployed or {}).get("release_id") == hand.release_id
    ):
        hand = None  # older histories do not say who deployed: the run's release is its own
    if (
        hand is not None
        and (run_at is None or hand.recorded_at > run_at)
        and live is not None
        and hand.release_id == live.release_id
    ):
        replaced = f", replacing {live.replaced}" if live.replaced else ""
        said: dict[str, str] = {
            Action.ROLLBACK.value: f"rolled back by hand to release {hand.release_id}"
            + (f" (from {live.replaced})" if live.replaced else ""),
            Action.PROMOTE.value: f"release {hand.release_id} promoted by hand{replaced}",
        }
        words = said.get(hand.action, f"release {hand.release_id} deployed by hand{replaced}")
        return Event(words, hand.recorded_at, hand.release_id)
    if run is not None:
        return Event(
            decision_words(run), run_at, (run.deployed or run.staged or {}).get("release_id")
        )
    return None


def _figures(live: Live | None, check: RunRecord | None) -> dict[str, float | None]:
    """Key F1 figures: the live release's on the test data and expected, the last check's."""
    performance = (check.performance or {}) if check else {}

    def f1(part: str) -> float | None:
        found = performance.get(part)
        return _number(found.get("f1")) if isinstance(found, dict) else None

    same = check is not None and (check.release_before or {}).get("release_id") == (
        live.release_id if live else None
    )
    return {
        "test": live.test_f1 if live else None,
        "expected": live.expected_f1 if live else None,
        "new_data": f1("new_files") if same else None,
        "estimated": f1("estimated") if same else None,
    }


def verdict(state: State) -> Verdict:
    """The severity, headline, action and details that every surface shows."""
    live = state.live
    live_words = f"release {live.release_id} live" if live else None
    details = [c.detail for c in state.conditions]
    if live is not None:
        when = f" at {_when(live.went_live_at)}" if live.went_live_at else ""
        details.append(f"Release {live.release_id} went live{when}: {live.how.value}.")
    if state.event is not None:
        details.append(f"Latest change ({_when(state.event.at)}): {state.event.headline}.")
    if state.conditions:
        worst = state.conditions[0]
        severity = worst.condition.severity
        headline = worst.headline
        if len(state.conditions) > 1:
            others = ", ".join(c.condition.value for c in state.conditions[1:3])
            more = len(state.conditions) - 3
            headline += f" (also: {others}{f' and {more} more' if more > 0 else ''})"
        action: str | None = worst.action
        key_parts = [c.condition.value for c in state.conditions]
    else:
        event = state.event
        recent = event is not None and _age(event.at, state.now) < NOTICE_FOR
        severity = Severity.NOTICE if recent else Severity.OK
        if event is None:
            headline = "no automated check yet"
            action = "Install the cron job or run fullprocess.py: it checks new data as it arrives."
            severity = Severity.NOTICE
        elif recent:
            headline = event.headline
            action = None
        else:
            headline = f"all well; last change {_when(event.at)}: {clean(event.headline, 80)}"
            action = None
        key_parts = [severity.value] + ([event.headline] if event and recent else [])
    if live_words and (live is None or live.release_id not in headline):
        headline += f"; {live_words}"
    went_live = None
    if live is not None:
        went_live = f"{_when(live.went_live_at)}, {live.how.value}"
    return Verdict(
        severity=severity,
        headline=clean(headline),
        action=action,
        details=tuple(clean(d) for d in details),
        release_id=live.release_id if live else None,
        key="|".join([severity.value, live.release_id if live else "-", *key_parts]),
        went_live=went_live,
        figures=dict(state.figures),
        open=tuple(c.condition.value for c in state.conditions),
    )


def _age(stamp: str | None, now: datetime) -> timedelta:

    when = parse_stamp(stamp)
    return now - when if when else timedelta.max


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else "an unknown time"


def outcome_line(verdict: Verdict, said: str | None, exit_code: int) -> str:
    """The run's last log line: severity, what happened, the verdict, the action, the exit code.

    At most LINE_CHARS characters whatever the input: the action and the verdict's
    headline are shortened first, then what the run did, each down to a floor. The live
    release is named once, and never cut.
    """
    head = f"{verdict.severity.value.upper()}: "
    tail = f"exit {exit_code}"
    headline = verdict.headline
    live = f"release {verdict.release_id} live" if verdict.release_id else None
    if live and headline.endswith(f"; {live}"):
        headline = headline.removesuffix(f"; {live}")
    parts: dict[str, str | None] = {
        "said": clean(said) if said else None,
        "headline": headline,
        "live": live,
        "action": f"action: {verdict.action}" if verdict.action else None,
    }
    if parts["said"] and headline.startswith(parts["said"].removesuffix("...")):
        parts["said"] = None  # the verdict says it already
    elif parts["said"] and parts["said"] == headline:
        parts["headline"] = None
    if (
        live
        and verdict.release_id
        and any(verdict.release_id in (parts[name] or "") for name in ("said", "headline"))
    ):
        parts["live"] = None
    shown = {name: part for name, part in parts.items() if part}
    budget = LINE_CHARS - len(head) - len(tail) - 2 * len(shown)
    first = next(iter(shown))  # what happened: cut last, in its middle (keeps the reason)
    steps = (("action", 60), ("headline", 60), ("headline", 40), ("action", 30), ("said", 60))
    for name, floor in steps:
        excess = sum(len(part) for part in shown.values()) - budget
        if excess > 0 and name in shown and name != first:
            shown[name] = clean(shown[name], max(len(shown[name]) - excess, floor))
    excess = sum(len(part) for part in shown.values()) - budget
    if excess > 0:
        shown[first] = clean(shown[first], len(shown[first]) - excess, middle=True)
    return (head + "; ".join([*shown.values(), tail]))[:LINE_CHARS]
