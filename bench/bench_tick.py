"""Benchmark the cron tick of fullprocess.py.

1. A tick with no new data, run as cron runs it (with --log-file), against
   `python -c pass` measured in the same run (target: median under 5x), and
   `python -X importtime` of that tick, which must show no pandas, numpy,
   scikit-learn or matplotlib. Bytecode is cached as in production (into the
   temporary folder, whatever PYTHONDONTWRITEBYTECODE says), so the project's
   modules are not recompiled on every tick.
2. A full drift cycle on 10,000 clients, reports included: with the expected drift test,
   cross-validation and retraining candidates (target: under 5 s), and with the course's
   raw test beside it.

Usage: .venv/bin/python bench/bench_tick.py [--runs 7] [--cycles 3]
Everything happens in a temporary folder; any server it needs binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from drs import datagen, inputs  # noqa: E402
from drs.datarules import read_dataset  # noqa: E402

HEAVY = ("pandas", "numpy", "sklearn", "matplotlib", "scipy", "pyarrow")
# No package index is asked during the benchmark.
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "DRS_PACKAGE_INDEX_URL": "http://127.0.0.1:9/pypi",
}


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def heavy_imports(fullprocess: list[str], cwd: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *fullprocess[1:]],
        cwd=cwd,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return sorted(imported & set(HEAVY))


def retraining_share(root: Path) -> str:
    """In process: what cross-validation and the retraining candidates cost at this size."""
    from drs import modelling, retraining

    frames = {
        path.name: read_dataset(path) for path in sorted((root / "practicedata").glob("*.csv"))
    }
    old = [name for name in frames if name != "dataset3.csv"]
    champion = modelling.train(frames[old[0]])
    chosen = {retraining.ALL_DATA: sorted(frames), retraining.NEW_FILES: ["dataset3.csv"]}
    started = time.perf_counter()
    expected = modelling.expected_performance(frames["dataset3.csv"])
    cross_validation = time.perf_counter() - started
    started = time.perf_counter()
    retraining.choose(frames, chosen, ["dataset3.csv"], champion)
    candidates = time.perf_counter() - started
    return (
        f"in process: cross-validation ({expected['folds']} fits, {expected['rows']:,} rows) "
        f"{cross_validation * 1000:.0f} ms; two candidates (five fits each) and the champion "
        f"on the newest rows {candidates * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each tick command")
    parser.add_argument("--cycles", type=int, default=3, help="timed drift cycles")
    parser.add_argument("--clients", type=int, default=10_000, help="clients per data set")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp:
        root = Path(tmp) / "workspace"
        config = datagen.write_workspace(
            root, args.clients, args.clients // 5, api_url="http://127.0.0.1:9"
        )
        ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        log = Path(tmp) / "logs" / "fullprocess.log"
        fullprocess = [
            sys.executable,
            str(PROJECT / "fullprocess.py"),
            "--config",
            str(config),
            "--log-file",
            str(log),
        ]
        timed(fullprocess, Path(tmp))  # the first run deploys; later ticks find nothing new
        # As under cron (ten minutes apart): the new release's files have settled, so the
        # stat index vouches for them and the quiet tick hashes nothing.
        timed(fullprocess, Path(tmp))
        time.sleep(inputs.SETTLED_NS / 1e9)
        timed(fullprocess, Path(tmp))

        tick, floor = [], []
        for _ in range(args.runs):
            tick.append(timed(fullprocess, Path(tmp)))
            floor.append(timed([sys.executable, "-c", "pass"], Path(tmp)))
        ratio = statistics.median(tick) / statistics.median(floor)
        print(f"no-new-data tick   median {statistics.median(tick) * 1000:7.1f} ms")
        print(f"python -c pass     median {statistics.median(floor) * 1000:7.1f} ms")
        print(f"ratio              {ratio:.2f}x (target < 5x)")
        heavy = heavy_imports(fullprocess, Path(tmp))
        print(f"heavy imports on the tick (python -X importtime): {heavy or 'none'}")

        snapshot = Path(tmp) / "snapshot"
        shutil.copytree(root, snapshot, symlinks=True)
        for drift_test, target in (("expected", 5.0), ("raw", None)) if args.cycles else ():
            cycles = []
            for _ in range(args.cycles):
                shutil.rmtree(root)
                shutil.copytree(snapshot, root, symlinks=True)
                # A new batch of clients who behave differently arrives beside the old ones.
                shutil.copy(root / "sourcedata" / "dataset3.csv", root / "practicedata")
                raw = json.loads(config.read_text())
                config.write_text(json.dumps({**raw, "drift_test": drift_test}))
                cycles.append(timed(fullprocess, Path(tmp)))
                report = root / "practicemodels" / "report2.pdf"
                assert report.stat().st_mtime > log.stat().st_mtime - 60, "no report written"
            goal = f" (target < {target:g} s)" if target else ""
            print(
                f"drift cycle, {args.clients:,} + {args.clients // 2:,} new clients, drift test "
                f"{drift_test!r}, retraining and reports included: median "
                f"{statistics.median(cycles):.2f} s, min {min(cycles):.2f} s, "
                f"max {max(cycles):.2f} s{goal}"
            )
        if args.cycles:
            print(f"the last cycle's outcome: {log.read_text().splitlines()[-1]}")
            print(retraining_share(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
