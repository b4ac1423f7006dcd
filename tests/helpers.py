"""What the tests share: workspaces, deployed models, scripts run as cron runs them, servers."""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import strategies as st
from pypdf import PdfReader

import fullprocess
import ingestion
import scoring
import training
from drs import datagen, diagnosis, releases, riskhistory
from drs.cli import formatted
from drs.clients import ModelCache
from drs.config import (
    API_TOKEN_ENV_VAR,
    COLUMNS,
    CONFIG_ENV_VAR,
    FEATURES,
    ID_COLUMN,
    TARGET,
    Config,
    load_config,
)
from drs.files import KILL_AT_ENV_VAR
from drs.history import open_history
from drs.riskhistory import Event
from drs.runs import ScorePurpose
from drs.web import body, factory

PROJECT = Path(__file__).resolve().parent.parent


CONFIG = datagen.WORKSPACE_CONFIG


# A closed loopback port: no test (nor any script a test starts) asks the real package index.
OFFLINE_INDEX_URL = "http://127.0.0.1:9/pypi"


def make_workspace(root: Path, rows: int = 600, **extra_config: object) -> Path:
    """Write config.json and generated data (practice, drifted source, test) under root."""
    return datagen.write_workspace(root, rows, rows // 2, overlap=0.1, **extra_config)


def run_script(
    script: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one of the project's scripts from cwd (not the project): exit status, stdout, log.

    In this process, through the script's main(), unless process is True: a real process
    is for the contracts that need one (a bare environment, kills, exit codes under cron,
    a second process holding a lock). A kill point in env, or --log-file (which replaces
    the process's log handlers), always gets a process of its own.
    """
    if process or KILL_AT_ENV_VAR in (env or {}) or "--log-file" in args:
        return subprocess.run(
            [sys.executable, str(PROJECT / script), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return run_in_process(script, list(args), cwd, env or {})


def run_in_process(
    script: str, args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """main(args) of script with cwd, env and argv as a process would have them.

    The log goes to the captured stderr as configure_logging would format it there.
    """
    module = importlib.import_module(Path(script).stem)
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = formatted(logging.StreamHandler(stderr))
    root = logging.getLogger()
    saved_level, saved_cwd, saved_argv = root.level, os.getcwd(), sys.argv
    saved_env = {**os.environ}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = [str(PROJECT / script), *args]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = module.main(args)
            except SystemExit as exit_:  # argparse: --help, or a usage error
                status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.removeHandler(handler)
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(
        [script, *args], status, stdout.getvalue(), stderr.getvalue()
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """A script's failure as the user sees it: exit 1, nothing on stdout, one stderr line."""
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr


def pipeline_run(config_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """One fullprocess.py run in this process, its libraries already imported.

    (exit status, its outcome line). For the pipeline's decisions; the command-line
    contract is tested with real processes.
    """

    capsys.readouterr()
    status = fullprocess.run(load_config(config_path))
    return status, capsys.readouterr().out


def tick_with_details(config: Config, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    """One successful fullprocess.py run in this process: its stdout, and its "details:" lines.

    The details are what the log gave just before the outcome line (figures, reasons).
    """
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    keep, logger = Keep(), logging.getLogger("fullprocess")
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        capsys.readouterr()
        assert fullprocess.run(config) == 0, capsys.readouterr().out
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    return capsys.readouterr().out, [line for line in said if line.startswith("details: ")]


def finish_background_work(app: Any, timeout: float) -> None:
    """Wait up to timeout seconds for the app's diagnostics refresh, if one is running.

    A test's server then leaves no timing workspace or process behind when it stops.
    """
    app.extensions["risk"].refresher.wait(timeout)


TOKEN = "test-token-0123456789"


TEST_DATASET = "testdata/testdata.csv"


STUB_TIMINGS = {"ingestion.py": 0.25, "training.py": 0.5}


STUB_PACKAGES = [{"name": "flask", "installed": "3.1.3", "latest": "3.1.3"}]


def deploy_workspace(root: Path, rows: int = 600) -> Config:
    """A conftest workspace after ingestion, training, scoring and deployment."""
    config = load_config(make_workspace(root, rows))
    for step in (ingestion, training, scoring, releases):
        step.run(config)
    return config


RECORD = {"lastmonth_activity": 10, "lastyear_activity": 120, "number_of_employees": 5}


def add_a_year_of_scores(config: Config, every_minutes: int, f1: Callable[[int], float]) -> None:
    """A test score and a drift check every every_minutes over the past year, into the history.

    f1(minutes ago): the F1 recorded then.
    """
    with open_history(config) as history, history.transaction():
        history.execute_many(
            "INSERT INTO scores (recorded_at, f1, model_sha256, dataset, purpose, dataset_sha256) "
            "VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), ?, 'm', 'testdata.csv', ?, 'a')",
            (
                (f"-{minutes} minutes", f1(minutes), purpose.value)
                for minutes in range(0, 365 * 24 * 60, every_minutes)
                for purpose in (ScorePurpose.TEST, ScorePurpose.DRIFT_CHECK)
            ),
        )


def post(client: FlaskClient, body: Any, **headers: str) -> Any:
    return client.post("/prediction", json=body, headers=headers)


def make_app(config: Config, token: str | None = None) -> Flask:
    """create_app(config) with $DRS_API_TOKEN set to token (or unset) while it is built."""
    with pytest.MonkeyPatch.context() as patch:
        if token:
            patch.setenv(API_TOKEN_ENV_VAR, token)
        else:
            patch.delenv(API_TOKEN_ENV_VAR, raising=False)
        return factory.create_app(config)


def stub_slow_diagnostics(
    monkeypatch: pytest.MonkeyPatch,
    timings: Callable[..., Any] | None = None,
    packages: Callable[..., Any] | None = None,
) -> dict[str, int]:
    """Replace the two slow diagnostics (scripts, package index) by fast ones; counts calls."""

    calls = {"execution_time": 0, "outdated_packages_list": 0}

    def count(name: str, answer: Callable[..., Any]) -> Callable[..., Any]:
        def stub(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return answer()

        return stub

    monkeypatch.setattr(
        diagnosis, "execution_time", count("execution_time", timings or STUB_TIMINGS.copy)
    )
    monkeypatch.setattr(
        diagnosis,
        "outdated_packages_list",
        count("outdated_packages_list", packages or STUB_PACKAGES.copy),
    )
    return calls


def assert_error(response: Any, status: int, fragment: str = "") -> None:
    """A JSON {"error": "..."} with the status, naming fragment, and no traceback."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    assert fragment in body["error"]
    assert "Traceback" not in body["error"]


def free_port() -> int:
    """A loopback port nobody listens on right now (gunicorn cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_command(
    port: int, workers: int = 1, worker_class: str = "sync", threads: int = 1
) -> list[str]:
    """The gunicorn command line for wsgi:app on a loopback port (as README.md runs it)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        "--no-control-socket",
        "wsgi:app",
    ]


def gunicorn_environment(config: Config, env: dict[str, str]) -> dict[str, str]:
    """The server's environment: ours, the config named by $DRS_CONFIG, and env on top."""
    return {**os.environ, CONFIG_ENV_VAR: str(config.path), **env}


# How long one poll of a starting server waits for its answer; the whole wait is bounded
# by a deadline. Under load a first answer can take seconds: that is no failure.
POLL_TIMEOUT_S = 10


@contextmanager
def gunicorn(
    config: Config,
    log: Path,
    *,
    workers: int = 1,
    worker_class: str = "sync",
    threads: int = 1,
    **env: str,
) -> Iterator[str]:
    """Serve wsgi:app under gunicorn for the block; yields its URL once /health answers.

    One sync worker unless told otherwise; the server is stopped when the block ends.
    """
    port = free_port()
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            gunicorn_command(port, workers, worker_class, threads),
            cwd=PROJECT,
            env=gunicorn_environment(config, env),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"gunicorn exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no /health answer: {log.read_text()}"
            try:
                if requests.get(f"{url}/health", timeout=POLL_TIMEOUT_S).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # a busy machine is slow
                time.sleep(0.1)
        yield url
    finally:
        stop(server)


def gunicorn_refusal(config: Config, log: Path, **env: str) -> int | None:
    """Start gunicorn expecting it to refuse to serve: its exit status once it has stopped.

    A worker that cannot build the app makes the master give up ("Worker failed to
    boot"); the log says why. None (the server stopped again) when it serves instead.
    """
    port = free_port()
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            gunicorn_command(port),
            cwd=PROJECT,
            env=gunicorn_environment(config, env),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None:
            assert time.monotonic() < deadline, f"gunicorn neither served nor stopped: {log}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=POLL_TIMEOUT_S).ok:
                    return None
            except (requests.ConnectionError, requests.Timeout):  # a busy machine is slow
                time.sleep(0.1)
        return server.returncode
    finally:
        stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server we started: SIGTERM (graceful), SIGKILL after 20 s."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def deploy(config: Config) -> releases.Release:
    for step in (ingestion, training, scoring):
        step.run(config)
    return releases.run(config)


def scaled_pipeline() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("minmax", MinMaxScaler()),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression()),
        ]
    )


def fitted(model: Any) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(4)
    features = rng.gamma(2.0, 300.0, size=(400, 3))
    labels = (features[:, 0] < 400).astype(int)
    features[rng.random(features.shape) < 0.05] = np.nan
    model.fit(pd.DataFrame(features, columns=list(FEATURES)), labels)
    return model, features


# Ids ingestion accepts that a URL path mangles: dot segments, slashes, line breaks, ...
ODD_IDS = [
    "..",
    ".",
    "...",
    "ü/../x",
    "x",
    "/lead",
    "lead",
    "line\nbreak",
    "a//b",
    "a/",
    "%2F",
    "%2e%2e",
    "?q=1#f",
    " spaced ",
    "back\\slash",
    "+plus",
    "tab\there",
    "by-id",
    "\u2028sep",
]


def add_odd_clients(config: Config) -> None:
    """An input file whose clients have ODD_IDS, written before ingestion."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for n, name in enumerate(ODD_IDS):
        writer.writerow([name, 10 + n, 100 + n, 5 + n, 0])
    (config.input_folder / "dataset9.csv").write_text(buffer.getvalue(), encoding="utf-8")


def odd_workspace(root: Path, rows: int = 300) -> Config:
    """A deployed workspace whose current clients include every id of ODD_IDS."""
    config = load_config(make_workspace(root, rows))
    add_odd_clients(config)
    deploy(config)
    return config


def pdf_text(path: Path) -> str:
    """The text of every page, with runs of white space (wrapped lines too) as one space."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split())


def switch_to_source(config_path: Path) -> None:
    """What going live means: read sourcedata, write models."""
    raw = json.loads(config_path.read_text())
    raw.update(input_folder_path="sourcedata", output_model_path="models")
    config_path.write_text(json.dumps(raw))


# Hypothesis strategies for request bodies, valid and not: what the API's fuzz tests send.
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
FEATURE_VALUES = (
    st.none()
    | st.integers(min_value=-3, max_value=10**7)
    | st.floats(min_value=0, max_value=1e9)
    | st.floats()  # NaN and infinities too: the encoder writes them as bare words
    | JSON_VALUES
)
ANY_RECORD = st.dictionaries(
    st.sampled_from([*FEATURES, ID_COLUMN, TARGET]) | st.text(max_size=5),
    FEATURE_VALUES,
    max_size=6,
)
GOOD_RECORD = st.fixed_dictionaries(
    {column: st.none() | st.integers(0, 10**6) | st.floats(0, 1e6) for column in FEATURES},
    optional={ID_COLUMN: st.none() | st.text(max_size=6) | JSON_VALUES},
)
TOPS = st.integers(min_value=-2, max_value=8) | JSON_VALUES
PATHS = (
    st.sampled_from(
        [
            TEST_DATASET,
            "testdata/alias.csv",
            "testdata/escape.csv",
            "testdata/nocount.csv",
            "../",
            "/etc/passwd",
            "practicedata/../config.json",
        ]
    )
    | st.text(max_size=30)
    | JSON_VALUES
)
BODIES = (
    JSON_VALUES
    | st.dictionaries(
        st.sampled_from(body.BODY_FIELDS) | st.text(max_size=8), JSON_VALUES, max_size=4
    )
    | st.fixed_dictionaries(
        {"records": st.lists(ANY_RECORD | GOOD_RECORD, max_size=5) | JSON_VALUES},
        optional={"top": TOPS},
    )
    | st.fixed_dictionaries({"dataset_path": PATHS}, optional={"top": TOPS})
)


# The run history of the second round's code (sample data, a drift and a retrain), as SQL.
ROUND_TWO_DUMP = Path(__file__).resolve().parent / "data" / "history-round2.sql"


def earlier_scoring(config: Config, when: str, leaver: str = "gone-now") -> list[str]:
    """Record a scoring before the live one: risks moved, two clients since departed.

    Returns the ids of the clients whose risk was moved (every fifth, lowered by 0.3).
    """
    book = ModelCache(config).book()
    real = riskhistory.scored_from_book(book)
    moved = list(real.corporations[::5])
    risks_then = [
        max(0.0, risk - 0.3) if name in moved else risk
        for name, risk in zip(real.corporations, real.risks, strict=True)
    ]
    earlier = real._replace(
        release_id="an-older-release",
        corporations=[*real.corporations, leaver, "vanished"],
        risks=[*risks_then, 0.9, 0.1],
        bands=[*(book.bands.of(r) for r in risks_then), "high", "low"],
        rows=[*real.rows, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)],
    )
    with open_history(config) as history:
        riskhistory.record(history, earlier, when)
    return moved


def recount_lift(history: Any) -> list[tuple[int, int, int, int]]:
    """(clients, high, left since, high left since) at each scoring, from the client rows."""
    rows = history.rows("SELECT * FROM client_risks ORDER BY scoring_id, id")
    by_client: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_client.setdefault(row["corporation"], []).append(row)
    counted = []
    for recorded in riskhistory.scorings(history):
        k = recorded["id"]
        clients = high = left = high_left = 0
        for records in by_client.values():
            past = [r for r in records if r["scoring_id"] <= k]
            if not past or past[-1]["event"] != Event.SCORED:
                continue
            clients += 1
            is_high = past[-1]["band"] == "high"
            high += is_high
            after = [r for r in records if r["scoring_id"] > k and r["event"] != Event.SCORED]
            if after and after[0]["event"] == Event.LEFT:
                left += 1
                high_left += is_high
        counted.append((clients, high, left, high_left))
    return counted


HEADER = ",".join(COLUMNS)


def change_config(root: Path, **changes: object) -> Path:
    """A config.json under root: the workspace folders with changes."""
    raw = {**json.loads((root / "config.json").read_text()), **changes}
    path = root / "config.json"
    path.write_text(json.dumps(raw))
    return path


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under root with its bytes (link target for symlinks)."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = os.readlink(path)
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def dead_pid() -> int:
    """The PID of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def fake_sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def with_history_locked(
    history_path: Path, module: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run module's main(args) as a process while another connection holds the history.

    The process waits 0.2 s for it (not the 30 s a real run would).
    """
    holder = sqlite3.connect(history_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    code = (
        f"import sys, drs.history; drs.history.HISTORY_BUSY_S = 0.2; import {module}; "
        f"sys.exit({module}.main(sys.argv[1:]))"
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def host_port(url: str) -> tuple[str, int]:
    """The address of a loopback server's URL, for raw sockets."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


# What the cron-command-line tests record: each alert command's input, then this line.
ALERT_SEPARATOR = "=====\n"


def page_one(path: Path) -> str:
    """The report's first page as one line of text."""
    return " ".join(PdfReader(path).pages[0].extract_text().split())


class CronWorkspace:
    """A throw-away checkout run by cron's command line, with an alert command that records."""

    def __init__(self, root: Path) -> None:
        self.config_path = make_workspace(root, rows=1000)
        self.alerts = root / "alerts.txt"
        self.log = root / "logs" / "fullprocess.log"
        self.set(
            alert_command=f'cat >> "{self.alerts}" && printf "{ALERT_SEPARATOR}" >> "{self.alerts}"'
        )

    def set(self, **changes: object) -> None:
        change_config(self.config_path.parent, **changes)

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def tick(self) -> tuple[int, str]:
        """One cron run: (exit status, the log's last line)."""
        result = run_script(
            "fullprocess.py",
            "--config",
            str(self.config_path),
            "--log-file",
            str(self.log),
            cwd=self.config_path.parent.parent,
        )
        assert result.stderr == "", result.stderr
        last = self.log.read_text().splitlines()[-1]
        assert result.stdout.splitlines()[-1] in last
        return result.returncode, last

    def alerts_received(self) -> list[tuple[str, dict[str, Any]]]:
        """Each alert the command got: its first line and its JSON payload."""
        if not self.alerts.exists():
            return []
        blocks = self.alerts.read_text().split(ALERT_SEPARATOR)[:-1]
        return [(block.split("\n", 1)[0], json.loads(block.split("\n", 1)[1])) for block in blocks]
