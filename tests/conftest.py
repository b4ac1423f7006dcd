"""A throw-away workspace for every test: config.json and small generated data under tmp_path."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    OFFLINE_INDEX_URL,
    make_workspace,
    pipeline_run,
)

import ingestion
import scoring
import training
from drs import diagnosis, releases
from drs.config import (
    Config,
    load_config,
)
from drs.datarules import read_dataset


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


@pytest.fixture
def trained(config: Config) -> Config:
    """A workspace with a trained and scored model, not deployed yet."""
    for step in (ingestion, training, scoring):
        step.run(config)
    return config


@pytest.fixture
def two_releases(trained: Config) -> tuple[Config, releases.Release]:
    first = releases.run(trained)
    # A model trained on other rows: an identical one would make no new release.
    training.run(trained, read_dataset(trained.final_data_path).iloc[::2])
    scoring.run(trained)
    assert releases.run(trained) != first
    return trained, first


@pytest.fixture
def bootstrapped_workspace(config_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert pipeline_run(config_path, capsys)[0] == 0
    return config_path
