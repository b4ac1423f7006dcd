"""Ingest every CSV of the input folder into one de-duplicated finaldata.csv.

Valid files are combined and de-duplicated; invalid files are reported with their
reason and skipped, and a file rejected before is not read again until its content
changes. Each run is recorded in the run history.

The work stays in Arrow and numpy, with no pandas DataFrame: the round trip through
pandas cost two more whole copies of the data (bench/bench_ingestion.py measures
peak memory and time against a floor that does only read, combine, drop, write).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs.cli import build_parser, configure_logging, run_cli
from drs.clock import utc_now
from drs.config import COLUMNS, ID_COLUMN, Config, load_config
from drs.datarules import SMALL_FILE_BYTES, parse_small, read_table, table_of, write_table_csv
from drs.errors import DataError
from drs.files import (
    csv_files,
    file_name_problem,
    file_sha256,
    shown_name,
    step_lock,
    write_ingested_record,
)
from drs.history import History, open_history
from drs.inputs import known_rejections

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

logger = logging.getLogger(__name__)


@dataclass
class IngestionResult:
    """What one ingestion run did: files taken (name -> rows), rejected (name -> reason)."""

    ingested: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    rows_before: int = 0
    rows_after: int = 0


def ingest(
    files: list[Path],
    known_rejections: dict[tuple[str, str], str] | None = None,
    elsewhere: dict[Path, str] | None = None,
) -> tuple[pa.Table | None, IngestionResult]:
    """Validate and combine files; returns the de-duplicated Arrow table and what happened.

    known_rejections maps (file name, sha256) to the reason it was rejected before;
    such a file is skipped unread. elsewhere maps folders whose files must never be
    ingested (the test data's, ...) to what they are: a file that is really one of
    theirs (through a link) is rejected. The table is None when no file is valid.
    """
    import hashlib

    known_rejections = known_rejections or {}
    result = IngestionResult()
    tables = _Tables()
    for path in files:
        name = shown_name(path.name)
        with open(path, "rb") as handle:  # a small file is read once: hashed as parsed
            data = handle.read(SMALL_FILE_BYTES + 1)
        small = len(data) <= SMALL_FILE_BYTES
        digest = hashlib.sha256(data).hexdigest() if small else file_sha256(path)
        result.hashes[name] = digest
        if not _admitted(path, name, digest, known_rejections, elsewhere or {}, result):
            continue
        parsed = parse_small(data) if small else None
        if parsed is not None:
            tables.add_small(parsed)
            result.ingested[name] = len(parsed[ID_COLUMN])
            continue
        table = _read_whole(path, name, digest, result)
        if table is not None:
            tables.add(table)
            result.ingested[name] = table.num_rows
    tables.gather()
    if not tables.read:
        return None, result
    return _deduplicated(tables.read, result), result


class _Tables:
    """The tables read, in file order; consecutive small files parsed in Python become one."""

    def __init__(self) -> None:
        self.read: list[pa.Table | None] = []
        self.pending: dict[str, list[Any]] = {column: [] for column in COLUMNS}

    def add_small(self, parsed: dict[str, list[Any]]) -> None:
        for column in COLUMNS:
            self.pending[column] += parsed[column]

    def add(self, table: pa.Table) -> None:
        self.gather()
        self.read.append(table)

    def gather(self) -> None:
        """The small files parsed since the last table, as one table."""
        if self.pending[ID_COLUMN]:
            self.read.append(table_of(self.pending))
            self.pending = {column: [] for column in COLUMNS}


def _admitted(
    path: Path,
    name: str,
    digest: str,
    known_rejections: dict[tuple[str, str], str],
    elsewhere: dict[Path, str],
    result: IngestionResult,
) -> bool:
    """Whether to read a file: not with a bad name, another folder's, or rejected as it is."""
    problem = file_name_problem(path.name) or _belongs_elsewhere(path, elsewhere)
    if problem is not None:
        result.rejected[name] = problem
        logger.warning("%s: rejected: %s", name, problem)
        return False
    earlier = known_rejections.get((name, digest))
    if earlier is not None:
        result.rejected[name] = earlier
        logger.warning("%s: still rejected, content unchanged (%s)", name, earlier)
        return False
    return True


def _read_whole(path: Path, name: str, digest: str, result: IngestionResult) -> pa.Table | None:
    """A file read by pyarrow, or None: rejected (recorded in result) or changed while read."""
    try:
        table = read_table(path)
    except DataError as error:
        reason = str(error).removeprefix(f"{path.name}: ")
        result.rejected[name] = reason
        logger.warning("%s: rejected: %s", name, reason)
        return None
    if file_sha256(path) != digest:
        # Read while being written: what was read is not the content hashed.
        del result.hashes[name]
        logger.warning("%s: changed while being read; left for the next run", name)
        return None
    return table


def _deduplicated(tables: list[pa.Table | None], result: IngestionResult) -> pa.Table:
    """The rows of tables without repeats, in order; counts them on result."""
    import pyarrow as pa

    keep = first_occurrences(tables)
    result.rows_before = len(keep)
    kept, start = [], 0
    for index, table in enumerate(tables):
        assert table is not None
        kept.append(table.filter(pa.array(keep[start : start + table.num_rows])))
        start += table.num_rows
        # Let each input go as soon as its rows are taken, so the input and the
        # de-duplicated copy are never both whole in memory.
        tables[index] = None
    combined = pa.concat_tables(kept)
    result.rows_after = combined.num_rows
    return combined


def _belongs_elsewhere(path: Path, elsewhere: dict[Path, str]) -> str | None:
    """Why path is not new data when, links resolved, it is a file of another folder."""
    if not path.is_symlink():
        return None  # the input folder itself is resolved: only a link can lead elsewhere
    real = path.resolve()
    for folder, what in elsewhere.items():
        if real.is_relative_to(folder):
            return f"it is {real} (through a link), a file of the {what}, never new data"
    return None


# Row keys are packed into one int64; past this they are renumbered first (tests lower it).
KEY_LIMIT = 2**63


def first_occurrences(tables: list[pa.Table]) -> np.ndarray:
    """Which rows of tables (in order, same columns) are not repeats of an earlier row.

    The same rows as pandas' drop_duplicates(keep="first"): empty cells equal each
    other, and so do -0.0 and 0.0. Each column becomes dense integer codes (empty
    cells a code of their own), and a row's codes are packed into one int64, exactly
    (never a hash), so a whole row compares as one number; a stable sort of those
    numbers then finds each row's first occurrence.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    combined = pa.concat_tables(tables)
    key, span = np.zeros(combined.num_rows, dtype=np.int64), 1
    for name in combined.column_names:
        column = combined.column(name)
        if pa.types.is_floating(column.type):
            column = pc.add(column, 0.0)  # -0.0 + 0.0 is 0.0
        codes, size = _dense_codes(column)
        del column
        if span * size >= KEY_LIMIT:
            key, span = _dense_codes(pa.chunked_array([key]))
        key *= size
        key += codes
        span *= size
        del codes
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    del key
    first = np.empty(len(order), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    keep = np.zeros(len(order), dtype=bool)
    keep[order[first]] = True
    return keep


def _dense_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """Codes 0..n-1 of column's values (empty cells one code), and n."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type):
        # Arrow's hash table for ~400,000 distinct names takes 60 MB, more than the
        # whole table; sorting the names and numbering the runs needs half of that.
        order = pc.sort_indices(column)
        ordered = column.take(order)
        later, earlier = ordered[1:], ordered[:-1]
        both_empty = pc.and_(pc.is_null(later), pc.is_null(earlier))
        same = pc.fill_null(pc.or_kleene(pc.equal(later, earlier), both_empty), False)
        del ordered, later, earlier, both_empty
        ranks = np.empty(len(column), dtype=np.int64)
        ranks[0] = 0
        ranks[1:] = ~same.to_numpy(zero_copy_only=False)
        np.cumsum(ranks, out=ranks)
        codes = np.empty_like(ranks)
        codes[order.to_numpy()] = ranks
        return codes, int(ranks[-1]) + 1
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    # The chunks of one encoding share one dictionary, so their codes agree.
    size = max(len(chunk.dictionary) for chunk in encoded.chunks)
    codes = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])
    return codes.astype(np.int64), size


# Rejected files a run's record names (the rest are counted): a year of rejections is long.
REJECTED_RECORDED = 20


def record_run(
    history: History,
    folder: Path,
    result: IngestionResult,
    started_at: str,
    duration_s: float,
    status: str,
) -> int:
    """Write the run, and the verdicts and files that changed, to the run history; its id.

    Bounded by what changed, not by the number of files: a file already checked with the
    same content and verdict is not written again, and the run lists the files added or
    changed since the last ingestion (files_json) and those gone (removed_json), while
    ingested_files keeps the whole current list.
    """
    where = str(folder)
    ok = status == "ok"
    checked = _recorded_verdicts(history, where)
    before = (
        dict(history.tuples("SELECT name, sha256 FROM ingested_files WHERE folder = ?", (where,)))
        if ok
        else {}
    )
    changed = [
        {"name": name, "rows": rows, "sha256": result.hashes[name]}
        for name, rows in result.ingested.items()
        if before.get(name) != result.hashes[name]
    ]
    removed = [name for name in before if name not in result.ingested] if ok else []
    with history.transaction():
        _record_file_checks(history, where, result, started_at, checked)
        if ok:
            _record_ingested_files(history, where, changed, removed)
        return history.insert(
            "ingestion_runs",
            {
                "started_at": started_at,
                "duration_s": duration_s,
                "input_folder": where,
                "status": status,
                "rows_before": result.rows_before,
                "rows_after": result.rows_after,
                "files_json": changed,
                "file_count": len(result.ingested),
                "removed_json": removed,
                "rejected_json": dict(list(result.rejected.items())[:REJECTED_RECORDED]),
                "rejected_count": len(result.rejected),
            },
        )


def _recorded_verdicts(history: History, where: str) -> dict[tuple[str, str], str]:
    """The verdict recorded for each (file name, SHA-256) of the folder."""
    return {
        (name, digest): verdict
        for name, digest, verdict in history.tuples(
            "SELECT name, sha256, verdict FROM file_checks WHERE folder = ?", (where,)
        )
    }


def _record_file_checks(
    history: History,
    where: str,
    result: IngestionResult,
    started_at: str,
    checked: dict[tuple[str, str], str],
) -> None:
    """Each file's verdict, written only where its content or verdict is not recorded yet."""
    history.execute_many(
        "INSERT OR REPLACE INTO file_checks (folder, name, sha256, verdict, reason, rows, "
        "checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                where,
                name,
                digest,
                verdict,
                result.rejected.get(name),
                result.ingested.get(name),
                started_at,
            )
            for name, digest in result.hashes.items()
            for verdict in ("valid" if name in result.ingested else "rejected",)
            if checked.get((name, digest)) != verdict
        ),
    )


def _record_ingested_files(
    history: History, where: str, changed: list[dict[str, Any]], removed: list[str]
) -> None:
    """Bring the list of ingested files up to date: the gone ones out, the changed ones in."""
    history.execute_many(
        "DELETE FROM ingested_files WHERE folder = ? AND name = ?",
        ((where, name) for name in removed),
    )
    history.execute_many(
        "INSERT OR REPLACE INTO ingested_files (folder, name, sha256, rows) VALUES (?, ?, ?, ?)",
        ((where, entry["name"], entry["sha256"], entry["rows"]) for entry in changed),
    )


def run(config: Config) -> IngestionResult:
    """Ingest config's input folder into finaldata.csv and ingestedfiles.txt; record the run."""
    started_at, clock = utc_now(), time.perf_counter()
    files = csv_files(config.input_folder)
    with open_history(config) as history:
        elsewhere = {
            config.test_data_folder: "test data folder",
            config.output_folder: "ingested data folder",
            config.model_folder: "model folder",
            config.deployment_folder: "deployment folder",
        }
        table, result = ingest(files, known_rejections(history, config.input_folder), elsewhere)
        duration = time.perf_counter() - clock
        if table is None:
            record_run(history, config.input_folder, result, started_at, duration, "failed")
            raise DataError(
                f"{config.input_folder}: no valid CSV file to ingest "
                f"({len(files)} found, {len(result.rejected)} rejected)"
            )
        write_table_csv(table, config.final_data_path)
        write_ingested_record(config.ingested_record_path, list(result.ingested))
        duration = time.perf_counter() - clock
        record_run(history, config.input_folder, result, started_at, duration, "ok")
    logger.info(
        "ingested %d file(s), %d rejected; %d rows, %d after removing duplicates, in %.2f s",
        len(result.ingested),
        len(result.rejected),
        result.rows_before,
        result.rows_after,
        duration,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = load_config(args.config)
        with step_lock(config):
            result = run(config)
        print(
            f"{config.final_data_path}: {result.rows_after} rows from "
            f"{len(result.ingested)} file(s); {len(result.rejected)} rejected"
        )

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
