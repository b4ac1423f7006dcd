"""Benchmark what the system says about itself: the verdict, /diagnostics, the outcome line.

In a temporary workspace with --rows clients:

1. A model deployed by hand (ingestion, training, scoring, deployment as scripts do),
   then the first GET /diagnostics (nothing recorded: timed within the request) and a
   second one (from the record), against GET /health in the same app (the floor).
2. The state and its verdict read (drs.state.read + verdict), median of --repeat.
3. A cron run over --files new input files, some of them rejected, with an alert
   command: its outcome line's length and the alert's payload in bytes.

Usage: .venv/bin/python bench/bench_account.py [--rows 10000] [--files 2000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT)]

from drs import datagen, state  # noqa: E402
from drs.config import load_config  # noqa: E402


def timed(call: object) -> float:
    clock = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("DRS_PACKAGE_INDEX_URL", "http://127.0.0.1:9/pypi")

    import deployment
    import ingestion
    import scoring
    import training
    from drs.web.factory import create_app

    with tempfile.TemporaryDirectory(prefix="bench-account-") as tmp:
        root = Path(tmp) / "workspace"
        path = datagen.write_workspace(root, args.rows, args.rows // 2, overlap=0.1)
        config = load_config(path)
        for step in (ingestion, training, scoring):
            step.run(config)
        deployment.main(["--config", str(path)])
        client = create_app(config).test_client()
        floor = statistics.median(timed(lambda: client.get("/health")) for _ in range(20))
        first_response = None

        def first() -> None:
            nonlocal first_response
            first_response = client.get("/diagnostics")

        first_s = timed(first)
        assert first_response is not None
        second_s = timed(lambda: client.get("/diagnostics"))
        print(f"rows: {args.rows:,}")
        print(
            f"first GET /diagnostics after a hand deployment: {first_s:.2f} s "
            f"(HTTP {first_response.status_code}, {first_response.get_json()['status']}); "
            f"second: {second_s * 1000:.1f} ms; GET /health (floor): {floor * 1000:.1f} ms"
        )
        reads = [timed(lambda: state.verdict(state.read(config))) for _ in range(args.repeat)]
        print(f"state.read + verdict: median {statistics.median(reads) * 1000:.2f} ms")

        flood(root, path, args.files)


def flood(root: Path, path: Path, files: int) -> None:
    """A cron run over files new input files (a tenth rejected), with an alert command."""
    import contextlib
    import io

    import fullprocess

    alerts = root / "alerts.txt"
    raw = path.read_text().rstrip().rstrip("}")
    path.write_text(raw + f', "alert_command": "cat > {alerts}"}}\n')
    config = load_config(path)
    sample = (config.input_folder / "dataset1.csv").read_text().splitlines()
    for number in range(files):
        if number % 10 == 0:
            body = "corporation,lastmonth_activity\nx,1\n"  # rejected: columns missing
        else:
            body = "\n".join([sample[0], *sample[1 + number % 50 :: 500]]) + "\n"
        (config.input_folder / f"batch-{number:05d}-{'x' * 40}.csv").write_text(body)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        clock = time.perf_counter()
        fullprocess.run(config)
        run_s = time.perf_counter() - clock
    line = out.getvalue().splitlines()[-1]
    print(f"cron run over {files:,} new files: {run_s:.1f} s")
    print(f"outcome line: {len(line)} characters: {line}")
    print(f"alert payload: {alerts.stat().st_size:,} bytes (bound 4,096)")


if __name__ == "__main__":
    main()
