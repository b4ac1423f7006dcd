"""Benchmark a year of cron: a history of 50,000 runs and an input folder of 50,000 files.

Cron runs fullprocess.py every ten minutes: 52,560 times a year. This builds, in a
temporary folder, a workspace as it is today (the shipped sample data and a few real
runs) and measures it, then grows it to a year's size and measures the same things
again, each figure beside its baseline from the same run:

- the no-op tick (fullprocess.py with no new data, as cron runs it), median of a few;
- a data run with one new small file, and the first data run over all the small files;
- the page (GET / on gunicorn): the first request after the history grew, the median
  of 20 warm requests and its size; a client page; GET /diagnostics;
- the history database's size (with its write-ahead log), and how much of it is in use.

The year is built quickly: a few real fullprocess.py runs make the history's rows,
which are then copied in SQL, in one transaction, with their time stamps moved back
ten minutes a run (so the year ends now), until the history holds --runs runs; the
input folder gets --files small files of a few rows each (updates of the same
clients), arriving over the past year. Any measurement may be capped (--cap): a
figure that would take longer is shown as "> N s". When the data run over the new
files does not finish within the cap, its files are marked processed in the history
directly (as that run would have), so the later figures measure a processed folder.

--project chooses which checkout's scripts are measured (default: this one), so the
same benchmark measures an older checkout for a before-and-after table.

Usage: .venv/bin/python bench/bench_year.py [--project PATH] [--runs 50000] [--files 50000]
       [--cap 120]
Everything happens in a temporary folder; the server binds 127.0.0.1; it stops every
process it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import requests

HERE = Path(__file__).resolve().parent.parent
RUN_SPACING_S = 600  # cron's ten minutes
ROWS_PER_SMALL_FILE = 4
WARM_REQUESTS = 20
TICK_REPEATS = 7
MEASURE_BUDGET_S = 60.0  # repeated measurements stop early past this much time in all
SERVER_START_S = 120.0
ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONDONTWRITEBYTECODE", "DRS_CONFIG", "DRS_API_TOKEN"}
    },
    # No package index is asked during the benchmark.
    "DRS_PACKAGE_INDEX_URL": "http://127.0.0.1:9/pypi",
}


# The table's rows, by what they measure.
ORDER = ("no-op tick", "data run", "page /", "client page", "/diagnostics", "history database")


class Figure(NamedTuple):
    """A measured figure: its value (None when capped) and how it is shown."""

    value: float | None
    text: str


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def capped(cap: float) -> Figure:
    return Figure(None, f"> {cap:g} s")


def seconds(value: float) -> Figure:
    return Figure(value, f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s")


def size(value: int) -> Figure:
    return Figure(
        float(value), f"{value / 1e6:.1f} MB" if value >= 1e6 else f"{value / 1e3:.0f} KB"
    )


# CPU seconds (user and system) of the last command run_timed ran: on a shared machine the
# wall-clock time also counts the time it waited for a core.
last_cpu_s = [0.0]


def run_timed(command: list[str], cwd: Path, cap: float) -> float | None:
    """Seconds command took, None when it was stopped at cap (its whole process group)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, errors = process.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu_s[0] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if process.returncode not in (0, 2):
        tail = errors.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {tail}")
    return took


def repeated(measure: Callable[[], float | None], cap: float, times: int) -> Figure:
    """The median of up to `times` measurements; fewer when they use up MEASURE_BUDGET_S."""
    taken: list[float] = []
    spent = time.perf_counter()
    for _ in range(times):
        took = measure()
        if took is None:
            return capped(cap) if not taken else _median(taken, times)
        taken.append(took)
        if time.perf_counter() - spent > MEASURE_BUDGET_S:
            break
    return _median(taken, times)


def _median(taken: list[float], times: int) -> Figure:
    figure = seconds(statistics.median(taken))
    if len(taken) < times:
        return Figure(figure.value, f"{figure.text} ({len(taken)} of {times})")
    return figure


class Workspace:
    """The temporary project: config, folders, and how to run the measured scripts in it."""

    def __init__(self, project: Path, root: Path, cap: float) -> None:
        self.project = project
        self.root = root
        self.cap = cap
        self.input = root / "practicedata"
        self.config = root / "config.json"
        self.log = root / "logs" / "fullprocess.log"
        self.history = root / "history.sqlite"
        for folder in ("practicedata", "testdata"):
            shutil.copytree(project / folder, root / folder)
        self.config.write_text(
            json.dumps(
                {
                    "input_folder_path": "practicedata",
                    "output_folder_path": "ingesteddata",
                    "test_data_path": "testdata",
                    "output_model_path": "practicemodels",
                    "prod_deployment_path": "production_deployment",
                    # A closed port: each data run serves its API calls itself.
                    "api_url": "http://127.0.0.1:9",
                },
                indent=2,
            )
        )
        with open(self.input / sorted(os.listdir(self.input))[0], newline="") as handle:
            self.sample_rows = list(csv.DictReader(handle))
        self.rng = random.Random(17)
        self.small_files = 0

    def fullprocess(self) -> float | None:
        command = [sys.executable, str(self.project / "fullprocess.py")]
        command += ["--config", str(self.config), "--log-file", str(self.log)]
        return run_timed(command, self.root, self.cap)

    def outcome(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-1][:160]

    def write_small_files(self, count: int, arrived_from: float, arrived_to: float) -> None:
        """count small CSVs (a few updated rows of known clients), arriving between the times."""
        columns = list(self.sample_rows[0])
        for index in range(count):
            self.small_files += 1
            path = self.input / f"update{self.small_files:06d}.csv"
            lines = [",".join(columns)]
            for _ in range(ROWS_PER_SMALL_FILE):
                row = dict(self.rng.choice(self.sample_rows))
                if row["lastmonth_activity"]:
                    row["lastmonth_activity"] = str(
                        round(float(row["lastmonth_activity"]) * self.rng.uniform(0.8, 1.2))
                    )
                lines.append(",".join(row[column] for column in columns))
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            when = arrived_from + (arrived_to - arrived_from) * index / max(count, 1)
            os.utime(path, (when, when))

    def runs(self) -> int:
        with contextlib.closing(sqlite3.connect(self.history)) as db:
            return db.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0]

    def files(self) -> int:
        return sum(1 for _ in self.input.glob("*.csv"))

    def database_in_use(self) -> Figure:
        """What the history holds: its pages less the free ones.

        The file gives free pages back to the file system a bounded number a day.
        """
        with contextlib.closing(sqlite3.connect(self.history)) as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            size_of_page = db.execute("PRAGMA page_size").fetchone()[0]
        return size((pages - free) * size_of_page)

    def database_size(self) -> Figure:
        total = sum(
            os.stat(f"{self.history}{suffix}").st_size
            for suffix in ("", "-wal")
            if os.path.exists(f"{self.history}{suffix}")
        )
        return size(total)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """gunicorn serving the measured project's wsgi:app on a free loopback port."""

    def __init__(self, space: Workspace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cap = space.cap
        # One worker, so "warm" means warm; the request timeout is the benchmark's cap.
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", "1", "--worker-class", "gthread", "--threads", "4"]
        command += ["--timeout", str(int(space.cap) + 30), "--chdir", str(space.project)]
        command += ["--no-control-socket", "wsgi:app"]
        self.process = subprocess.Popen(
            command,
            cwd=space.root,
            env={**ENV, "DRS_CONFIG": str(space.config)},
            stdout=subprocess.DEVNULL,
            stderr=open(space.root / "logs" / "gunicorn.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/health", timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not answer /health")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def get(self, path: str) -> tuple[float | None, bytes]:
        started = time.perf_counter()
        try:
            answer = requests.get(f"{self.url}{path}", timeout=self.cap)
        except requests.Timeout:
            return None, b""
        took = time.perf_counter() - started
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
        return took, answer.content

    def first_and_warm(self, path: str) -> tuple[Figure, Figure, int]:
        """The first request's time, the median of the warm ones, and the answer's size."""
        took, body = self.get(path)
        if took is None:
            return capped(self.cap), capped(self.cap), 0
        return (
            seconds(took),
            repeated(lambda: self.get(path)[0], self.cap, WARM_REQUESTS),
            len(body),
        )

    def a_client(self) -> str:
        _, body = self.get("/clients?top=1")
        return json.loads(body)["clients"][0]["corporation"]


def measure_server(space: Workspace) -> dict[str, Figure]:
    server = Server(space)
    try:
        figures: dict[str, Figure] = {}
        first, warm, length = server.first_and_warm("/")
        figures["page /: first request"] = first
        figures[f"page /: warm, median of {WARM_REQUESTS}"] = warm
        figures["page /: size"] = size(length) if length else capped(space.cap)
        from urllib.parse import quote

        client = quote(server.a_client(), safe="")
        first, warm, _ = server.first_and_warm(f"/client?id={client}")
        figures["client page: first request"] = first
        figures[f"client page: warm, median of {WARM_REQUESTS}"] = warm
        _, warm, _ = server.first_and_warm("/diagnostics")
        figures["/diagnostics: median"] = warm
        return figures
    finally:
        server.stop()


def mark_processed(space: Workspace) -> None:
    """What a finished data run records: every input file processed (as the history keeps it)."""
    with contextlib.closing(sqlite3.connect(space.history)) as db, db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(processed_files)")}
        if not {"folder", "name", "sha256", "processed_at"} <= columns:
            raise RuntimeError("the history has no processed_files table to mark the files in")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        folder = space.input.name
        db.execute("DELETE FROM processed_files WHERE folder = ?", (folder,))
        db.executemany(
            "INSERT INTO processed_files (folder, name, sha256, processed_at) VALUES (?, ?, ?, ?)",
            (
                (folder, path.name, hashlib.sha256(path.read_bytes()).hexdigest(), stamp)
                for path in sorted(space.input.glob("*.csv"))
            ),
        )


def replicate_history(path: Path, runs: int) -> tuple[int, list[str]]:
    """Copy the recorded runs' rows back in time until pipeline_runs holds about `runs` rows.

    Every table with an integer id and time stamps (columns ending in _at) is copied;
    copies get ids below the real rows' (negative ones), in time order, so the real
    runs stay the newest by id and by time. A reference to a copied table
    (pipeline_run_id, ...) follows its row into the copy. Tables keyed otherwise (the
    files processed, file checks) are left as they are, as are tables with many rows
    a run (per-client records), which a copy would not make realistic. Returns the
    number of runs and what was copied.
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        real_runs = db.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0]
        copies = max(0, math.ceil((runs - real_runs) / real_runs))
        shift = real_runs * RUN_SPACING_S
        tables = {}
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            info = db.execute(f"PRAGMA table_info({name})").fetchall()
            primary = [row[1] for row in info if row[5]]
            stamps = [row[1] for row in info if row[1].endswith("_at")]
            count = db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            if primary == ["id"] and stamps and count <= 50 * real_runs:
                tables[name] = [row[1] for row in info]
        spans = {
            name: db.execute(f"SELECT max(id) FROM {name}").fetchone()[0] or 0 for name in tables
        }
        copied = []
        db.execute("BEGIN")
        for name, columns in tables.items():
            values = []
            for column in columns:
                target = column.removesuffix("_id") + "s" if column.endswith("_id") else None
                if column == "id":
                    values.append(f"id - k * {spans[name]}")
                elif column.endswith("_at"):
                    values.append(
                        f"coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', {column}, "
                        f"'-' || (k * {shift}) || ' seconds'), {column})"
                    )
                elif target in tables:
                    values.append(f"{column} - k * {spans[target]}")
                else:
                    values.append(column)
            db.execute(
                f"WITH RECURSIVE copy(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM copy "
                f"WHERE k < {copies}) INSERT INTO {name} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM {name}, copy WHERE {name}.id > 0"
            )
            copied.append(name)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = db.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0]
    finally:
        db.close()
    return total, copied


def tick_floor(cwd: Path) -> Figure:
    return repeated(
        lambda: run_timed([sys.executable, "-c", "pass"], cwd, 30.0), 30.0, TICK_REPEATS
    )


def measure_ticks(space: Workspace) -> tuple[Figure, Figure]:
    """The no-op tick's wall-clock time and its CPU time (medians)."""
    cpu: list[float] = []

    def tick() -> float | None:
        took = space.fullprocess()
        cpu.append(last_cpu_s[0])
        return took

    wall = repeated(tick, space.cap, TICK_REPEATS)
    return wall, seconds(statistics.median(cpu)) if wall.value is not None else wall


def measure_today(space: Workspace, now: float) -> dict[str, Figure]:
    """A few real runs (the sample data, two drifted files, one small file); their figures."""
    figures: dict[str, Figure] = {}
    log(f"measuring {space.project}; today's workspace: a few real runs")
    for arrival in (None, "dataset3.csv", "dataset4.csv"):
        if arrival is not None:
            shutil.copy(space.project / "sourcedata" / arrival, space.input / arrival)
        if space.fullprocess() is None:
            raise RuntimeError(f"a real run took over {space.cap:g} s")
        log(f"  {space.outcome()}")
    space.write_small_files(1, now - 60, now - 60)
    took = space.fullprocess()
    log(f"  {space.outcome()}")
    figures["data run: 1 new small file"] = seconds(took) if took else capped(space.cap)
    figures["data run: all small files new"] = figures["data run: 1 new small file"]
    log("  no-op ticks")
    figures["no-op tick: median"], figures["no-op tick: CPU time, median"] = measure_ticks(space)
    figures.update(measure_server(space))
    figures["history database"] = space.database_size()
    figures["history database: in use"] = space.database_in_use()
    return figures


def measure_year(space: Workspace, runs: int, files: int, now: float) -> dict[str, Figure]:
    """Grow the workspace to a year's size, then measure it as today's was."""
    figures: dict[str, Figure] = {}
    log(f"growing: the history to {runs:,} runs, the input to {files:,} files")
    clock = time.perf_counter()
    total, copied = replicate_history(space.history, runs)
    log(f"  history: {total:,} runs ({', '.join(copied)}), {space.database_size().text}")
    space.write_small_files(files, now - 365 * 86400, now - 3600)
    log(f"  built in {time.perf_counter() - clock:.1f} s")
    for name, count in (
        ("data run: all small files new", files),
        ("data run: 1 new small file", 1),
    ):
        if count == 1:
            space.write_small_files(1, now - 30, now - 30)
        log(f"data run over {count:,} new small file(s)")
        took = space.fullprocess()
        if took is None:
            log("  stopped at the cap; marking the files processed in the history")
            mark_processed(space)
        else:
            log(f"  {space.outcome()}")
        figures[name] = seconds(took) if took else capped(space.cap)
    log("  no-op ticks")
    figures["no-op tick: median"], figures["no-op tick: CPU time, median"] = measure_ticks(space)
    log("  the server")
    figures.update(measure_server(space))
    figures["history database"] = space.database_size()
    figures["history database: in use"] = space.database_in_use()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=HERE, help="checkout whose scripts are measured"
    )
    parser.add_argument("--runs", type=int, default=50_000, help="runs in the year's history")
    parser.add_argument("--files", type=int, default=50_000, help="small files in the input")
    parser.add_argument(
        "--cap", type=float, default=120.0, help="seconds after which a measurement stops"
    )
    args = parser.parse_args()
    project = args.project.resolve()

    with tempfile.TemporaryDirectory(prefix="bench-year-") as tmp:
        ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        space = Workspace(project, Path(tmp) / "workspace", args.cap)
        (space.root / "logs").mkdir()
        now = time.time()
        today = measure_today(space, now)
        sizes = [f"today ({space.runs()} runs, {space.files()} files)"]
        year = measure_year(space, args.runs, args.files, now)
        sizes.append(f"a year ({space.runs():,} runs, {space.files():,} files)")
        floor = tick_floor(space.root)

    rows = [
        ("measure", *sizes, "year/today"),
        *(
            (name, today[name].text, year[name].text, ratio(today[name], year[name]))
            for name in sorted(today, key=lambda name: ORDER.index(name.split(":")[0]))
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"project: {project}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"python -c pass: {floor.text} (the floor of any tick)")
    print("today's 'all small files new' is its one-file run: today has one small file")
    return 0


def ratio(today: Figure, year: Figure) -> str:
    if today.value is None or not today.value:
        return ""
    if year.value is None:
        return f"> {float(year.text.split()[1]) / today.value:.0f}x"
    return f"{year.value / today.value:.1f}x"


if __name__ == "__main__":
    raise SystemExit(main())
