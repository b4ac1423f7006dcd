"""Benchmark ingestion.py against a floor that only reads, combines, de-duplicates, writes.

Generates ROWS fabricated clients in FILES CSVs (each file repeating part of the one
before, so there are duplicates to drop) in a temporary folder, then runs as whole
processes, alternating, several times each:
  (a) ingestion.py --config <temporary config>
  (b) bench/ingestion_floor.py (pyarrow read_csv, one concat_tables, to_pandas,
      drop_duplicates, pyarrow write_csv; no validation, hashing or history)
and prints the median wall time of each, their ratio, each one's peak RSS, the final
table's in-memory size (DataFrame.memory_usage(deep=True).sum() of finaldata.csv
read as ingestion holds it) and peak RSS / that size.

Targets: ingestion within 2x of the floor's wall time; peak RSS within 3x of the
final table's in-memory size. For that second figure it also prints the peak RSS of
a process that only imports what ingestion imports (numpy, pyarrow, and pandas,
which pyarrow loads on its first numpy conversion), and ingestion's peak above it.

Usage: .venv/bin/python bench/bench_ingestion.py [--rows 1000000] [--files 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from drs import datagen  # noqa: E402
from drs.config import load_config  # noqa: E402
from drs.datarules import read_dataset  # noqa: E402

MB = 1024 * 1024
# What an ingestion process has loaded before it reads any data.
IMPORTS_ONLY = (
    f"import sys; sys.path.insert(0, {str(PROJECT)!r}); "
    "import ingestion, common, numpy, pyarrow, pyarrow.csv, pyarrow.compute, pandas"
)


def measured(command: list[str], cwd: Path) -> tuple[float, int]:
    """Run command to the end; returns (wall seconds, peak RSS in bytes) of that process.

    os.wait4 gives the child's own resource usage (ru_maxrss, KiB on Linux), so each
    run's peak is its own, not the maximum over every child so far.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors.decode(errors='replace')}")
    return wall, usage.ru_maxrss * 1024


def make_workspace(root: Path, rows: int, files: int, overlap: float) -> Path:
    started = time.perf_counter()
    datagen.write_files(root / "incoming", rows, files, seed=7, overlap=overlap, missing_rate=0.005)
    size = sum(path.stat().st_size for path in (root / "incoming").glob("*.csv"))
    print(
        f"generated {rows:,} rows in {files} files ({size / MB:.1f} MiB, overlap {overlap:.0%}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    config = {**datagen.WORKSPACE_CONFIG, "input_folder_path": "incoming"}
    path = root / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in all")
    parser.add_argument("--files", type=int, default=100, help="how many CSV files")
    parser.add_argument("--overlap", type=float, default=0.05, help="share repeated per file")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, alternating")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingestion-") as tmp:
        root = Path(tmp)
        config_path = make_workspace(root, args.rows, args.files, args.overlap)
        config = load_config(config_path)
        floor_out = root / "floor" / "finaldata.csv"
        floor_out.parent.mkdir()
        commands = {
            "ingestion": [
                sys.executable,
                str(PROJECT / "ingestion.py"),
                "--config",
                str(config_path),
            ],
            "floor": [
                sys.executable,
                str(PROJECT / "bench" / "ingestion_floor.py"),
                str(config.input_folder),
                str(floor_out),
            ],
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, list[int]] = {name: [] for name in commands}
        for run in range(args.runs):
            order = list(commands) if run % 2 == 0 else list(reversed(commands))
            for name in order:
                # A fresh history each run: every file is new, as on a first ingestion.
                config.history_path.unlink(missing_ok=True)
                wall, peak = measured(commands[name], root)
                walls[name].append(wall)
                peaks[name].append(peak)

        libraries = max(measured([sys.executable, "-c", IMPORTS_ONLY], root)[1] for _ in range(3))
        final = read_dataset(config.final_data_path)
        floor_rows = sum(1 for _ in floor_out.open()) - 1
        if floor_rows != len(final):
            raise SystemExit(f"row counts differ: ingestion {len(final)}, floor {floor_rows}")
        size = int(final.memory_usage(deep=True).sum())

    wall = {name: statistics.median(values) for name, values in walls.items()}
    peak = {name: max(values) for name, values in peaks.items()}
    print(f"final table: {len(final):,} rows, in memory {size / MB:.1f} MiB")
    for name in commands:
        print(
            f"{name:>9}: median wall {wall[name]:.3f} s "
            f"(runs: {', '.join(f'{v:.3f}' for v in walls[name])}); "
            f"peak RSS {peak[name] / MB:.1f} MiB = {peak[name] / size:.2f}x the final table"
        )
    ratio = wall["ingestion"] / wall["floor"]
    print(f"wall time ingestion / floor: {ratio:.2f}x (target <= 2x)")
    print(f"peak RSS ingestion / final table: {peak['ingestion'] / size:.2f}x (target <= 3x)")
    above = peak["ingestion"] - libraries
    print(
        f"libraries alone: peak RSS {libraries / MB:.1f} MiB = {libraries / size:.2f}x; "
        f"ingestion above them: {above / MB:.1f} MiB = {above / size:.2f}x the final table"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
