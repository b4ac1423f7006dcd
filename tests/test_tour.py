"""The README's tour, run exactly as written in a copy of the checkout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PROJECT

from drs import releases
from drs.config import load_config

TOUR = re.compile(r"<!-- tour:start -->(.*?)<!-- tour:end -->", re.DOTALL)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
# What the checkout holds besides the sources: outputs of earlier runs, caches, the venv.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "ingesteddata",
    "practicemodels",
    "models",
    "production_deployment",
    "history.sqlite*",
    "logs",
    "api.pid",
)
TOUR_PORT = 8000


def tour_script() -> str:
    [tour] = TOUR.findall((PROJECT / "README.md").read_text())
    blocks = BASH_BLOCK.findall(tour)
    assert len(blocks) == 2, "the tour is two bash blocks"
    return "".join(blocks)


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop_server(pid_file: Path) -> None:
    """Kill the tour's gunicorn if the tour did not get as far as its own kill line."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)


def port_closes(port: int, within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while port_in_use(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_readme_tour_gives_every_file_it_promises(tmp_path: Path) -> None:
    if port_in_use(TOUR_PORT):
        pytest.skip(f"port {TOUR_PORT}, which the tour uses, is taken on this machine")
    checkout = tmp_path / "checkout"
    shutil.copytree(PROJECT, checkout, ignore=NOT_COPIED)
    (checkout / ".venv").symlink_to(sys.prefix)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", tour_script()],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        stop_server(checkout / "api.pid")
    assert result.returncode == 0, result.stderr[-3000:]

    practice_models = checkout / "practicemodels"
    for name in ("confusionmatrix.png", "report.pdf", "apireturns.txt", "diagnostics.json"):
        assert (practice_models / name).stat().st_size > 0, name
    manual = json.loads((practice_models / "apireturns.txt").read_text())
    assert manual["api_url"] == f"http://127.0.0.1:{TOUR_PORT}"
    practice_release = manual["scoring"]["release_id"]

    redeployed = re.search(
        r"^[A-Z]+: model drift found, retrained and redeployed: release (\S+) replaces \S+;",
        result.stdout,
        re.M,
    )
    assert redeployed, result.stdout
    config = load_config(checkout / "config.json")
    assert config.input_folder == checkout / "sourcedata"
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    assert release.id == redeployed.group(1) != practice_release
    assert release.ingested_files() == ["dataset3.csv", "dataset4.csv"]
    listed = result.stdout.split()
    for name in ("confusionmatrix2.png", "apireturns2.txt", "report2.pdf"):
        assert (checkout / "models" / name).stat().st_size > 0, name
        assert name in listed
    returns = json.loads((checkout / "models" / "apireturns2.txt").read_text())
    assert returns["api_url"] == f"http://127.0.0.1:{TOUR_PORT}", "the running API served them"
    assert returns["scoring"]["release_id"] == release.id
    assert not (checkout / "models" / "confusionmatrix.png").exists()
    assert port_closes(TOUR_PORT), "the tour stops its server"


def test_the_readme_installs_the_cron_job_once_however_often_it_is_run(tmp_path: Path) -> None:
    [install] = [
        block
        for block in BASH_BLOCK.findall((PROJECT / "README.md").read_text())
        if "cronjob.txt" in block and "crontab -" in block
    ]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    crontab_file = tmp_path / "crontab.txt"
    crontab_file.write_text("0 3 * * * /usr/local/bin/backup\n")
    (fake_bin / "crontab").write_text(
        # What crontab -l and crontab - do, on a file instead of the spool; like the real
        # one it installs a new table whole, after reading it (cat > file would race -l).
        "#!/bin/sh\n"
        f'if [ "$1" = "-l" ]; then cat "{crontab_file}"; '
        f'else cat > "{crontab_file}.new" && mv "{crontab_file}.new" "{crontab_file}"; fi\n'
    )
    (fake_bin / "crontab").chmod(0o755)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(PROJECT / "cronjob.txt", checkout)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    for _ in range(2):
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", install], cwd=checkout, env=env, check=True
        )
    lines = crontab_file.read_text().splitlines()
    assert lines[0] == "0 3 * * * /usr/local/bin/backup"
    [job] = lines[1:]
    assert job.startswith(
        f'*/10 * * * * mkdir -p "{checkout}/logs" && "{checkout}/.venv/bin/python"'
    )
    assert "@" not in job
