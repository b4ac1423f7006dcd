"""The command line contract of ingestion, training, scoring and deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIG, PROJECT, run_script

from drs import releases
from drs.config import load_config
from drs.files import read_score

SCRIPTS = ("ingestion.py", "training.py", "scoring.py", "deployment.py")


@pytest.mark.parametrize("how", ["--config", "DRS_CONFIG"])
def test_every_step_runs_end_to_end_from_another_directory(
    config_path: Path, tmp_path: Path, how: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--config", str(config_path)] if how == "--config" else []
    env = {"DRS_CONFIG": str(config_path)} if how == "DRS_CONFIG" else {}
    # DRS_CONFIG must not win over --config: point it at nothing in the --config case.
    env.setdefault("DRS_CONFIG", str(tmp_path / "missing.json"))
    config = load_config(config_path)
    outputs = {}
    for script in SCRIPTS:
        run = run_script(script, *args, cwd=elsewhere, env=env)
        assert run.returncode == 0, f"{script}: {run.stderr}"
        assert "Traceback" not in run.stderr
        outputs[script] = run.stdout.strip()
    assert outputs["ingestion.py"].startswith(f"{config.final_data_path}: ")
    assert outputs["training.py"] == str(config.model_path)
    assert float(outputs["scoring.py"]) == read_score(config.score_path)
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    assert outputs["deployment.py"] == release.id
    for name in releases.DEPLOYED_FILES:
        assert (config.deployment_folder / name).is_file()
    assert list(elsewhere.iterdir()) == []  # nothing written in the working directory

    run = run_script("deployment.py", "--rollback", *args, cwd=elsewhere, env=env)
    assert run.returncode == 1
    assert run.stderr.strip().endswith(f"no release before {release.id} to roll back to")
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works_and_exits_0(script: str, tmp_path: Path) -> None:
    run = run_script(script, "--help", cwd=tmp_path, env={"DRS_CONFIG": str(tmp_path / "x")})
    assert run.returncode == 0
    assert run.stderr == ""
    assert "--config PATH" in run.stdout
    assert run.stdout.startswith("usage: ")
    if script == "deployment.py":
        assert "--rollback" in run.stdout
    assert list(tmp_path.iterdir()) == []


BROKEN = {
    "missing file": (None, "config file not found", None),
    "invalid JSON": ('{"input_folder_path": "a",\n', "not valid JSON (line 2", None),
    "missing key": (
        {k: v for k, v in CONFIG.items() if k != "test_data_path"},
        "missing key 'test_data_path'",
        "test_data_path",
    ),
    "wrong type": (
        {**CONFIG, "output_model_path": 3},
        "must be a non-empty string",
        "output_model_path",
    ),
    "wrong optional": (
        {**CONFIG, "deployments_kept": "5"},
        "whole number >= 2",
        "deployments_kept",
    ),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_config_is_one_line_naming_file_and_key(
    script: str, kind: str, tmp_path: Path
) -> None:
    content, problem, key = BROKEN[kind]
    path = tmp_path / "settings" / "config.json"
    path.parent.mkdir()
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    run = run_script(script, "--config", str(path), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{path}: " in lines[0]
    assert problem in lines[0]
    if key is not None:
        assert f"'{key}'" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["settings", *(["config.json"] if content is not None else [])]
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_drs_config_pointing_nowhere_is_a_one_line_error(script: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    run = run_script(script, cwd=tmp_path, env={"DRS_CONFIG": str(missing)})
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.endswith(f"ERROR {script.removesuffix('.py')}: {missing}: config file not found")


IMPORT_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
changes, reads = [], []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE:
            changes.append([event, str(path)])
        elif str(path).endswith(".json") or str(path).startswith(os.getcwd()):
            reads.append(str(path))
    elif event in {
        "sqlite3.connect", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink",
        "os.truncate", "shutil.rmtree", "shutil.copyfile", "tempfile.mkstemp",
        "tempfile.mkdtemp", "subprocess.Popen", "os.system", "socket.connect", "os.chdir",
    }:
        changes.append([event, repr(args)[:200]])

sys.addaudithook(hook)
import ingestion, training, scoring, deployment, diagnostics, reporting, apicalls, fullprocess
import drs.datagen, drs.web.factory
print(json.dumps({"changes": changes, "reads": reads}))
"""


def test_importing_the_scripts_does_no_work(config_path: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = sorted(path.relative_to(config_path.parent) for path in config_path.parent.rglob("*"))
    env = {
        **os.environ,
        "DRS_CONFIG": str(tmp_path / "does-not-exist.json"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(PROJECT)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    seen = json.loads(run.stdout)
    assert seen == {"changes": [], "reads": []}
    assert list(cwd.iterdir()) == []
    after = sorted(path.relative_to(config_path.parent) for path in config_path.parent.rglob("*"))
    assert after == before
