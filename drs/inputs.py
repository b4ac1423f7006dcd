"""The input folder's files and their content hashes, without rereading unchanged files.

Like git's index: each file's size, modification and change times and inode are kept
in the run history with its SHA-256, and a file whose stat has not changed since it
was hashed is not read again. The cron tick with no new data then costs one listing
and one stat per file, however many files there are. An entry is trusted only for a
file that had been left alone for a while when it was hashed (SETTLED_NS): a write
in the same clock tick as the hashing would leave the times as they were.

Standard library only: the no-op tick imports this.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from drs.errors import DataError
from drs.files import file_sha256, shown_name

if TYPE_CHECKING:
    from drs.history import History

# A file changed this recently before it was hashed is hashed again next time.
SETTLED_NS = 2_000_000_000


# What tells a file unchanged without reading it: (size, mtime_ns, ctime_ns, inode).
Stamp = tuple[int, int, int, int]


# A listed file: its path (a str: making 50,000 Path objects would take most of the
# tick) and its stamp.
Listed = tuple[str, Stamp]


def listing(folder: Path) -> dict[str, Listed]:
    """The folder's *.csv regular files (links followed) by name as recorded (shown_name).

    The same files as drs.files.csv_files, unordered: a file that vanishes while it is
    listed, or a dangling link, is left out; a missing folder is a DataError.
    """
    found = {}
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    regular = stat.S_ISREG
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not name.endswith(".csv"):
                continue
            try:
                status = entry.stat()
            except OSError:
                continue
            if regular(status.st_mode):
                plain = name.isascii() and name.isprintable()
                found[name if plain else shown_name(name)] = (
                    entry.path,
                    (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino),
                )
    return found


def content_hashes(history: History, folder_key: str, files: dict[str, Listed]) -> dict[str, str]:
    """name -> SHA-256 of files, hashing only those whose stamp changed since last time.

    A stamp is trusted only if the file had been left alone for SETTLED_NS when it was
    hashed. The index is brought up to date (new hashes in, files gone out) in one
    transaction, and only when something changed. A file that vanishes before it is
    hashed is left out.
    """
    known = {
        name: ((size, mtime, ctime, inode), digest)
        for name, size, mtime, ctime, inode, digest in history.tuples(
            "SELECT name, size, mtime_ns, ctime_ns, inode, sha256 FROM input_index "
            "WHERE folder = ? AND max(mtime_ns, ctime_ns) < hashed_at_ns - ?",
            (folder_key, SETTLED_NS),
        )
    }
    hashes: dict[str, str] = {}
    fresh = []
    for name, (path, stamp) in files.items():
        entry = known.get(name)
        if entry is not None and entry[0] == stamp:
            hashes[name] = entry[1]
            continue
        started = time.time_ns()
        try:
            digest = file_sha256(Path(path))
        except FileNotFoundError:
            continue
        hashes[name] = digest
        fresh.append((folder_key, name, *stamp, digest, started))
    gone = (
        [
            (folder_key, name)
            for (name,) in history.tuples(
                "SELECT name FROM input_index WHERE folder = ?", (folder_key,)
            )
            if name not in files
        ]
        if len(known) != len(files) or fresh
        else []
    )
    if fresh or gone:
        with history.transaction():
            history.execute_many(
                "INSERT OR REPLACE INTO input_index (folder, name, size, mtime_ns, ctime_ns, "
                "inode, sha256, hashed_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
            history.execute_many("DELETE FROM input_index WHERE folder = ? AND name = ?", gone)
    return hashes


def known_rejections(history: History, folder: Path) -> dict[tuple[str, str], str]:
    """(name, sha256) -> reason for every file of folder rejected earlier."""
    rows = history.tuples(
        "SELECT name, sha256, reason FROM file_checks WHERE folder = ? AND verdict = 'rejected'",
        (str(folder),),
    )
    return {(name, sha256): reason for name, sha256, reason in rows}


def ingested_files(history: History, folder: Path) -> dict[str, str]:
    """The files of the latest ingestion of folder, name -> SHA-256, in the order they came.

    Kept up to date by each ingestion from what changed (ingested_files). A history
    written before that table existed has each ingestion's whole list in files_json
    instead: the latest one is the answer there.
    """
    rows = history.tuples(
        "SELECT name, sha256 FROM ingested_files WHERE folder = ? ORDER BY rowid", (str(folder),)
    )
    if rows:
        return dict(rows)
    import json

    latest = history.tuples(
        "SELECT files_json FROM ingestion_runs WHERE input_folder = ? AND status = 'ok' "
        "ORDER BY id DESC LIMIT 1",
        (str(folder),),
    )
    files = json.loads(latest[0][0]) if latest else []
    return {entry["name"]: entry["sha256"] for entry in files if isinstance(entry, dict)}
