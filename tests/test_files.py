"""Files the pipeline writes: atomic writes, killed writers' temporaries, errors naming the file."""

from __future__ import annotations

import errno
import os
import shutil

import pytest
from helpers import (
    dead_pid,
)

import ingestion
import scoring
import training
from drs import releases
from drs.cli import describe_error
from drs.config import (
    MODEL_NAME,
    Config,
)


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(
    config: Config,
) -> None:
    gone, alive = dead_pid(), os.getpid()
    config.output_folder.mkdir(parents=True)
    config.model_folder.mkdir(parents=True)
    config.deployment_folder.mkdir(parents=True)
    stale = [
        config.output_folder / f".finaldata.csv.{gone}.k3j_x9q2.tmp",
        config.model_folder / f".report2.pdf.{gone}.abcdefgh.tmp",
        config.model_folder / f".confusionmatrix2.png.{gone}.zzzz1111.tmp",
    ]
    live = config.model_folder / f".trainedmodel.pkl.{alive}.abcdefgh.tmp"
    for path in (*stale, live):
        path.write_bytes(b"partial" * 1000)
    (config.deployment_folder / f".current.{gone}.link.tmp").symlink_to("releases/nowhere")
    for step in (ingestion, training, scoring, releases):
        step.run(config)
    assert [path for path in stale if path.exists()] == []
    assert live.exists()
    assert not (config.deployment_folder / f".current.{gone}.link.tmp").is_symlink()


def test_a_full_disk_in_the_deployment_folder_names_the_release_file(
    trained: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(source: str, target: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(source))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError) as raised:
        releases.run(trained)
    message = describe_error(raised.value)
    assert str(trained.deployment_folder / releases.RELEASES) in message
    assert message.endswith(f"{MODEL_NAME}: cannot write: No space left on device")
    assert str(trained.model_path) not in message


def test_a_full_disk_while_writing_finaldata_names_it(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.csv as pa_csv

    def full(*args: object, **kwargs: object) -> None:
        raise OSError("[errno 28] Error writing bytes to file. Detail: No space left on device")

    monkeypatch.setattr(pa_csv, "write_csv", full)
    with pytest.raises(OSError) as raised:
        ingestion.run(config)
    message = describe_error(raised.value)
    assert message.startswith(f"{config.final_data_path}: cannot write: ")
    assert not config.final_data_path.exists()
    assert not list(config.output_folder.glob(".*.tmp"))
