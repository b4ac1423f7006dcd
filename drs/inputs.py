"""The input folder's files, their content hashes (unchanged files not reread), and which are new.

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

from drs.clock import utc_now
from drs.errors import DataError
from drs.files import file_sha256, shown_name

if TYPE_CHECKING:
    from drs.config import Config
    from drs.history import History
    from drs.releasefolder import Release

# A file changed this recently before it was hashed is hashed again next time.
SETTLED_NS = 2_000_000_000


# What tells a file unchanged without reading it: (size, mtime_ns, ctime_ns, inode).
Stamp = tuple[int, int, int, int]


def _stamp_of(status: os.stat_result) -> Stamp:
    return (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)


# One file's entry in the index, new or replacing the one before.
_INDEX_ENTRY = (
    "INSERT OR REPLACE INTO input_index (folder, name, size, mtime_ns, ctime_ns, inode, "
    "sha256, hashed_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


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
                    _stamp_of(status),
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
            history.execute_many(_INDEX_ENTRY, fresh)
            history.execute_many("DELETE FROM input_index WHERE folder = ? AND name = ?", gone)
    return hashes


class IndexedSha256:
    """SHA-256 of single files (the live release's, the test data) through the same index.

    Called like drs.files.file_sha256. Entries live under key, one per file name: a
    file replaced by another of the same name (a new release) has another stamp, so it
    is hashed again and its entry replaced; the index stays one row a name.
    """

    def __init__(self, history: History, key: str) -> None:
        self.history = history
        self.key = key

    def __call__(self, path: Path) -> str:
        stamp = _stamp_of(os.stat(path))
        known = self.history.tuples(
            "SELECT sha256 FROM input_index WHERE folder = ? AND name = ? AND size = ? "
            "AND mtime_ns = ? AND ctime_ns = ? AND inode = ? "
            "AND max(mtime_ns, ctime_ns) < hashed_at_ns - ?",
            (self.key, path.name, *stamp, SETTLED_NS),
        )
        if known:
            return str(known[0][0])
        started = time.time_ns()
        digest = file_sha256(path)
        with self.history.transaction():
            self.history.execute(_INDEX_ENTRY, (self.key, path.name, *stamp, digest, started))
        return digest


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


def find_new_files(config: Config, history: History, release: Release | None) -> dict[Path, str]:
    """Input files whose name and content the last processed ingestion did not take: -> SHA-256.

    New data means the input folder differs from what the last run of this pipeline
    ingested: a content seen long ago but not in that ingestion is new again. A file
    rejected before with the same content is not retried. With no processed ingestion
    recorded (a lost history, a deployment made by hand), the files the deployed
    release's ingestedfiles.txt names count as processed. A file removed from the
    folder is not new data; it drops out at the next ingestion.
    """
    folder = input_folder_key(config)
    processed = _processed(history, folder)
    seen = processed | set(known_rejections(history, config.input_folder))
    deployed_names = set(release.ingested_files()) if release and not processed else set()
    listed = listing(config.input_folder)
    hashes = content_hashes(history, folder, listed)
    return {
        Path(listed[name][0]): digest
        for name, digest in hashes.items()
        if name not in deployed_names and (name, digest) not in seen
    }


def _processed(history: History, folder: str) -> set[tuple[str, str]]:
    """The last processed ingestion of folder: (name, SHA-256) of each file it took."""
    return set(
        history.tuples("SELECT name, sha256 FROM processed_files WHERE folder = ?", (folder,))
    )


def input_folder_key(config: Config) -> str:
    """The input folder as processed_files records it: relative to the config's folder if inside.

    A checkout moved together with its history then still knows its processed files.
    """
    if config.input_folder.is_relative_to(config.root):
        return str(config.input_folder.relative_to(config.root))
    return str(config.input_folder)


def mark_processed(history: History, config: Config, ingested: dict[str, str], run_id: int) -> None:
    """Remember what this ingestion took (name -> SHA-256) as the last processed one.

    Only the difference is written: with a year of files, rewriting every row each run
    would cost more than the rest of the record.
    """
    now = utc_now()
    folder = input_folder_key(config)
    before = _processed(history, folder)
    after = set(ingested.items())
    with history.transaction():
        history.execute_many(
            "DELETE FROM processed_files WHERE folder = ? AND name = ? AND sha256 = ?",
            ((folder, name, digest) for name, digest in before - after),
        )
        history.execute_many(
            "INSERT OR REPLACE INTO processed_files (folder, name, sha256, processed_at, "
            "pipeline_run_id) VALUES (?, ?, ?, ?, ?)",
            ((folder, name, digest, now, run_id) for name, digest in after - before),
        )
