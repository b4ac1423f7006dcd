"""Files the pipeline writes and passes on: atomic writes, hashes, the ingestion record, the lock.

Standard library only: the cron tick uses it before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drs.config import Config
from drs.errors import BusyError, DataError

logger = logging.getLogger(__name__)


KILL_AT_ENV_VAR = "DRS_TEST_KILL_AT"
_boundaries = itertools.count(1)
# Errors where the file being written is to blame, whichever file the error names.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# <dot><target name>.<writer's PID>.<random>.tmp, as atomic_path names its temporaries.
# Compiled by re's cache on first use, not at import: the no-op cron tick writes nothing.
_TEMPORARY = r"\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp"


def file_boundary() -> None:
    """Called before every file replace, rename and unlink of the pipeline.

    A test hook: with $DRS_TEST_KILL_AT=N the process SIGKILLs itself at the N-th
    call, so a test can crash a run at each atomic boundary in turn.
    """
    kill_at = os.environ.get(KILL_AT_ENV_VAR)
    if kill_at and next(_boundaries) == int(kill_at):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def replace(source: Path, target: Path) -> None:
    """os.replace at a file boundary."""
    file_boundary()
    os.replace(source, target)


def unlink(path: Path) -> None:
    """Path.unlink(missing_ok=True) at a file boundary."""
    file_boundary()
    path.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries that writers killed mid-write left in folder (their PID is gone)."""
    for path in folder.glob(".*.tmp"):
        found = re.fullmatch(_TEMPORARY, path.name)
        if found and not process_exists(int(found["pid"])):
            logger.info("removing %s, left by a killed writer", path)
            unlink(path)


@contextlib.contextmanager
def naming(target: Path) -> Iterator[None]:
    """Make an OSError raised while writing target name target.

    Libraries often raise without a file name (pyarrow, matplotlib) or blame the file
    they were reading when the disk they write to is full. An error about one of
    target's temporary files is reported as target's too: that name means nothing to
    the person who asked for target.
    """
    try:
        yield
    except OSError as error:
        blamed = error.filename
        if blamed and error.errno not in _WRITE_ERRNOS and not _temporary_of(target, blamed):
            raise
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"cannot write: {reason}", str(target)) from error


def _temporary_of(target: Path, name: Any) -> bool:
    """Whether name is one of the temporary files atomic_path makes for target."""
    blamed = Path(os.fsdecode(name)) if isinstance(name, str | bytes) else None
    return (
        blamed is not None
        and blamed.parent == target.parent
        and blamed.name.startswith(f".{target.name}.")
        and re.fullmatch(_TEMPORARY, blamed.name) is not None
    )


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success it replaces target in one rename.

    Whatever the caller writes there becomes visible all at once, so a crash at any
    instant leaves either the old file or the new one, never a partial file. The
    temporary's name carries this process's PID: a later write to the folder removes
    those of killed writers.
    """
    import tempfile

    target = Path(target)
    with naming(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target.parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with naming(target):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            replace(tmp, target)
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            unlink(tmp)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, value: Any) -> None:
    atomic_write_text(target, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's value; DataError naming the file when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (POSIX needs the directory itself synced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: Path) -> str:
    import hashlib  # here: the cron tick with no new data hashes nothing

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def csv_files(folder: Path) -> list[Path]:
    """The *.csv files of a folder in the order they arrived: modification time, then name.

    Ingested in this order, a client's newest row comes last in finaldata.csv whatever
    the files are called. Names break ties with their numbers compared as numbers
    (dataset2.csv before dataset10.csv). A file that vanishes while it is listed is
    left out; a missing folder is an error.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    arrived = []
    for path in folder.glob("*.csv"):
        try:
            status = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode):
            arrived.append((status.st_mtime_ns, natural_key(path.name), path))
    return [path for _, _, path in sorted(arrived)]


def natural_key(name: str) -> tuple[str | int, ...]:
    """A sort key that compares the runs of digits in a name as numbers.

    Split on digit runs, text and numbers alternate (text first), so two keys compare
    text with text and numbers with numbers.
    """
    parts = re.split(r"([0-9]+)", name)
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts))


def read_ingested_record(path: Path) -> list[str]:
    """File names from an ingestedfiles.txt: one per line, or the older Python list literal.

    The older format counts only when the whole text is a list of strings: a file name
    may itself start with "[".
    """
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        import ast

        try:
            names = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, list) and all(isinstance(name, str) for name in names):
            return names
    return [line for line in text.splitlines() if line]


# An ingestedfiles.txt longer than this is read from its end for its last name.
RECORD_TAIL_BYTES = 64 * 1024


def last_ingested_name(path: Path) -> str | None:
    """The last name of an ingestedfiles.txt (the newest file), reading only its end."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        if size <= RECORD_TAIL_BYTES or handle.read(1) == b"[":
            names = read_ingested_record(path)
            return names[-1] if names else None
        handle.seek(size - RECORD_TAIL_BYTES)
        lines = handle.read().decode("utf-8", "replace").splitlines()
    return next((line for line in reversed(lines[1:]) if line), None)


def file_name_problem(name: str) -> str | None:
    """Why a file's name cannot be recorded (one name a line, in UTF-8), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8 text"
    if not name.isprintable():
        return "its name holds a line break or another control character"
    return None


# Names a record, a log line or a report lists before it says how many more there are.
NAMES_SHOWN = 5


def first_names(names: list[str], shown: int = NAMES_SHOWN) -> list[str]:
    """At most `shown` names: what a bounded record keeps of a list of files (beside its count)."""
    return names[:shown]


def some_names(names: list[str], shown: int = NAMES_SHOWN) -> str:
    """'a.csv, b.csv, c.csv and 49,997 more': a list of files in a line of bounded length."""
    listed = ", ".join(names[:shown])
    more = len(names) - shown
    return f"{listed} and {more:,} more" if more > 0 else listed


def shown_name(name: str) -> str:
    """A file name safe to log and record: non-UTF-8 bytes and control characters escaped."""
    if file_name_problem(name) is None:
        return name
    return printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def printable(text: str) -> str:
    """text with its control characters escaped: a terminal shows them, never obeys them."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def write_ingested_record(path: Path, names: list[str]) -> None:
    atomic_write_text(path, "".join(f"{name}\n" for name in names))


def read_score(path: Path) -> float:
    """The single F1 number of a latestscore.txt."""
    text = path.read_text(encoding="utf-8").strip()
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: expected one number, found {text[:40]!r}") from None


def write_score(path: Path, score: float) -> None:
    atomic_write_text(path, f"{score!r}\n")


LOCK_POLL_S = 0.1


@contextlib.contextmanager
def pipeline_lock(config: Config, wait_s: float = 0.0) -> Iterator[bool]:
    """Yield True while holding the pipeline lock, False when another run kept it for wait_s.

    Every step that writes the model, the score, the ingestion record or the
    deployment takes it, so no hand-run step mixes its files into a run's. flock is
    released by the kernel when a holder dies: a killed run leaves no stale lock.
    """
    config.deployment_folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(config.lock_path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(LOCK_POLL_S)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def step_lock(config: Config) -> Iterator[None]:
    """Hold the pipeline lock for a hand-run step, waiting up to lock_wait_seconds for it."""
    with pipeline_lock(config, config.lock_wait_s) as held:
        if not held:
            raise BusyError(
                f"busy: another pipeline run holds {config.lock_path} "
                f"(waited {config.lock_wait_s:g} s); try again when it has finished"
            )
        yield
