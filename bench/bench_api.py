"""Benchmark the risk API under gunicorn.

In a temporary workspace with a deployed model and a 10,000-row dataset in a data
folder, gunicorn serves wsgi:app as the README's production command does (2 workers of 8
threads) on a free loopback port. Measured,
each series bounded in count and in time:

1. GET /health and POST /prediction with one record, interleaved (same conditions);
   target: one-record p50 within 3x of /health's p50 (the floor: HTTP, Flask, client).
2. POST /prediction with the 10,000-row dataset_path;
   target: p50 within 10x of the one-record p50.
3. One-record throughput with --clients concurrent clients (one requests.Session each).

The client runs on the same machine, so its own cost is in every figure.
Usage: .venv/bin/python bench/bench_api.py [--requests 400] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import common  # noqa: E402
import datagen  # noqa: E402

ONE_RECORD = {
    "records": [
        {
            "corporation": "abcd",
            "lastmonth_activity": 120.0,
            "lastyear_activity": 2400.0,
            "number_of_employees": 35.0,
        }
    ]
}
BIG_DATASET = "testdata/clients10000.csv"


def make_workspace(root: Path, rows: int) -> common.Config:
    """Practice data, test data and a rows-row dataset in the test data folder; deployed."""
    import deployment
    import ingestion
    import scoring
    import training

    loaded = common.load_config(datagen.write_workspace(root, 10_000, 2_000))
    datagen.generate(rows, seed=5).drop(columns=[common.TARGET]).to_csv(
        root / BIG_DATASET, index=False
    )
    ingestion.run(loaded)
    training.run(loaded)
    scoring.run(loaded)
    deployment.run(loaded)
    return loaded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(config: common.Config, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, common.CONFIG_ENV_VAR: str(config.path)}
    env.pop(common.API_TOKEN_ENV_VAR, None)
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--no-control-socket",
                "wsgi:app",
            ],
            cwd=PROJECT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def wait_until_up(url: str, server: subprocess.Popen, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {server.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer /health within {limit_s:g} s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def describe(name: str, seconds: list[float]) -> str:
    return (
        f"{name:36s} n={len(seconds):5d}  p50 {percentile(seconds, 0.5) * 1000:8.2f} ms"
        f"  p99 {percentile(seconds, 0.99) * 1000:8.2f} ms"
    )


def timed_series(
    calls: dict[str, Callable[[], requests.Response]], count: int, seconds: float
) -> dict[str, list[float]]:
    """Call each of calls in turn, count rounds at most and for seconds at most; latencies."""
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        for name, call in calls.items():
            started = time.perf_counter()
            response = call()
            latencies[name].append(time.perf_counter() - started)
            response.raise_for_status()
    return latencies


def throughput(url: str, clients: int, count: int, seconds: float) -> tuple[float, list[float]]:
    """Requests per second of one-record /prediction from `clients` threads; their latencies."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal issued
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= count:
                        return
                    issued += 1
                started = time.perf_counter()
                response = session.post(f"{url}/prediction", json=ONE_RECORD, timeout=30)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if not response.ok:
                        failures.append(str(response.status_code))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} failed requests under load, e.g. HTTP {failures[0]}")
    return len(latencies) / elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="rounds of series 1")
    parser.add_argument("--big-requests", type=int, default=60, help="requests of series 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound of each series")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (series 3)")
    parser.add_argument("--load-requests", type=int, default=2_000, help="requests of series 3")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the big dataset")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        config = make_workspace(Path(tmp) / "workspace", args.rows)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "gunicorn.log"
        server = start_gunicorn(config, port, args.workers, log)
        try:
            wait_until_up(url, server)
            with requests.Session() as session:

                def health() -> requests.Response:
                    return session.get(f"{url}/health", timeout=30)

                def one() -> requests.Response:
                    return session.post(f"{url}/prediction", json=ONE_RECORD, timeout=30)

                def big() -> requests.Response:
                    return session.post(
                        f"{url}/prediction", json={"dataset_path": BIG_DATASET}, timeout=30
                    )

                # Warm-up: every worker imports pandas and scikit-learn and loads the model.
                timed_series({"health": health, "one": one, "big": big}, 20, args.seconds)
                small = timed_series({"health": health, "one": one}, args.requests, args.seconds)
                large = timed_series({"big": big}, args.big_requests, args.seconds)
                rows = len(big().json()["predictions"])
            rate, loaded = throughput(url, args.clients, args.load_requests, args.seconds)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    health_p50 = percentile(small["health"], 0.5)
    one_p50 = percentile(small["one"], 0.5)
    big_p50 = percentile(large["big"], 0.5)
    print(
        f"gunicorn --workers {args.workers} --worker-class gthread --threads 8, "
        f"client on the same machine ({os.cpu_count()} cores)"
    )
    print(describe("GET /health (floor)", small["health"]))
    print(describe("POST /prediction, 1 record", small["one"]))
    print(describe(f"POST /prediction, {rows}-row dataset", large["big"]))
    print(describe(f"1 record under load, {args.clients} clients", loaded))
    print(f"throughput, 1 record, {args.clients} clients: {rate:8.1f} requests/s")
    one_ratio, big_ratio = one_p50 / health_p50, big_p50 / one_p50
    print(f"1-record p50 / health p50   {one_ratio:5.2f}x (target <= 3x)")
    print(f"{rows}-row p50 / 1-record p50 {big_ratio:5.2f}x (target <= 10x)")
    return 0 if one_ratio <= 3 and big_ratio <= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
