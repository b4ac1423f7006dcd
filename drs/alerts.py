"""Alerts that arrive once: owed in the history before they are sent, delivered after.

A run decides whether the verdict is news (new, worse, a daily reminder of a condition
still open, or a recovery) and records an alert as owed, inside the pipeline lock.
Sending happens after the lock is released, by that run or the next: the alert
command never holds up the pipeline. A command that fails is retried with back-off;
the verdict turns critical while alerts cannot be delivered.

The command gets a subject line on its stdin, then a JSON payload of at most 4 KB,
and the severity and headline in environment variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs.clock import parse_stamp
from drs.runs import Severity, Verdict

if TYPE_CHECKING:
    from drs.config import Config
    from drs.history import History

logger = logging.getLogger(__name__)

# Seconds the alert command may take, writing its input included.
TIMEOUT_S = 30.0
# Bytes of the command's input (subject line and JSON payload) and of its output kept.
PAYLOAD_BYTES = 4096
OUTPUT_BYTES = 4096
# An open condition is said again after this long, if still open.
REMIND_AFTER = timedelta(days=1)
# A failing command is tried again after BACKOFF_FIRST, doubling up to BACKOFF_MAX.
BACKOFF_FIRST = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=6)
# Environment variables the command reads.
SEVERITY_ENV_VAR = "DRS_ALERT_SEVERITY"
HEADLINE_ENV_VAR = "DRS_ALERT_HEADLINE"
SUBJECT_ENV_VAR = "DRS_ALERT_SUBJECT"
RELEASE_ENV_VAR = "DRS_ALERT_RELEASE"


class Status(StrEnum):
    OWED = "owed"
    DELIVERED = "delivered"
    SUPERSEDED = "superseded"  # a newer verdict was owed before this one went out


class Why(StrEnum):
    """Why a verdict is sent."""

    NEW = "new"
    WORSE = "worse"
    REMINDER = "reminder"
    RECOVERED = "recovered"
    RELEASE_CHANGED = "release changed"


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def undelivered(history: History) -> dict[str, Any] | None:
    """The alert owed now (at most one is), or None."""
    rows = history.rows(
        "SELECT * FROM alerts WHERE status = ? ORDER BY id DESC LIMIT 1", (Status.OWED.value,)
    )
    return rows[0] if rows else None


def last_alert(history: History) -> dict[str, Any] | None:
    """The newest alert owed or delivered (what the next verdict is compared with)."""
    rows = history.rows(
        "SELECT * FROM alerts WHERE status != ? ORDER BY id DESC LIMIT 1",
        (Status.SUPERSEDED.value,),
    )
    return rows[0] if rows else None


def why_send(verdict: Verdict, last: dict[str, Any] | None, now: datetime) -> Why | None:
    """Why verdict is news against the last alert, or None when it is not.

    Warnings and critical verdicts go out when new or worse, and again each day while
    open; a notice or ok goes out when the live release changed or a problem cleared.
    """
    if last is None:
        return Why.NEW if verdict.severity >= Severity.NOTICE else None
    try:
        before = Severity(last["severity"])
    except ValueError:
        before = Severity.OK
    rules: tuple[tuple[bool, Why], ...]
    if verdict.severity >= Severity.WARNING:
        sent = parse_stamp(last.get("delivered_at") or last.get("created_at"))
        reminder = sent is None or now - sent >= REMIND_AFTER
        rules = (
            (verdict.severity > before, Why.WORSE),
            (verdict.key != last["key"], Why.NEW),
            (reminder, Why.REMINDER),
        )
    else:
        rules = (
            (before >= Severity.WARNING, Why.RECOVERED),
            (
                bool(
                    verdict.severity == Severity.NOTICE
                    and verdict.key != last["key"]
                    and verdict.release_id != last.get("release_id")
                ),
                Why.RELEASE_CHANGED,
            ),
        )
    return next((why for holds, why in rules if holds), None)


def payload(verdict: Verdict, why: Why, line: str | None, report: str | None) -> bytes:
    """The command's input: a subject line, then JSON of the verdict, at most PAYLOAD_BYTES.

    The details are cut first, then the longer texts, so the verdict itself always fits.
    """
    body: dict[str, Any] = {
        "severity": verdict.severity.value,
        "headline": verdict.headline,
        "action": verdict.action,
        "why": why.value,
        "release": verdict.release_id,
        "went_live": verdict.went_live,
        "figures": {k: None if v is None else round(v, 4) for k, v in verdict.figures.items()},
        "open": list(verdict.open),
        "outcome_line": line,
        "report": report,
        "details": list(verdict.details),
    }

    def encoded() -> bytes:
        text = f"{subject_line(verdict)}\n{json.dumps(body, indent=1)}\n"
        return text.encode("utf-8", "backslashreplace")

    data = encoded()
    while len(data) > PAYLOAD_BYTES and body["details"]:
        body["details"].pop()
        data = encoded()
    for key in ("outcome_line", "report", "went_live", "action", "headline"):
        if len(data) > PAYLOAD_BYTES and isinstance(body[key], str):
            body[key] = body[key][: max(len(body[key]) - (len(data) - PAYLOAD_BYTES) - 8, 40)]
            data = encoded()
    return data[:PAYLOAD_BYTES]


def subject_line(verdict: Verdict) -> str:
    return f"[risk model {verdict.severity.value.upper()}] {verdict.headline}"[:200]


def consider(
    history: History,
    verdict: Verdict,
    line: str | None = None,
    report: str | None = None,
    now: datetime | None = None,
) -> Why | None:
    """Record verdict as an owed alert if it is news (replacing an older owed one); why, or None.

    An owed alert that is replaced hands on its failed attempts, so the back-off holds.
    """
    now = now or _now()
    why = why_send(verdict, last_alert(history), now)
    if why is None:
        return None
    data = payload(verdict, why, line, report)
    with history.transaction():
        older = undelivered(history)
        if older is not None:
            history.update("alerts", older["id"], {"status": Status.SUPERSEDED.value})
        history.insert(
            "alerts",
            {
                "created_at": _stamp(now),
                "key": verdict.key,
                "severity": verdict.severity.value,
                "headline": verdict.headline,
                "release_id": verdict.release_id,
                "payload": data.decode("utf-8", "replace"),
                "status": Status.OWED.value,
                "attempts": older["attempts"] if older else 0,
                "next_attempt_at": older["next_attempt_at"] if older else None,
                "last_error": older["last_error"] if older else None,
            },
        )
    logger.info("alert owed (%s): %s", why.value, verdict.headline)
    return why


def deliver(config: Config, history: History, now: datetime | None = None) -> bool | None:
    """Send the owed alert if its time has come; True sent, False failed, None nothing sent.

    Callers must not hold the pipeline lock. One sender at a time (a lock file beside
    the history): a second process finds it taken and leaves the alert to the first.
    """
    now = now or _now()
    owed = undelivered(history)
    if owed is None or not _due(config, history, owed, now):
        return None
    lock_path = config.history_path.with_name(f"{config.history_path.name}.alerts.lock")
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if (undelivered(history) or {}).get("id") != owed["id"]:
            return None  # another process sent it meanwhile
        return _attempt(config, history, owed, now)


def _due(config: Config, history: History, owed: dict[str, Any], now: datetime) -> bool:
    """Whether the owed alert is to be tried now; one owed to no command is dropped."""
    if config.alert_command is None:
        history.update("alerts", owed["id"], {"status": Status.SUPERSEDED.value})
        return False
    due = parse_stamp(owed.get("next_attempt_at"))
    return due is None or due <= now


def _attempt(config: Config, history: History, owed: dict[str, Any], now: datetime) -> bool:
    """Run the command for the owed alert; record it delivered, or the failure and back-off."""
    assert config.alert_command is not None
    data = owed["payload"].encode("utf-8")
    environment = {
        SEVERITY_ENV_VAR: owed["severity"],
        HEADLINE_ENV_VAR: owed["headline"],
        SUBJECT_ENV_VAR: data.split(b"\n", 1)[0].decode("utf-8", "replace"),
        RELEASE_ENV_VAR: owed["release_id"] or "",
    }
    problem = send(config.alert_command, data, environment, config.root)
    if problem is None:
        history.update(
            "alerts",
            owed["id"],
            {"status": Status.DELIVERED.value, "delivered_at": _stamp(_now())},
        )
        logger.info("alert delivered: %s", owed["headline"])
        return True
    attempts = int(owed["attempts"] or 0) + 1
    wait = min(BACKOFF_FIRST * 2 ** (attempts - 1), BACKOFF_MAX)
    history.update(
        "alerts",
        owed["id"],
        {"attempts": attempts, "last_error": problem, "next_attempt_at": _stamp(now + wait)},
    )
    logger.warning(
        "alert not delivered (attempt %d; tried again after %s UTC): %s",
        attempts,
        _stamp(now + wait)[:16].replace("T", " "),
        problem,
    )
    return False


def send(
    command: str,
    data: bytes,
    environment: dict[str, str],
    cwd: Path,
    timeout: float = TIMEOUT_S,
) -> str | None:
    """Run the alert command with data on its stdin; None when it succeeded, else why not.

    Bounded in time from its start, writing its input included: it runs in a process
    group of its own, killed whole when it overstays. Its output (stdout and stderr)
    is read in chunks and only the last OUTPUT_BYTES are kept, so a flood costs no memory.
    """
    import signal
    import subprocess
    import threading

    clock = time.monotonic()
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **environment},
            start_new_session=True,
        )
    except OSError as error:
        return f"could not start: {error.strerror or error}"
    kept = bytearray()

    def drain(stream: Any = process.stdout) -> None:
        # A child left in the background keeps the pipe open: this thread is not waited for.
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                kept.extend(chunk)
                del kept[:-OUTPUT_BYTES]

    def feed(stream: Any = process.stdin) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            stream.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            stream.close()

    for target, name in ((drain, "alert-output"), (feed, "alert-input")):
        threading.Thread(target=target, name=name, daemon=True).start()
    try:
        process.wait(max(timeout - (time.monotonic() - clock), 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"still running after {timeout:g} s; stopped it"
    if process.returncode != 0:
        time.sleep(0.05)  # the last output, if the drain has not read it yet
        said = bytes(kept).decode("utf-8", "replace").strip().splitlines()
        last = said[-1][-300:] if said else "no message"
        return f"exit {process.returncode}: {last}"
    return None
