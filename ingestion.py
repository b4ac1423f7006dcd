"""Ingest every CSV of the input folder into one de-duplicated finaldata.csv (§3).

Valid files are combined (one concatenation) and de-duplicated; invalid files are
reported with their reason and skipped, and a file rejected before is not read
again until its content changes. Each run is recorded in the run history (§9).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import common

if TYPE_CHECKING:
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
    files: list[Path], known_rejections: dict[tuple[str, str], str] | None = None
) -> tuple[pa.Table | None, IngestionResult]:
    """Validate and combine files; returns the de-duplicated Arrow table and what happened.

    known_rejections maps (file name, sha256) to the reason it was rejected before;
    such a file is skipped unread. The table is None when no file is valid.
    """
    import pyarrow as pa

    known_rejections = known_rejections or {}
    result = IngestionResult()
    tables = []
    for path in files:
        digest = common.file_sha256(path)
        result.hashes[path.name] = digest
        earlier = known_rejections.get((path.name, digest))
        if earlier is not None:
            result.rejected[path.name] = earlier
            logger.warning("%s: still rejected, content unchanged (%s)", path.name, earlier)
            continue
        try:
            table = common.read_table(path)
        except common.DataError as error:
            reason = str(error).removeprefix(f"{path.name}: ")
            result.rejected[path.name] = reason
            logger.warning("%s: rejected: %s", path.name, reason)
            continue
        tables.append(table)
        result.ingested[path.name] = table.num_rows
    if not tables:
        return None, result
    combined = pa.concat_tables(tables).to_pandas()
    result.rows_before = len(combined)
    combined = combined.drop_duplicates(ignore_index=True)
    result.rows_after = len(combined)
    return pa.Table.from_pandas(combined, preserve_index=False), result


def known_rejections(history: common.History, folder: Path) -> dict[tuple[str, str], str]:
    """(name, sha256) -> reason for every file of folder rejected earlier."""
    rows = history.rows(
        "SELECT name, sha256, reason FROM file_checks WHERE folder = ? AND verdict = 'rejected'",
        (str(folder),),
    )
    return {(row["name"], row["sha256"]): row["reason"] for row in rows}


def record_run(
    history: common.History,
    folder: Path,
    result: IngestionResult,
    started_at: str,
    duration_s: float,
    status: str,
) -> int:
    """Write the run and each file's verdict to the run history; returns the run id."""
    for name, digest in result.hashes.items():
        verdict = "valid" if name in result.ingested else "rejected"
        history.insert(
            "file_checks",
            {
                "folder": str(folder),
                "name": name,
                "sha256": digest,
                "verdict": verdict,
                "reason": result.rejected.get(name),
                "rows": result.ingested.get(name),
                "checked_at": started_at,
            },
        )
    files = [
        {"name": name, "rows": rows, "sha256": result.hashes[name]}
        for name, rows in result.ingested.items()
    ]
    return history.insert(
        "ingestion_runs",
        {
            "started_at": started_at,
            "duration_s": duration_s,
            "input_folder": str(folder),
            "status": status,
            "rows_before": result.rows_before,
            "rows_after": result.rows_after,
            "files_json": files,
            "rejected_json": result.rejected,
        },
    )


def run(config: common.Config) -> IngestionResult:
    """Ingest config's input folder into finaldata.csv and ingestedfiles.txt; record the run."""
    started_at, clock = common.utc_now(), time.perf_counter()
    files = common.csv_files(config.input_folder)
    with common.open_history(config) as history:
        table, result = ingest(files, known_rejections(history, config.input_folder))
        duration = time.perf_counter() - clock
        if table is None:
            record_run(history, config.input_folder, result, started_at, duration, "failed")
            raise common.DataError(
                f"{config.input_folder}: no valid CSV file to ingest "
                f"({len(files)} found, {len(result.rejected)} rejected)"
            )
        common.write_table_csv(table, config.final_data_path)
        common.write_ingested_record(config.ingested_record_path, list(result.ingested))
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
    args = common.build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = common.load_config(args.config)
        result = run(config)
        print(
            f"{config.final_data_path}: {result.rows_after} rows from "
            f"{len(result.ingested)} file(s); {len(result.rejected)} rejected"
        )

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
