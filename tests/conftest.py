"""A throw-away workspace for every test: config.json and small generated data under tmp_path."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import OFFLINE_INDEX_URL, make_workspace

from drs import diagnosis
from drs.config import Config, load_config


@pytest.fixture(autouse=True, scope="session")
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No package index, and temporary files (of scripts too) under pytest's own folder."""
    scratch = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(diagnosis.PACKAGE_INDEX_ENV_VAR, OFFLINE_INDEX_URL)
        patch.setenv("TMPDIR", str(scratch))
        patch.setattr(tempfile, "tempdir", str(scratch))
        yield


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """Path of a fresh workspace's config.json (nothing ingested or deployed yet)."""
    return make_workspace(tmp_path / "workspace")


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)
