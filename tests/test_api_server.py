"""wsgi.py under gunicorn, as production runs it: real processes, real HTTP on loopback."""

from __future__ import annotations

from pathlib import Path

import requests
from helpers import TEST_DATASET, TOKEN, deploy_workspace, gunicorn

from drs import releases
from drs.config import API_TOKEN_ENV_VAR
from drs.datarules import read_dataset


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
