"""The input folder's index: a file is hashed again only when its stat says it may have changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drs import inputs
from drs.files import file_sha256
from drs.history import History


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files inputs hashes, in order."""
    seen: list[str] = []

    def counting(path: Path) -> str:
        seen.append(path.name)
        return file_sha256(path)

    monkeypatch.setattr(inputs, "file_sha256", counting)
    return seen


def hashes(history: History, folder: Path) -> dict[str, str]:
    return inputs.content_hashes(history, "in", inputs.listing(folder))


def test_unchanged_files_are_not_read_again_and_changes_are_seen(
    tmp_path: Path, hashed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "SETTLED_NS", -(10**15))  # every stamp trusted at once
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(3):
        (folder / f"f{number}.csv").write_text(f"a,b\n{number},1\n")
    with History(tmp_path / "history.sqlite") as history:
        first = hashes(history, folder)
        assert sorted(hashed) == ["f0.csv", "f1.csv", "f2.csv"]
        assert first["f1.csv"] == file_sha256(folder / "f1.csv")
        hashed.clear()
        assert hashes(history, folder) == first
        assert hashed == []
        # Same size, same modification time, new content: the change time (and inode) tell.
        status = (folder / "f1.csv").stat()
        (folder / "f1.csv").write_text("a,b\n9,1\n")
        os.utime(folder / "f1.csv", ns=(status.st_atime_ns, status.st_mtime_ns))
        (folder / "f2.csv").unlink()
        changed = hashes(history, folder)
        assert hashed == ["f1.csv"]
        assert changed["f1.csv"] == file_sha256(folder / "f1.csv") != first["f1.csv"]
        assert sorted(changed) == ["f0.csv", "f1.csv"]
        indexed = history.tuples("SELECT name FROM input_index ORDER BY name")
        assert indexed == [("f0.csv",), ("f1.csv",)]


def test_a_file_changed_just_before_it_was_hashed_is_hashed_again(
    tmp_path: Path, hashed: list[str]
) -> None:
    """A write in the same clock tick as the hashing leaves the stamp as it was: not trusted."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "new.csv").write_text("a,b\n1,2\n")
    with History(tmp_path / "history.sqlite") as history:
        hashes(history, folder)
        hashes(history, folder)
    assert hashed == ["new.csv", "new.csv"]


def test_a_missing_input_folder_is_a_data_error(tmp_path: Path) -> None:
    from drs.errors import DataError

    with pytest.raises(DataError, match="input folder does not exist"):
        inputs.listing(tmp_path / "gone")
