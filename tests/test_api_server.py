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

import common
import deployment


def free_port() -> int:
    """A loopback port nobody listens on right now (gunicorn cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(config: common.Config, log: Path, **env: str) -> Iterator[str]:
    """Serve wsgi:app with one gunicorn worker; yields its URL once /health answers."""
    port = free_port()
    environment = {**os.environ, common.CONFIG_ENV_VAR: str(config.path), **env}
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--no-control-socket",
                "wsgi:app",
            ],
            cwd=PROJECT,
            env=environment,
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
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_gunicorn_serves_the_api_with_config_from_the_environment(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = deployment.current_release(config.deployment_folder)
    assert release is not None
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with gunicorn(config, tmp_path / "gunicorn.log", **{common.API_TOKEN_ENV_VAR: TOKEN}) as url:
        health = requests.get(f"{url}/health", timeout=10)
        assert health.json()["model"]["release_id"] == release.id

        answer = requests.post(
            f"{url}/prediction",
            json={"dataset_path": TEST_DATASET, "top": 3},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 200
        rows = len(common.read_dataset(config.test_data_path))
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
