"""Benchmark what client managers open, over a long risk history, against GET /health.

In a temporary workspace with 10,000 current clients and a deployed model, the history
is given SCORINGS scorings of those clients (one a day; every tenth a new model that
moves every risk, the others new data moving a tenth of them; twenty clients leaving
and twenty arriving each time), the last one the real book. gunicorn then serves the
app as the README's production command does, and one client on the same machine asks,
interleaved, each bounded in count and time:

    GET /health                     the floor (HTTP, Flask, the client itself)
    GET /                           the page: band counts, list, what changed
    GET /client/<riskiest>          a client page: drivers, what-ifs, risk over time
    GET /changes                    what changed since the previous scoring
    GET /changes?since=<date>       ... since a date 30 scorings back
    GET /changes?since=<new date>   ... a date not asked before: computed from the history

Targets: page and client page p50 at most 5x /health p50, /changes at most 3x.
Figures are medians of one run on a shared machine: compare ratios, not milliseconds.

Usage: .venv/bin/python bench/bench_changes.py [--scorings 100] [--requests 300] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT), str(Path(__file__).resolve().parent)]

from bench_api import (  # noqa: E402
    describe,
    free_port,
    make_workspace,
    percentile,
    start_gunicorn,
    timed_series,
    wait_until_up,
)

from drs import riskhistory  # noqa: E402
from drs.clients import ModelCache  # noqa: E402
from drs.config import Config  # noqa: E402
from drs.history import open_history  # noqa: E402

TARGETS = {"page": 5.0, "client": 5.0, "changes": 3.0, "changes_since": 3.0}
TURNOVER = 20  # clients leaving, and arriving, at each scoring


def build_history(config: Config, scorings: int, seed: int = 11) -> tuple[str, int]:
    """Record `scorings` scorings of the workspace's clients; (riskiest id, client rows)."""
    book = ModelCache(config).book()
    real = riskhistory.scored_from_book(book)
    rng = random.Random(seed)
    names = list(real.corporations)
    base = dict(zip(names, real.risks, strict=True))
    rows = dict(zip(names, real.rows, strict=True))
    bands = book.bands
    start = datetime.now(UTC) - timedelta(days=scorings)
    risks = {name: min(1.0, max(0.0, risk + rng.uniform(-0.2, 0.2))) for name, risk in base.items()}
    visitors: list[str] = []
    with open_history(config) as history:
        for number in range(scorings - 1):
            moved = names if number % 10 == 0 else rng.sample(names, len(names) // 10)
            for name in moved:
                risks[name] = min(1.0, max(0.0, base[name] + rng.uniform(-0.2, 0.2)))
            leaving = set(visitors[:TURNOVER])
            visitors = visitors[TURNOVER:] + [
                f"visitor{number:03d}-{n:02d}" for n in range(TURNOVER)
            ]
            for name in leaving:
                risks.pop(name, None)
            for name in visitors[-TURNOVER:]:
                risks[name] = rng.random()
                rows[name] = (float(rng.randint(0, 500)), float(rng.randint(0, 5000)), 10.0)
            order = sorted(risks, key=lambda name: -risks[name])
            scored = riskhistory.Scored(
                release_id=f"synthetic-{number // 10}",
                data_at=None,
                corporations=order,
                risks=[risks[name] for name in order],
                bands=[bands.of(risks[name]) for name in order],
                rows=[rows[name] for name in order],
                has_left=leaving.__contains__,
            )
            when = (start + timedelta(days=number)).isoformat(timespec="milliseconds")
            riskhistory.record(history, scored, when.replace("+00:00", "Z"))
        last = real._replace(has_left=lambda name: name.startswith("visitor"))
        riskhistory.record(history, last, datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        count = history.rows("SELECT count(*) AS n FROM client_risks")[0]["n"]
    return book.ids[0], count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorings", type=int, default=100, help="scorings in the history")
    parser.add_argument("--requests", type=int, default=300, help="rounds of requests")
    parser.add_argument("--seconds", type=float, default=20.0, help="time bound of the series")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-changes-") as tmp:
        config = make_workspace(Path(tmp) / "workspace", 1_000)
        started = time.perf_counter()
        riskiest, rows = build_history(config, args.scorings)
        built = time.perf_counter() - started
        size = os.path.getsize(config.history_path) / 1e6
        print(
            f"history: {args.scorings} scorings of 10,000 clients, {rows:,} client rows, "
            f"{size:.1f} MB, built in {built:.1f} s"
        )
        since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_gunicorn(config, port, Path(tmp) / "gunicorn.log")
        try:
            wait_until_up(url, server)
            with requests.Session() as session:
                paths = {
                    "health": "/health",
                    "page": "/",
                    "client": f"/client/{riskiest}",
                    "changes": "/changes",
                    "changes_since": f"/changes?since={since}",
                }
                calls = {
                    name: (lambda path=path: session.get(url + path, timeout=60))
                    for name, path in paths.items()
                }
                timed_series(calls, 20, args.seconds)  # both workers warm: model, book, caches
                series = timed_series(calls, args.requests, args.seconds)
                # A date not asked before is computed from the history, not from memory.
                dates = iter(
                    (datetime.now(UTC) - timedelta(days=days)).date().isoformat()
                    for days in range(2, args.scorings)
                )
                cold = timed_series(
                    {"cold": lambda: session.get(f"{url}/changes?since={next(dates)}", timeout=60)},
                    args.scorings - 2,
                    args.seconds,
                )["cold"]
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    p50 = {name: percentile(values, 0.5) for name, values in series.items()}
    met = True
    for name, path in paths.items():
        print(describe(f"GET {path[:30]}", series[name]))
    print(describe("GET /changes?since=<a new date>", cold) + "  (computed, not kept: no target)")
    for name, target in TARGETS.items():
        ratio = p50[name] / p50["health"]
        ok = ratio <= target
        met &= ok
        print(
            f"{paths[name][:30]:32s} p50 / /health p50 {ratio:6.2f} "
            f"(target <= {target:g}: {'met' if ok else 'NOT met'})"
        )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
