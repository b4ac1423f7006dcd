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
import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import alerts, history, releases
from drs.cli import describe_error
from drs.clock import parse_stamp
from drs.errors import PipelineError
from drs.files import file_sha256
from drs.releases import GO_LIVE, Action, By
from drs.runs import Outcome, RunRecord, Severity, Verdict

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


def clean(text: Any, limit: int | None = None, middle: bool = False) -> str:
    """One printable line (control characters and runs of space folded), cut to limit.

    middle: cut in the middle, keeping the start and the end (a path, then the reason).
    """
    said = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in str(text))).strip()
    if limit is not None and len(said) > limit:
        if middle and limit > 20:
            tail = (limit - 3) * 3 // 5
            said = said[: limit - 3 - tail].rstrip() + "..." + said[-tail:].lstrip()
        else:
            said = said[: max(limit - 3, 0)].rstrip() + "..."
    return said


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def run_words(record: RunRecord) -> str:
    """What a run did, in the plain words its outcome line and the verdict use; no lists."""
    if record.outcome == Outcome.FAILED:
        problem = clean(record.problem or "?", 240, middle=True)
        return f"failed at {record.step or 'an unknown step'}: {problem}"
    return decision_words(record)


def decision_words(record: RunRecord) -> str:
    """What a run decided about the model (or its outcome, when it decided nothing)."""
    before = (record.release_before or {}).get("release_id")
    decision = record.decision or record.outcome
    new = max(record.new_file_count, len(record.new_files))
    rejected = max(record.rejected_count, len(record.rejected))
    data = _plural(new, "new file") + (f" ({rejected} rejected)" if rejected else "")
    drift = "model drift found" if record.drifted else "no model drift"
    after = (record.deployed or {}).get("release_id")
    kept = (
        f"{data}, {drift}; kept the deployed model"
        if record.model_drift is not None
        else f"{data}, nothing ingested to check; kept the deployed model"
    )
    words = {
        Outcome.FIRST_DEPLOYED: f"first model deployed: release {after}",
        Outcome.REDEPLOYED: f"{drift}, retrained and redeployed: release {after} replaces {before}",
        Outcome.STAGED: f"{drift}, retrained and staged release "
        f"{(record.staged or {}).get('release_id')}; {before} stays live",
        Outcome.KEPT: kept,
    }
    return words.get(decision, record.outcome.value)


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
        live_release = releases.current_release(config.deployment_folder)
        if live_release is not None:
            releases.verify_release(live_release, sha256)
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
    live_id = live_state.release_id if live_state else None
    conditions: list[Open] = []
    if damage is not None:
        conditions.append(
            Open(
                Condition.DEPLOYMENT_DAMAGED,
                f"deployment damaged: {clean(damage, 80)}",
                clean(damage),
                "Run deployment.py --rollback: it makes the newest intact release live.",
            )
        )
    elif live_state is None:
        conditions.append(
            Open(
                Condition.NOTHING_DEPLOYED,
                Condition.NOTHING_DEPLOYED.value,
                "No model is deployed yet, so the API cannot answer for clients.",
                "Run fullprocess.py (or install the cron job): it trains and deploys the first "
                "model.",
            )
        )
    finished = [r for r in runs if r.finished]
    if owed_alert is not None and owed_alert.get("attempts", 0) > 0:
        conditions.append(
            Open(
                Condition.ALERTS_UNDELIVERED,
                f"alerts not delivered: {clean(owed_alert.get('last_error') or '?', 70)}",
                f"The alert command failed {_plural(owed_alert['attempts'], 'time')}, last: "
                f"{clean(owed_alert.get('last_error') or '?', 300)}.",
                "Fix the alert command (config key alert_command); the owed alert is sent "
                "again with back-off.",
                owed_alert.get("created_at"),
            )
        )
    newest = runs[-1] if runs else None
    last_done = finished[-1] if finished else None
    if last_done is not None and last_done.outcome == Outcome.FAILED:
        kept = f"release {live_id} is live" if live_id else "no model is deployed"
        conditions.append(
            Open(
                Condition.RUN_FAILED,
                run_words(last_done),
                f"The last automated run failed at {last_done.step}: "
                f"{clean(last_done.problem or '?', 300)}; {kept}.",
                "Fix the cause named in the details; the next cron run retries by itself.",
                last_done.finished_at,
            )
        )
    interrupted = [r for r in runs if r.outcome == Outcome.INTERRUPTED]
    if interrupted and (last_done is None or (interrupted[-1].id or 0) > (last_done.id or 0)):
        run = interrupted[-1]
        conditions.append(
            Open(
                Condition.RUN_INTERRUPTED,
                f"last run interrupted at {run.step or 'an unknown step'}",
                f"The run started at {run.started_at} was stopped at "
                f"{run.step or 'an unknown step'} before it finished.",
                "None if it was stopped on purpose: the next run finishes its work (reports "
                "included). If runs keep stopping, look at the log.",
                run.started_at,
            )
        )
    rejected = _rejected(last_ingestion)
    if rejected:
        names = ", ".join(clean(name, 40) for name in list(rejected)[:3])
        more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
        first = next(iter(rejected))
        conditions.append(
            Open(
                Condition.FILES_REJECTED,
                f"{_plural(len(rejected), 'file')} rejected at the last ingestion",
                f"Rejected at the last ingestion: {names}{more}. {clean(first, 40)}: "
                f"{clean(rejected[first], 200)}.",
                "Fix or remove the rejected files in the input folder; a fixed file is read "
                "again at the next run.",
                (last_ingestion or {}).get("started_at"),
            )
        )
    if last_test_check is not None and last_test_check.test_data_stale:
        changed = (
            last_test_check.test_data_sha256 is not None
            and last_test_check.test_data_sha256 != test_data_sha256()
        )
        if not changed:
            action = "Replace testdata.csv with a labelled sample of recent clients."
            if drift_test != "expected":
                action += (
                    " Meanwhile the drift_test 'expected' measures the model on the new files "
                    "instead."
                )
            conditions.append(
                Open(
                    Condition.TEST_DATA_STALE,
                    "the test data no longer represents the clients",
                    "The test data no longer represents the clients; drift checks against it "
                    f"are blind: {clean(last_test_check.test_data_stale, 300)}.",
                    action,
                    last_test_check.finished_at,
                )
            )
    if staged:
        waiting = staged[-1]
        conditions.append(
            Open(
                Condition.STAGED_WAITING,
                f"release {waiting} staged, waiting for promotion",
                f"{_plural(len(staged), 'staged release')} newer than the live one: "
                f"{', '.join(staged[-3:])}.",
                f"Check release {waiting}, then deployment.py --promote makes it live.",
            )
        )
    if (
        last_check is not None
        and last_check.drifted
        and last_check.decision == Outcome.KEPT
        and (last_check.release_before or {}).get("release_id") in (live_id, None)
    ):
        conditions.append(
            Open(
                Condition.DRIFT_UNRESOLVED,
                "model drift found, no better model; kept the deployed model",
                f"Model drift found ({clean((last_check.model_drift or {}).get('reason'), 200)}),"
                " and no model trained on the new data did better where it could be checked.",
                "Look at the newest files: the deployed model scores worse on them.",
                last_check.finished_at,
            )
        )
    conditions.sort(key=lambda c: -c.condition.severity.rank)
    return State(
        live=live_state,
        conditions=tuple(conditions),
        event=_event(live_state, runs, deployments),
        last_run=newest,
        last_check=last_check,
        figures=_figures(live_state, last_check),
        now=now,
        rows_ingested=(last_ingestion or {}).get("rows_after"),
    )


def _rejected(ingestion: dict[str, Any] | None) -> dict[str, str]:
    if not ingestion:
        return {}
    try:
        rejected = json.loads(ingestion.get("rejected_json") or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in rejected.items()} if isinstance(rejected, dict) else {}


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
