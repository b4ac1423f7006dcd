"""How a fullprocess.py run accounts for itself: what it found and did, and how it ends.

The steps note what they find on a Run; Run.finish alone decides the outcome and the
exit status, records the run in the history, owes an alert when the verdict is news,
and gives the outcome line (the last line of every run's log). Standard library only:
the cron tick with no new data finishes a Run too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import alerts, inputs, releasefolder, runs, state
from drs.cli import describe_error
from drs.clock import utc_now
from drs.errors import PipelineError
from drs.files import NAMES_SHOWN, first_names, some_names
from drs.history import open_history
from drs.runs import Outcome, Severity, Verdict

if TYPE_CHECKING:
    from drs import drift
    from drs.config import Config
    from drs.history import History

# The run speaks as the script cron runs: its outcome line is "... fullprocess: ..." in the log.
logger = logging.getLogger("fullprocess")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FAILED_AFTER_DEPLOYMENT = 2

# The stat index's key for the files the state hashes (the live release's, the test data).
STATE_FILES_KEY = "files the state checks"
# Steps of a run, as its record and its outcome line name them.
REPORTING = "reporting"


class Finished(NamedTuple):
    """A finished run's exit status and outcome line, said last (after the alert is sent)."""

    code: int
    line: str
    severity: Severity

    def say(self) -> int:
        """Log the outcome line and print it (stdout's last line); the exit status."""
        (logger.error if self.severity == Severity.CRITICAL else logger.info)("%s", self.line)
        print(self.line)
        return self.code


class Run:
    """What one run found and did: its history record, its outcome line, its alert.

    The steps note what they find here; finish() alone decides the outcome and the
    exit status, records them and says them. record() is the run as the history keeps
    it (drs.runs.RunRecord).
    """

    def __init__(
        self,
        config: Config | None,
        history: History | None = None,
        record_now: bool = True,
    ) -> None:
        """record_now False: a run that records itself only when that says something."""
        self.config = config
        self.history = history
        self.clock = time.monotonic()
        self.started_at = utc_now()
        self.id: int | None = None
        self.step = "start"
        self.new_files: list[str] = []
        self.rejected: dict[str, str] = {}
        self.release_before: dict[str, Any] | None = None
        self.model_drift: drift.DriftVerdict | None = None
        self.exits_drift: drift.DriftVerdict | None = None
        self.data_drift: dict[str, Any] | None = None
        self.data_drift_skipped: str | None = None
        self.deployed: dict[str, Any] | None = None
        self.staged: dict[str, Any] | None = None
        self.performance: dict[str, Any] | None = None
        self.retraining: dict[str, Any] | None = None
        self.test_data_checked = False
        self.test_data_stale: str | None = None
        self.test_data_sha256: str | None = None
        self.reports: list[str] = []
        self.timings: dict[str, float] = {}
        self.problem: str | None = None
        self.failed_after_deployment = False
        self.about_run: int | None = None
        self.kept = False  # the run checked the new data and kept the deployed model
        self.done = False  # finish() has been called
        self.finished_as: Outcome | None = None
        if history is not None and record_now:
            self.id = runs.insert(history, self.record()).id

    def note_release(self, release_id: str) -> None:
        """Recorded before the release goes live, so no kill hides what this run deployed."""
        self.deployed = {"release_id": release_id}
        if self.history is not None and self.id is not None:
            runs.note_release(self.history, self.id, release_id)

    def save_progress(self) -> None:
        """Record what the run has decided so far: a run killed later still says what it did."""
        if self.history is not None and self.id is not None:
            runs.save(self.history, self.record())

    def fail(self, error: BaseException) -> None:
        """Note a failure of the current step; logged with a traceback when it is a bug."""
        if isinstance(error, KeyboardInterrupt):
            self.problem = "interrupted"
        elif isinstance(error, PipelineError | OSError):
            self.problem = describe_error(error)
        else:
            logger.exception("%s failed with an unexpected error", self.step)
            self.problem = f"unexpected error ({type(error).__name__}: {error}); see the log"
        deployed_id = (self.deployed or {}).get("release_id")
        if deployed_id is not None and self.config is not None:
            with contextlib.suppress(PipelineError, OSError):
                live = releasefolder.current_release(self.config.deployment_folder)
                self.failed_after_deployment = live is not None and live.id == deployed_id

    def decision(self) -> Outcome | None:
        """What the run decided about the model, if it got that far."""
        if self.staged is not None:
            return Outcome.STAGED
        if self.deployed is not None:
            return Outcome.REDEPLOYED if self.release_before else Outcome.FIRST_DEPLOYED
        return Outcome.KEPT if self.kept else None

    def outcome(self) -> Outcome:
        if self.problem is not None:
            return Outcome.FAILED
        if self.finished_as is not None:
            return self.finished_as
        if not self.done:
            return Outcome.RUNNING  # what it decided so far is in the record's decision
        return self.decision() or Outcome.RUNNING

    def exit_code(self) -> int:
        if self.problem is None:
            return EXIT_OK
        return EXIT_FAILED_AFTER_DEPLOYMENT if self.failed_after_deployment else EXIT_FAILED

    def record(self) -> runs.RunRecord:
        """The run as the history keeps it (finished or not)."""
        record = runs.RunRecord(
            outcome=self.outcome(),
            id=self.id,
            started_at=self.started_at,
            step=self.step,
            problem=self.problem,
            # Bounded whatever the number of files: the first few and the count.
            new_files=first_names(self.new_files),
            new_file_count=len(self.new_files),
            rejected=dict(list(self.rejected.items())[:NAMES_SHOWN]),
            rejected_count=len(self.rejected),
            release_before=self.release_before,
            deployed=self.deployed,
            staged=self.staged,
            model_drift=self.model_drift._asdict() if self.model_drift else None,
            exits_drift=self.exits_drift._asdict() if self.exits_drift else None,
            performance=self.performance,
            retraining=self.retraining,
            test_data_checked=self.test_data_checked,
            test_data_stale=self.test_data_stale,
            test_data_sha256=self.test_data_sha256,
            data_drift=self.data_drift,
            data_drift_skipped=self.data_drift_skipped,
            reports=self.reports,
            timings=self.timings,
            duration_s=round(time.monotonic() - self.clock, 3),
            decision=self.decision(),
            failed_after_deployment=self.failed_after_deployment,
            about_run=self.about_run,
        )
        return record

    def details(self) -> str:
        """What led to the outcome, for the log line before it: figures, reasons, counts."""
        parts = []
        if self.new_files:
            rejected = f", {len(self.rejected)} rejected" if self.rejected else ""
            parts.append(f"new data: {some_names(self.new_files)}{rejected}")
        for name, reason in list(self.rejected.items())[:3]:
            parts.append(f"rejected {name}: {reason}")
        if self.model_drift is not None:
            found = "model drift found" if self.model_drift.drifted else "no model drift"
            parts.append(f"{found} ({self.model_drift.reason})")
        if self.exits_drift is not None and self.exits_drift.drifted:
            parts.append(f"attrition changed ({self.exits_drift.reason})")
        if self.retraining is not None:
            parts.append(f"retraining: {self.retraining['reason']}")
        new = self.deployed or self.staged
        if new and "f1" in new:
            before = (self.release_before or {}).get("f1")
            expected = new.get("expected_f1")
            hoped = f", expected {expected:.4f} cross-validated" if expected else ""
            live = f"; the replaced model's {before:.4f}" if before is not None else ""
            what = "staged" if self.staged is not None else "new"
            parts.append(f"test F1 of the {what} model {new['f1']:.4f}{hoped}{live}")
        if self.test_data_stale is not None:
            parts.append(f"test data stale: {self.test_data_stale}")
        if self.data_drift is not None:
            from drs import drift  # here: only a run that measured data drift has any

            parts.append(drift.describe_feature_drift(self.data_drift["features"]))
        elif self.data_drift_skipped:
            parts.append(f"data drift not measured ({self.data_drift_skipped})")
        if self.reports:
            parts.append(f"reports: {', '.join(Path(p).name for p in self.reports)}")
        parts.append(f"{time.monotonic() - self.clock:.1f} s")
        return "; ".join(parts)

    def finish(self, said: str | None = None, outcome: Outcome | None = None) -> Finished:
        """Record the run, owe an alert when the verdict is news; its outcome line and status.

        said: what the run did when it decided nothing (no new data, reports caught up);
        outcome: its outcome then. Neither a history that cannot be written nor anything
        else hides the outcome line: the line says so instead.
        """
        self.finished_as, self.done = outcome, True
        code = self.exit_code()
        logger.info("details: %s", self.details())
        record = self.record()._replace(finished_at=utc_now(), exit_code=code)
        problem = None
        verdict = None
        try:
            if self.history is not None and self._worth_recording(record):
                record = runs.save(self.history, record)
                self.id = record.id
            if self.config is not None and (self.history is not None or self.problem is None):
                verdict = state.verdict(self._read_state())
        except (PipelineError, OSError) as error:
            problem = describe_error(error)
        if verdict is None and record.outcome == Outcome.SKIPPED:
            verdict = _busy_verdict(said or "skipped")
        elif verdict is None:
            verdict = _unknown_verdict(record, problem)
        elif record.outcome == Outcome.FAILED and record.id is None:
            verdict = _failure_verdict(record, verdict)
        words = said or (runs.run_words(record) if record.outcome != Outcome.RUNNING else None)
        line = state.outcome_line(verdict, words, code)
        if problem is not None:
            logger.error("not recorded in the run history: %s", problem)
        elif self.history is not None and self.config is not None:
            self._owe_alert(record, verdict, line)
        return Finished(code, line, verdict.severity)

    def _read_state(self) -> state.State:
        """The state now; the live release and the test data hashed only when their stat changed.

        A tick with no new data then reads no file whole, and never imports hashlib.
        """
        assert self.config is not None
        if self.history is None:
            return state.read(self.config)
        hashes = inputs.IndexedSha256(self.history, STATE_FILES_KEY)
        return state.read(self.config, opened=self.history, sha256=hashes)

    def _worth_recording(self, record: runs.RunRecord) -> bool:
        """A run that did something is recorded; a quiet tick only when it closes a problem."""
        if self.id is not None or record.outcome != Outcome.NO_NEW_DATA or self.problem:
            return True
        assert self.history is not None
        previous = runs.latest(self.history, 1)
        return bool(previous) and previous[-1].outcome in (Outcome.FAILED, Outcome.INTERRUPTED)

    def drift_findings(self) -> list[drift.DriftVerdict | None]:
        return [self.model_drift, self.exits_drift]

    def _owe_alert(self, record: runs.RunRecord, verdict: Verdict, line: str) -> None:
        assert self.history is not None and self.config is not None
        if record.id is not None:
            said = record._replace(severity=verdict.severity, headline=verdict.headline, line=line)
            runs.save(self.history, said)
        if self.config.alert_command is None:
            return
        report = next((p for p in self.reports if p.endswith(".pdf")), None)
        try:
            alerts.consider(self.history, verdict, line, report)
        except (PipelineError, OSError) as error:
            logger.warning("alert not recorded: %s", describe_error(error))


def _busy_verdict(said: str) -> Verdict:
    """A tick that found another run working: nothing to do, whatever the history said.

    The running one may hold the history while it writes; that is no reason to alarm.
    """
    return Verdict(
        severity=Severity.OK,
        headline=said,
        action=None,
        details=(),
        release_id=None,
        key="skipped",
    )


def _unknown_verdict(record: runs.RunRecord, problem: str | None) -> Verdict:
    """The verdict when the state cannot be read (no config, no history): critical."""
    if problem is not None:
        headline = f"state unknown: {problem}"
    elif record.outcome == Outcome.FAILED:
        headline = runs.run_words(record)
    else:
        headline = "state unknown"
    return Verdict(
        severity=Severity.CRITICAL,
        headline=headline,
        action="Fix the cause named here; the next cron run retries by itself.",
        details=(),
        release_id=None,
        key=f"unknown|{record.step}",
    )


def _failure_verdict(record: runs.RunRecord, known: Verdict) -> Verdict:
    """The verdict for a failure the history could not take: critical, the failure first."""
    return known._replace(
        severity=Severity.CRITICAL,
        headline=runs.run_words(record),
        action="Fix the cause named here; the next cron run retries by itself.",
        key=f"{Severity.CRITICAL.value}|unrecorded|{record.step}",
    )


def deliver_alerts(config: Config) -> None:
    """Send an owed alert, if any is due; outside the pipeline lock (the command may be slow)."""
    if config.alert_command is None:
        return
    try:
        with open_history(config) as history:
            alerts.deliver(config, history)
    except (PipelineError, OSError) as error:
        logger.warning("alerts not sent: %s", describe_error(error))


def owed_reports(history: History) -> runs.RunRecord | None:
    """The run whose reports are owed: it decided, then was killed or failed after deciding.

    Whatever it decided (a deployment, a staged model, the model kept), its reports
    are written by the next run; a catch-up that wrote them settles the debt.
    """
    recent = runs.latest(history, state.RUNS_LOOKED_AT)
    decided = [
        r
        for r in recent
        if r.decision is not None
        and (
            r.outcome == Outcome.INTERRUPTED
            or (r.outcome == Outcome.FAILED and (r.step == REPORTING or r.failed_after_deployment))
        )
    ]
    if not decided:
        return None
    owed = decided[-1]
    later = [r for r in recent if (r.id or 0) > (owed.id or 0)]
    settled = any(
        r.about_run == owed.id and r.outcome == Outcome.REPORTS_CAUGHT_UP for r in later
    ) or any(r.decision is not None and r.finished for r in later)
    return None if settled else owed
