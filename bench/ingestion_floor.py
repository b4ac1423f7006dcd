"""The floor ingestion.py is measured against: the bare minimum of its work, no checks.

Reads every *.csv of a folder with pyarrow, concatenates once, de-duplicates in
pandas and writes the result with pyarrow. No validation, no hashing, no history.

Usage: python bench/ingestion_floor.py INPUT_FOLDER OUTPUT_CSV
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input_folder", type=Path)
    parser.add_argument("output_csv", type=Path)
    args = parser.parse_args(argv)
    tables = [pa_csv.read_csv(path) for path in sorted(args.input_folder.glob("*.csv"))]
    frame = pa.concat_tables(tables).to_pandas().drop_duplicates(ignore_index=True)
    pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), args.output_csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
