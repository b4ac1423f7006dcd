"""The record of one fullprocess.py run, read and written here only; the words it is told in.

Outcomes, severities and score purposes are spelled once, as enums: the history stores
their values, every reader compares with the members. A record is an immutable named tuple; its
JSON (pipeline_runs.detail_json) is read back tolerantly, so a damaged row loses its
damaged parts, never the run.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

    from drs.history import History


class Outcome(StrEnum):
    """What a run did, in the plain words the outcome line opens with."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    NO_NEW_DATA = "no new data"
    SKIPPED = "skipped"
    KEPT = "kept the deployed model"
    FIRST_DEPLOYED = "first model deployed"
    REDEPLOYED = "redeployed"
    STAGED = "retrained and staged"
    REPORTS_CAUGHT_UP = "reports caught up"
    FAILED = "failed"

    @classmethod
    def parse(cls, text: Any) -> tuple[Outcome, str | None]:
        """A recorded outcome and, for a failure, its step ("failed at X" in older records)."""
        if not isinstance(text, str):
            return cls.INTERRUPTED, None
        if text.startswith(f"{cls.FAILED.value} at "):
            return cls.FAILED, text.removeprefix(f"{cls.FAILED.value} at ")
        try:
            return cls(text), None
        except ValueError:
            return cls.FAILED, None

    @property
    def decided(self) -> bool:
        """Whether the outcome is a decision about the model (kept, deployed, staged)."""
        return self in DECISIONS


DECISIONS = frozenset({Outcome.KEPT, Outcome.FIRST_DEPLOYED, Outcome.REDEPLOYED, Outcome.STAGED})


class Severity(StrEnum):
    """How much a verdict asks of a person, least first."""

    OK = "ok"  # nothing to do
    NOTICE = "notice"  # something changed and was handled
    WARNING = "warning"  # a person should look
    CRITICAL = "critical"  # the system cannot do its job

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def __ge__(self, other: object) -> bool:
        return isinstance(other, Severity) and self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        return isinstance(other, Severity) and self.rank > other.rank

    def __le__(self, other: object) -> bool:
        return isinstance(other, Severity) and self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        return isinstance(other, Severity) and self.rank < other.rank


class ScorePurpose(StrEnum):
    """What a recorded F1 (the history's scores table) was computed on, and by which model."""

    TEST = "test"  # a new model on testdata.csv, at training
    EXPECTED_CV = "expected-cv"  # a new model, cross-validated on its training data
    DRIFT_CHECK = "drift-check"  # the deployed model on the new finaldata.csv
    NEW_FILES = "new-files"  # the deployed model on the labelled rows of the new files
    ESTIMATED = "estimated-cbpe"  # the deployed model, estimated without labels


# Parts of a record that must be JSON objects, and those that must be lists: a row
# holding anything else there (a damaged row) loses that part only.
_OBJECTS = (
    "rejected",
    "release_before",
    "deployed",
    "staged",
    "model_drift",
    "exits_drift",
    "performance",
    "retraining",
    "data_drift",
    "timings",
)
_LISTS = ("new_files", "reports")
_TEXTS = ("step", "problem", "test_data_stale", "test_data_sha256", "data_drift_skipped", "line")
# Significant digits a recorded figure keeps.
FIGURE_DIGITS = 6
# The empty mapping every record may share: a record never changes what it holds.
_NOTHING: Mapping[Any, Any] = MappingProxyType({})


class RunRecord(NamedTuple):
    """One fullprocess.py run as the history keeps it (pipeline_runs and its detail_json).

    Immutable: a run changes its record with _replace, so a record read back is what
    was written.
    """

    outcome: Outcome = Outcome.RUNNING
    id: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    step: str | None = None
    problem: str | None = None
    new_files: Sequence[str] = ()  # the first few (a bounded record)
    new_file_count: int = 0
    rejected: Mapping[str, str] = _NOTHING  # the first few, with why
    rejected_count: int = 0
    release_before: dict[str, Any] | None = None
    deployed: dict[str, Any] | None = None
    staged: dict[str, Any] | None = None
    model_drift: dict[str, Any] | None = None
    exits_drift: dict[str, Any] | None = None  # the observed-against-predicted exits test
    performance: dict[str, Any] | None = None
    retraining: dict[str, Any] | None = None
    test_data_checked: bool = False
    test_data_stale: str | None = None
    test_data_sha256: str | None = None
    data_drift: dict[str, Any] | None = None
    data_drift_skipped: str | None = None
    reports: Sequence[str] = ()
    timings: Mapping[str, float] = _NOTHING
    duration_s: float | None = None
    # What the run had decided before it finished: kept, deployed or staged (a run
    # killed while reporting has decided; its record says what).
    decision: Outcome | None = None
    failed_after_deployment: bool = False
    about_run: int | None = None  # a catch-up run: the run whose reports it wrote
    severity: Severity | None = None  # the verdict when the run finished
    headline: str | None = None
    line: str | None = None

    @property
    def finished(self) -> bool:
        return self.outcome not in (Outcome.RUNNING, Outcome.INTERRUPTED)

    @property
    def drifted(self) -> bool:
        """Whether a test found the model wrong: its F1, or the exits it predicted."""
        return any(
            bool((found or {}).get("drifted")) for found in (self.model_drift, self.exits_drift)
        )

    def drift_on_new_rows(self) -> dict[str, Any] | None:
        """The verdict of a test that found the model wrong on the new files' rows themselves.

        None when no test did. The raw, parametric and nonparametric tests weigh every
        ingested row against a test score: their drift says nothing of the new rows (on
        steady clients the raw test finds it on most runs, by a few thousandths).
        """
        return next(
            (
                found
                for found in (self.model_drift or {}, self.exits_drift or {})
                if found.get("drifted") and (found.get("on_new_rows") or found.get("on_estimate"))
            ),
            None,
        )

    def to_json(self) -> dict[str, Any]:
        """detail_json: everything but what pipeline_runs keeps in columns of its own.

        Figures keep FIGURE_DIGITS significant digits (pages and reports show four): a
        quarter of every data run's record is otherwise the tail of its floats.
        """
        detail = self._asdict()
        for column in ("id", "started_at", "finished_at"):
            del detail[column]
        detail["rejected"], detail["timings"] = dict(self.rejected), dict(self.timings)
        return _rounded(detail)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """A pipeline_runs row as a record; parts of the wrong shape are left out."""
        try:
            detail = json.loads(row.get("detail_json") or "{}")
        except (TypeError, json.JSONDecodeError):
            detail = {}
        if not isinstance(detail, dict):
            detail = {}
        outcome, failed_step = Outcome.parse(row.get("outcome"))
        parts: dict[str, Any] = {
            **{name: detail[name] for name in _OBJECTS if isinstance(detail.get(name), dict)},
            **{
                name: detail[name]
                for name in _LISTS
                if isinstance(detail.get(name), list)
                and all(isinstance(item, str) for item in detail[name])
            },
            **{name: detail[name] for name in _TEXTS if isinstance(detail.get(name), str)},
        }
        record = cls(
            outcome=outcome,
            id=row.get("id"),
            started_at=row.get("started_at"),
            finished_at=row.get("finished_at"),
            exit_code=row.get("exit_code"),
            **parts,
        )
        record = record._replace(step=record.step or failed_step)
        return record._replace(**_extras(record, detail, row))


def _rounded(value: Any) -> Any:
    """value with every float in it cut to FIGURE_DIGITS significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{FIGURE_DIGITS}g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _extras(record: RunRecord, detail: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The parts of a record that need more than a shape check; older records' spellings."""
    extras: dict[str, Any] = {}
    features = (record.data_drift or {}).get("features")
    if record.data_drift is not None and not (
        isinstance(features, dict) and all(isinstance(f, dict) for f in features.values())
    ):
        extras["data_drift"] = None
    # Records written before test-data checks were recorded said only when stale.
    extras["test_data_checked"] = bool(detail.get("test_data_checked")) or bool(
        record.test_data_stale
    )
    extras["failed_after_deployment"] = bool(detail.get("failed_after_deployment")) or (
        record.outcome == Outcome.FAILED and row.get("exit_code") == 2
    )
    for name, names in (("new_file_count", record.new_files), ("rejected_count", record.rejected)):
        count = detail.get(name)
        extras[name] = count if isinstance(count, int) else len(names)
    if isinstance(detail.get("duration_s"), int | float):
        extras["duration_s"] = float(detail["duration_s"])
    if isinstance(detail.get("about_run"), int):
        extras["about_run"] = detail["about_run"]
    extras["decision"] = _decision(detail, record)
    with contextlib.suppress(ValueError):
        extras["severity"] = Severity(str(detail.get("severity")))
    if isinstance(detail.get("headline"), str):
        extras["headline"] = detail["headline"]
    if record.deployed is None and isinstance(row.get("release_id"), str):
        # A run killed between going live and saving its progress: the column,
        # written before the switch, still says what it deployed.
        extras["deployed"] = {"release_id": row["release_id"]}
        extras["decision"] = extras["decision"] or Outcome.REDEPLOYED
    return extras


def _decision(detail: dict[str, Any], record: RunRecord) -> Outcome | None:
    """What the run decided about the model, from its record (older records: its outcome)."""
    try:
        decided = Outcome(str(detail.get("decision")))
    except ValueError:
        decided = None
    if decided is not None and decided.decided:
        return decided
    if record.outcome.decided:
        return record.outcome
    if record.staged:
        return Outcome.STAGED
    if record.deployed:
        return Outcome.REDEPLOYED if record.release_before else Outcome.FIRST_DEPLOYED
    if record.model_drift is not None:
        return Outcome.KEPT
    return None


# Columns of pipeline_runs a record is read from.
_COLUMNS = "id, started_at, finished_at, outcome, exit_code, release_id, detail_json"


def insert(history: History, record: RunRecord) -> RunRecord:
    """Add a record as a new pipeline_runs row; the record with its id."""
    run_id = history.insert(
        "pipeline_runs",
        {
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "outcome": record.outcome.value,
            "exit_code": record.exit_code,
            "release_id": (record.deployed or {}).get("release_id"),
            "detail_json": record.to_json(),
        },
    )
    return record._replace(id=run_id)


def save(history: History, record: RunRecord) -> RunRecord:
    """Write a record over its row (insert it when it has none yet); the record with its id."""
    if record.id is None:
        return insert(history, record)
    history.update(
        "pipeline_runs",
        record.id,
        {
            "finished_at": record.finished_at,
            "outcome": record.outcome.value,
            "exit_code": record.exit_code,
            "detail_json": record.to_json(),
        },
    )
    return record


def note_release(history: History, run_id: int, release_id: str) -> None:
    """Name the release a run is about to make live, before it goes live."""
    history.update("pipeline_runs", run_id, {"release_id": release_id})


def close_interrupted(history: History) -> None:
    """Mark runs left running (killed: the caller holds the lock now) as interrupted."""
    history.execute(
        "UPDATE pipeline_runs SET outcome = ? WHERE outcome = ?",
        (Outcome.INTERRUPTED.value, Outcome.RUNNING.value),
    )


def latest(history: History, count: int) -> list[RunRecord]:
    """The newest count runs, oldest first (bounded: one index read whatever the history)."""
    rows = history.rows(
        f"SELECT {_COLUMNS} FROM pipeline_runs ORDER BY id DESC LIMIT ?",  # noqa: S608
        (count,),
    )
    return [RunRecord.from_row(row) for row in reversed(rows)]


def latest_where(history: History, condition: str, params: Iterable[Any] = ()) -> RunRecord | None:
    """The newest run whose row meets an SQL condition on pipeline_runs, or None."""
    rows = history.rows(
        f"SELECT {_COLUMNS} FROM pipeline_runs WHERE {condition} ORDER BY id DESC LIMIT 1",  # noqa: S608
        tuple(params),
    )
    return RunRecord.from_row(rows[0]) if rows else None


def finished(history: History) -> list[RunRecord]:
    """Every finished run, oldest first (the report's history of checks)."""
    rows = history.rows(
        f"SELECT {_COLUMNS} FROM pipeline_runs WHERE finished_at IS NOT NULL ORDER BY id"  # noqa: S608
    )
    return [RunRecord.from_row(row) for row in rows]


class Verdict(NamedTuple):
    """The one account of the system: severity, headline, action (None: nothing to do), details.

    drs.state computes it from the state; every surface shows it as it is.
    """

    severity: Severity
    headline: str
    action: str | None
    details: tuple[str, ...]
    release_id: str | None
    # Same key, same news: an alert goes out when the key changes or the severity rises.
    key: str
    went_live: str | None = None  # when and how the live release went live, in words
    figures: Mapping[str, float | None] = _NOTHING
    open: tuple[str, ...] = ()  # the open conditions' short names, worst first

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "headline": self.headline,
            "action": self.action,
            "details": list(self.details),
            "release_id": self.release_id,
            "went_live": self.went_live,
            "open": list(self.open),
        }


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


def plural(count: int, word: str) -> str:
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
    data = plural(new, "new file") + (f" ({rejected} rejected)" if rejected else "")
    drift = "model drift found" if record.drifted else "no model drift"
    after = (record.deployed or {}).get("release_id")
    kept = f"{data}, {drift}; kept the deployed model"
    if record.model_drift is None:
        kept = f"{data}, nothing ingested to check; kept the deployed model"
    elif record.drifted and record.drift_on_new_rows() is None:
        # A test on all the data; the new rows themselves showed no better model.
        better = "no retrained model did better on the newest rows"
        kept = f"{data}, {drift}; {better}, kept the deployed model"
    words = {
        Outcome.FIRST_DEPLOYED: f"first model deployed: release {after}",
        Outcome.REDEPLOYED: f"{drift}, retrained and redeployed: release {after} replaces {before}",
        Outcome.STAGED: f"{drift}, retrained and staged release "
        f"{(record.staged or {}).get('release_id')}; {before} stays live",
        Outcome.KEPT: kept,
    }
    return words.get(decision, record.outcome.value)
