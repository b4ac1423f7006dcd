"""Benchmark the risk service under gunicorn, as the README's production command runs it.

In a temporary workspace with 10,000 ingested clients, a deployed model and a
10,000-row dataset in a data folder, gunicorn serves wsgi:app with 2 workers of 8
threads on a free loopback port. Measured, each series bounded in count and in time,
every figure beside its baseline from the same run:

1. Interleaved, one client: GET /health (the floor: HTTP, Flask, the client itself),
   POST /prediction with one record, GET /clients?top=20, GET / (the page).
2. POST /prediction with the 10,000-row dataset_path (served from the cache).
3. Throughput with --clients concurrent clients: /health and one-record /prediction in
   alternating rounds, the median round of each.
4. The gunicorn workers' memory (resident set) after the load.
5. The page in Chromium: bytes transferred (HTML, CSS, JS, icon) and the time from
   navigation to the ranked table being visible (skipped without /usr/bin/chromium).

Usage: .venv/bin/python bench/bench_api.py [--requests 400] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT), str(Path(__file__).resolve().parent)]

from drs import datagen  # noqa: E402
from drs.config import API_TOKEN_ENV_VAR, CONFIG_ENV_VAR, TARGET, Config, load_config  # noqa: E402

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
LOAD_ROUNDS = 5
# The README's production command, on a loopback port of the benchmark's choosing.
SERVER = ["--workers", "2", "--worker-class", "gthread", "--threads", "8"]


def make_workspace(root: Path, rows: int) -> Config:
    """10,000 clients ingested, a model deployed, and a rows-row dataset to score."""
    import ingestion
    import scoring
    import training
    from drs import releases

    loaded = load_config(datagen.write_workspace(root, 10_000, 2_000))
    datagen.generate(rows, seed=5).drop(columns=[TARGET]).to_csv(root / BIG_DATASET, index=False)
    for step in (ingestion, training, scoring, releases):
        step.run(loaded)
    return loaded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(config: Config, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, CONFIG_ENV_VAR: str(config.path)}
    env.pop(API_TOKEN_ENV_VAR, None)
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *SERVER]
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [*command, "--no-control-socket", "wsgi:app"],
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
        f"{name:38s} n={len(seconds):5d}  p50 {percentile(seconds, 0.5) * 1000:8.2f} ms"
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


def throughput(
    send: Callable[[requests.Session], requests.Response], clients: int, count: int, seconds: float
) -> float:
    """Requests per second from `clients` threads (one session each), count requests at most."""
    lock = threading.Lock()
    issued = 0
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
                response = send(session)
                if not response.ok:
                    with lock:
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
    return issued / elapsed


def worker_memory_mib(master: int) -> list[float]:
    """Resident memory of each gunicorn worker (the master's children), in MiB."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    sizes = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def page_in_chromium(url: str, loads: int) -> tuple[int, list[float]] | None:
    """(bytes the page transfers, seconds from navigation to the table visible), or None."""
    import browser

    if not browser.CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = browser.launch(driver)
        transferred = 0
        seconds = []
        for load in range(loads + 1):
            context = chromium.new_context()
            page = context.new_page()
            sizes: list[int] = []
            page.on("response", lambda response, sizes=sizes: sizes.append(len(response.body())))
            started = time.perf_counter()
            page.goto(url, wait_until="commit")
            page.wait_for_selector("#clients tbody tr", state="visible")
            elapsed = time.perf_counter() - started
            page.wait_for_load_state("networkidle")
            context.close()
            if load:  # the first load warms the server up
                seconds.append(elapsed)
                transferred = sum(sizes)
        chromium.close()
    return transferred, seconds


def measure(args: argparse.Namespace) -> dict:
    """Serve a fresh workspace under gunicorn and take every figure; returns them by name."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        config = make_workspace(Path(tmp) / "workspace", args.rows)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_gunicorn(config, port, Path(tmp) / "gunicorn.log")
        try:
            wait_until_up(url, server)
            with requests.Session() as session:
                calls = {
                    "health": lambda: session.get(f"{url}/health", timeout=30),
                    "one": lambda: session.post(f"{url}/prediction", json=ONE_RECORD, timeout=30),
                    "clients": lambda: session.get(f"{url}/clients?top=20", timeout=30),
                    "page": lambda: session.get(f"{url}/", timeout=30),
                }

                def big() -> requests.Response:
                    return session.post(
                        f"{url}/prediction", json={"dataset_path": BIG_DATASET}, timeout=30
                    )

                # Older versions of the service lack some endpoints: measure what is there.
                calls = {name: call for name, call in calls.items() if call().status_code != 404}
                # Warm-up: every worker imports the libraries, loads the model, scores the
                # clients once and reads the big dataset once.
                timed_series({**calls, "big": big}, 30, args.seconds)
                small = timed_series(calls, args.requests, args.seconds)
                large = timed_series({"big": big}, args.big_requests, args.seconds)
                rows = len(big().json()["predictions"])

            def load(send: Callable[[requests.Session], requests.Response]) -> float:
                rounds = LOAD_ROUNDS
                return throughput(
                    send, args.clients, args.load_requests // rounds, args.seconds / rounds
                )

            # Alternating rounds, so a slow moment of the machine hits both alike.
            rates: dict[str, list[float]] = {"health": [], "one": []}
            for _ in range(LOAD_ROUNDS):
                rates["health"].append(load(lambda s: s.get(f"{url}/health", timeout=30)))
                rates["one"].append(
                    load(lambda s: s.post(f"{url}/prediction", json=ONE_RECORD, timeout=30))
                )
            health_rate = statistics.median(rates["health"])
            one_rate = statistics.median(rates["one"])
            memory = worker_memory_mib(server.pid)
            page = page_in_chromium(url, args.page_loads) if "page" in small else None
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {
        "small": small,
        "large": large["big"],
        "rows": rows,
        "rates": (health_rate, one_rate),
        "memory": memory,
        "page": page,
    }


def report(figures: dict, clients: int) -> bool:
    """Print every figure and each target's verdict; True when all are met."""
    small, rows = figures["small"], figures["rows"]
    health_rate, one_rate = figures["rates"]
    p50 = {name: percentile(values, 0.5) for name, values in small.items()}
    big_p50 = percentile(figures["large"], 0.5)
    print(f"gunicorn {' '.join(SERVER)}, client on the same machine ({os.cpu_count()} cores)")
    print(describe("GET /health (floor)", small["health"]))
    print(describe("POST /prediction, 1 record", small["one"]))
    print(describe(f"POST /prediction, {rows}-row dataset", figures["large"]))
    for name, title in (("clients", "GET /clients?top=20"), ("page", "GET / (the page)")):
        if name in small:
            print(describe(title, small[name]))
    print(
        f"throughput, {clients} clients: /health {health_rate:7.1f} req/s, "
        f"1-record /prediction {one_rate:7.1f} req/s"
    )
    print(f"worker memory (RSS): {', '.join(f'{m:.1f} MiB' for m in figures['memory'])}")
    checks = [
        ("1-record throughput / /health throughput", one_rate / health_rate, ">=", 0.9),
        ("1-record p50 / /health p50", p50["one"] / p50["health"], "<=", 1.5),
        (f"{rows}-row p50 / 1-record p50", big_p50 / p50["one"], "<=", 2.0),
        *(
            (f"{title} p50 / /health p50", p50[name] / p50["health"], "<=", target)
            for name, title, target in (("clients", "/clients?top=20", 3.0), ("page", "page", 5.0))
            if name in p50
        ),
    ]
    if figures["page"] is not None:
        transferred, seconds = figures["page"]
        print(
            f"page in Chromium: {transferred / 1024:.1f} KiB transferred; navigation to "
            f"table visible median {statistics.median(seconds) * 1000:.0f} ms "
            f"(min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f})"
        )
        checks.append(("page transfer, KB", transferred / 1000, "<=", 150.0))
    else:
        print("page in Chromium: skipped (no page in this version, or no /usr/bin/chromium)")
    met = True
    for name, value, way, target in checks:
        ok = value >= target if way == ">=" else value <= target
        met &= ok
        print(f"{name:44s} {value:7.2f} (target {way} {target:g}: {'met' if ok else 'NOT met'})")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="rounds of series 1")
    parser.add_argument("--big-requests", type=int, default=60, help="requests of series 2")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound of each series")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (series 3)")
    parser.add_argument("--load-requests", type=int, default=3_000, help="requests of series 3")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the big dataset")
    parser.add_argument("--page-loads", type=int, default=5, help="page loads in Chromium")
    args = parser.parse_args()
    return 0 if report(measure(args), args.clients) else 1


if __name__ == "__main__":
    raise SystemExit(main())
