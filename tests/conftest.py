"""A throw-away workspace for every test: config.json and small generated data under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drs import datagen, diagnosis
from drs.config import Config, load_config

PROJECT = Path(__file__).resolve().parent.parent

CONFIG = datagen.WORKSPACE_CONFIG

# A closed loopback port: no test (nor any script a test starts) asks the real package index.
OFFLINE_INDEX_URL = "http://127.0.0.1:9/pypi"


@pytest.fixture(autouse=True, scope="session")
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No package index, and temporary files (of scripts too) under pytest's own folder."""
    scratch = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(diagnosis.PACKAGE_INDEX_ENV_VAR, OFFLINE_INDEX_URL)
        patch.setenv("TMPDIR", str(scratch))
        patch.setattr(tempfile, "tempdir", str(scratch))
        yield


def make_workspace(root: Path, rows: int = 600, **extra_config: object) -> Path:
    """Write config.json and generated data (practice, drifted source, test) under root."""
    return datagen.write_workspace(root, rows, rows // 2, overlap=0.1, **extra_config)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """Path of a fresh workspace's config.json (nothing ingested or deployed yet)."""
    return make_workspace(tmp_path / "workspace")


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


def run_script(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one of the project's scripts as a real process, from cwd (not the project)."""
    return subprocess.run(
        [sys.executable, str(PROJECT / script), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
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
    import fullprocess

    capsys.readouterr()
    status = fullprocess.run(load_config(config_path))
    return status, capsys.readouterr().out


def finish_background_work(app: Any, timeout: float) -> None:
    """Wait up to timeout seconds for the app's diagnostics refresh, if one is running.

    A test's server then leaves no timing workspace or process behind when it stops.
    """
    app.extensions["risk"].refresher.wait(timeout)
