"""wsgi.py under gunicorn, as production runs it: real processes, real HTTP on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from conftest import PROJECT
from test_app import TEST_DATASET, TOKEN, deploy_workspace

from drs import releases
from drs.config import API_TOKEN_ENV_VAR, CONFIG_ENV_VAR, Config
from drs.datarules import read_dataset


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
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
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
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    return None
            except requests.ConnectionError:
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


def test_gunicorn_serves_the_api_with_config_from_the_environment(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with gunicorn(config, tmp_path / "gunicorn.log", **{API_TOKEN_ENV_VAR: TOKEN}) as url:
        health = requests.get(f"{url}/health", timeout=10)
        assert health.json()["model"]["release_id"] == release.id

        answer = requests.post(
            f"{url}/prediction",
            json={"dataset_path": TEST_DATASET, "top": 3},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 200
        rows = len(read_dataset(config.test_data_path))
        assert len(answer.json()["predictions"]) == rows
        assert len(answer.json()["top"]) == 3

        bad = requests.post(
            f"{url}/prediction",
            data=b'{"records": [',
            headers={**auth, "Content-Type": "application/json"},
            timeout=10,
        )
        assert (bad.status_code, list(bad.json())) == (400, ["error"])

        refused = requests.get(f"{url}/scoring", timeout=10)
        assert refused.status_code == 401
        assert "error" in refused.json()
        assert requests.get(f"{url}/scoring", headers=auth, timeout=30).json()["release_id"] == (
            release.id
        )
