"""deployment.py: whole sets, crash safety under SIGKILL, rollback, integrity, pruning,
staging and promotion."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    PROJECT,
    assert_one_line_failure,
    change_config,
    run_script,
    tree,
)

import ingestion
import scoring
import training
from drs import releasefolder, releases
from drs.config import (
    FEATURES,
    INGESTED_RECORD_NAME,
    MODEL_CARD_NAME,
    MODEL_NAME,
    SCORE_CARD_NAME,
    SCORE_NAME,
    Config,
    load_config,
)
from drs.datarules import read_dataset
from drs.files import file_sha256, pipeline_lock, read_score
from drs.history import open_history
from drs.modelling import ModelIntegrityError, load_model

NAMES = releases.DEPLOYED_FILES


def make_set(folder: Path, label: str) -> dict[str, Path]:
    """Three source files whose contents all carry label; a real (tiny) pickled model."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        MODEL_NAME: pickle.dumps({"model": label, "padding": label * 20_000}),
        SCORE_NAME: f"0.{len(label)}{ord(label[0])}\n".encode(),
        INGESTED_RECORD_NAME: f"{label}-1.csv\n{label}-2.csv\n".encode(),
    }
    sources = {}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        sources[name] = folder / name
    return sources


def contents(sources: dict[str, Path]) -> tuple[bytes, ...]:
    return tuple(sources[name].read_bytes() for name in NAMES)


def seen_through_current(folder: Path) -> tuple[bytes, ...]:
    """What a reader gets by resolving `current` once; asserts the set matches its manifest."""
    release = folder / os.readlink(folder / releases.CURRENT)
    manifest = json.loads((release / releases.MANIFEST).read_text())
    files = tuple((release / name).read_bytes() for name in NAMES)
    for name, data in zip(NAMES, files, strict=True):
        assert hashlib.sha256(data).hexdigest() == manifest["files"][name], name
    for name, data in zip(NAMES, files, strict=True):
        assert os.readlink(folder / name) == f"{releases.CURRENT}/{name}"
        assert (folder / name).read_bytes() == data
    return files


def assert_every_release_whole(folder: Path) -> None:
    for release in releases.list_releases(folder):
        for name in NAMES:
            data = release.path(name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == release.manifest["files"][name]


def test_deployed_files_are_byte_identical_to_their_sources(config: Config) -> None:
    ingestion.run(config)
    training.run(config)
    scoring.run(config)
    release = releases.run(config)
    sources = {
        MODEL_NAME: config.model_path,
        SCORE_NAME: config.score_path,
        INGESTED_RECORD_NAME: config.ingested_record_path,
    }
    for name, source in sources.items():
        assert (config.deployment_folder / name).read_bytes() == source.read_bytes()
        assert release.path(name).read_bytes() == source.read_bytes()
        assert release.manifest["files"][name] == file_sha256(source)
    current = releases.current_release(config.deployment_folder)
    assert current is not None
    assert current.id == release.id
    assert current.score() == read_score(config.score_path)
    assert current.ingested_files() == ["dataset1.csv", "dataset2.csv"]
    with open_history(config) as history:
        (row,) = history.rows("SELECT * FROM deployments")
    assert (row["release_id"], row["action"], row["model_sha256"], row["f1"]) == (
        release.id,
        "deploy",
        file_sha256(config.model_path),
        current.score(),
    )
    test = read_dataset(config.test_data_path)[list(FEATURES)]
    trained = load_model(config.model_path)
    assert (current.load_model().predict_proba(test) == trained.predict_proba(test)).all()


def test_nothing_deployed_yet_and_missing_sources(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    assert releases.current_release(folder) is None
    sources = make_set(tmp_path / "a", "a")
    sources[SCORE_NAME].unlink()
    with pytest.raises(releases.DeploymentError, match=r"nothing to deploy: missing .*latestscore"):
        releases.deploy(sources, folder)
    assert releases.current_release(folder) is None
    with pytest.raises(releases.DeploymentError, match="nothing deployed, nothing to roll back"):
        releases.rollback(folder)


def test_rollback_restores_the_previous_set_and_stops_at_the_oldest(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    first, second = make_set(tmp_path / "a", "a"), make_set(tmp_path / "b", "b")
    old = releases.deploy(first, folder)
    new = releases.deploy(second, folder)
    assert seen_through_current(folder) == contents(second)
    assert releases.rollback(folder).id == old.id
    assert seen_through_current(folder) == contents(first)
    with pytest.raises(releases.DeploymentError, match=f"no release before {old.id}"):
        releases.rollback(folder)
    assert seen_through_current(folder) == contents(first)
    assert [release.id for release in releases.list_releases(folder)] == [old.id, new.id]
    # A deployment after a rollback becomes current, and rollback returns to the oldest set.
    releases.deploy(second, folder)
    assert releases.rollback(folder).id == new.id


def test_a_tampered_model_is_refused_before_it_is_unpickled(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    release = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    assert release.load_model()["model"] == "a"
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (Path(marker),))

    (folder / MODEL_NAME).write_bytes(pickle.dumps(Payload()))  # via the symlinks
    current = releases.current_release(folder)
    assert current is not None
    with pytest.raises(ModelIntegrityError, match="does not match the deployed"):
        current.load_model()
    assert not marker.exists()
    with pytest.raises(ModelIntegrityError, match="refusing to load it"):
        load_model(current.path(MODEL_NAME), release.model_sha256)
    assert not marker.exists()


def test_only_deployments_kept_releases_remain(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    sets = [make_set(tmp_path / label, label) for label in "abcde"]
    ids = [releases.deploy(sources, folder, keep=2).id for sources in sets]
    assert [release.id for release in releases.list_releases(folder)] == ids[-2:]
    assert sorted(path.name for path in (folder / releases.RELEASES).iterdir()) == ids[-2:]
    assert seen_through_current(folder) == contents(sets[-1])


def test_pruning_never_removes_the_current_release(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    sets = [make_set(tmp_path / label, label) for label in "abc"]
    ids = [releases.deploy(sources, folder, keep=3).id for sources in sets]
    releases.rollback(folder)
    releases.rollback(folder)
    releases.prune(folder, keep=1)  # the oldest is current: it stays
    assert [release.id for release in releases.list_releases(folder)] == [ids[0], ids[2]]
    assert seen_through_current(folder) == contents(sets[0])


def test_a_deletion_cut_short_leaves_no_half_release_to_roll_back_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prod"
    sets = [make_set(tmp_path / label, label) for label in "abc"]
    releases.deploy(sets[0], folder, keep=2)
    middle = releases.deploy(sets[1], folder, keep=2)
    rmtree = shutil.rmtree

    def killed_halfway(path: Path, *args: object, **kwargs: object) -> None:
        (Path(path) / MODEL_NAME).unlink()
        raise KeyboardInterrupt  # stands for the process dying here

    monkeypatch.setattr(shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        releases.deploy(sets[2], folder, keep=2)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert seen_through_current(folder) == contents(sets[2])
    assert_every_release_whole(folder)
    assert releases.rollback(folder).id == middle.id
    with pytest.raises(releases.DeploymentError, match="no release before"):
        releases.rollback(folder)
    releases.deploy(sets[0], folder, keep=2)
    assert not list((folder / releases.RELEASES).glob(".*"))


KILL_LOOP = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from drs import releases
folder, first, second = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
sets = [{name: base / name for name in releases.DEPLOYED_FILES} for base in (first, second)]
print("ready", flush=True)
number = 0
while True:
    releases.deploy(sets[number % 2], folder, keep=3)
    number += 1
    print("deployed", flush=True)
"""


def test_sigkill_at_random_moments_never_shows_a_mixed_or_partial_set(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    first, second = make_set(tmp_path / "a", "a"), make_set(tmp_path / "b", "b")
    complete = {contents(first), contents(second)}
    releases.deploy(first, folder, keep=3)
    trials, interrupted, rng = 24, 0, random.Random(1234)
    for trial in range(trials):
        before = os.readlink(folder / releases.CURRENT)
        command = [sys.executable, "-c", KILL_LOOP, str(PROJECT), str(folder)]
        process = subprocess.Popen(
            [*command, str(tmp_path / "a"), str(tmp_path / "b")], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            # One whole deployment first (however busy the machine), then a kill at a
            # random moment of the ones that follow (each takes a few milliseconds).
            assert process.stdout.readline() == "deployed\n"
            time.sleep(rng.uniform(0.0, 0.08))
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            process.stdout.close()
        assert process.returncode == -signal.SIGKILL
        interrupted += os.readlink(folder / releases.CURRENT) != before
        view = seen_through_current(folder)
        assert view in complete, f"trial {trial}: a mixed set"
        assert_every_release_whole(folder)
        current = releases.current_release(folder)
        assert current is not None
        assert current.load_model()["model"] in {"a", "b"}
        # The next deployment succeeds after whatever the kill left behind.
        following = second if view == contents(first) else first
        releases.deploy(following, folder, keep=3)
        assert seen_through_current(folder) == contents(following)
        assert len(releases.list_releases(folder)) <= 3  # deployments_kept
        assert not list((folder / releases.RELEASES).glob(".*"))
    # Every kill hit a loop that had already switched `current` at least once.
    assert interrupted == trials


def test_list_shows_every_kept_release_and_marks_the_live_one(config: Config) -> None:
    for step in (ingestion, training, scoring):
        step.run(config)
    first = releases.run(config)
    (config.input_folder / "dataset1.csv").unlink()
    for step in (ingestion, training, scoring):
        step.run(config)
    second = releases.run(config)
    listed = run_script("deployment.py", "--list", "--config", str(config.path), cwd=config.root)
    assert listed.returncode == 0, listed.stderr
    table, went = listed.stdout.split("\n\n")
    header, newest, oldest = table.splitlines()
    assert header.split() == [
        "release",
        "deployed",
        "at",
        "(UTC)",
        "test",
        "F1",
        "expected",
        "how",
        "it",
        "went",
        "live",
        "trained",
        "on",
    ]
    assert newest.startswith(f"* {second.id} ") and newest.endswith("dataset2.csv")
    assert f"{second.score():.4f}" in newest and " fullprocess.py " not in newest
    assert oldest.startswith(f"  {first.id} ") and oldest.endswith("dataset1.csv, dataset2.csv")
    # Deployed by releases.run, as fullprocess.py does: the first, then one that replaced it.
    assert "  first deployment  " in oldest and "  retrained after model drift  " in newest
    title, *lines = went.splitlines()
    assert title == "went live (newest 2 of 2, UTC):"
    assert lines[0].endswith(f"{second.id}  retrained after model drift, replacing {first.id}")
    assert lines[1].endswith(f"{first.id}  first deployment")


def bare_config(tmp_path: Path) -> Path:
    """A config.json whose prod_deployment_path is tmp_path/prod (nothing else exists)."""
    config_path = tmp_path / "config.json"
    config_path.write_text(
        json.dumps(
            {
                "input_folder_path": "in",
                "output_folder_path": "out",
                "test_data_path": "test",
                "output_model_path": "models",
                "prod_deployment_path": "prod",
            }
        )
    )
    return config_path


def test_rollback_to_a_chosen_release_says_from_which_to_which(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    ids = [releases.deploy(make_set(tmp_path / label, label), folder).id for label in "abc"]
    config_path = bare_config(tmp_path)
    done = run_script(
        "deployment.py", "--rollback", ids[0], "--config", str(config_path), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"rolled back from release {ids[2]} (test F1 0.1990) to release {ids[0]} (test F1 0.1970)\n"
    )
    assert seen_through_current(folder) == contents({n: tmp_path / "a" / n for n in NAMES})
    again = run_script(
        "deployment.py", "--rollback", ids[0], "--config", str(config_path), cwd=tmp_path
    )
    assert "already the live one" in again.stderr and again.returncode == 1
    missing = run_script(
        "deployment.py", "--rollback", "nope", "--config", str(config_path), cwd=tmp_path
    )
    assert f"no release 'nope' (kept: {', '.join(ids)})" in missing.stderr


def test_the_first_deployment_and_an_identical_model_are_said_in_plain_words(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (ingestion, training, scoring):
        step.run(config)
    caplog.set_level("INFO")
    first = releases.run(config)
    assert f"first deployment: release {first.id} (test F1 {first.score():.4f})" in caplog.text
    second = releases.run(config)
    assert second == first, "the same model and score make no new release"
    assert (
        f"release {first.id} is live with this same model and score; no new release made"
        in caplog.text
    )
    assert [release.id for release in releases.list_releases(config.deployment_folder)] == [
        first.id
    ]


def test_redeploying_an_identical_model_by_hand_says_so_and_keeps_the_slots(
    config: Config, tmp_path: Path
) -> None:
    for step in (ingestion, training, scoring):
        step.run(config)
    first = run_script("deployment.py", "--config", str(config.path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for _ in range(3):
        again = run_script("deployment.py", "--config", str(config.path), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout == (
            f"release {first.stdout.strip()} is live with this same model and score; "
            "no new release made\n"
        )
    assert len(releases.list_releases(config.deployment_folder)) == 1


def stage(tmp_path: Path, label: str, folder: Path, keep: int = 5) -> releases.Release:
    """A release staged from a set labelled label: made, not live."""
    return releases.deploy(make_set(tmp_path / label, label), folder, keep, stage=True)


def ids_of(folder: Path) -> list[str]:
    return [release.id for release in releases.list_releases(folder)]


def keep_every_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pruning: releases a prune would remove stay, to see what rollback makes of them."""
    monkeypatch.setattr(releases, "prune", lambda deployment_folder, keep: None)


def test_rollback_after_a_promotion_returns_to_the_release_that_was_live(tmp_path: Path) -> None:
    """The reviewer's case, as a user types it: never to a staged release that was not live."""
    folder = tmp_path / "prod"
    config_path = bare_config(tmp_path)
    live = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    passed_over, promoted = stage(tmp_path, "b1", folder), stage(tmp_path, "b2", folder)

    def cli(*args: str) -> str:
        done = run_script("deployment.py", *args, "--config", str(config_path), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("--promote").startswith(f"promoted release {promoted.id} ")
    assert cli("--rollback") == (
        f"rolled back from release {promoted.id} (test F1 0.2980) to release {live.id} "
        "(test F1 0.1970)\n"
    )
    assert seen_through_current(folder) == contents(make_set(tmp_path / "a", "a"))
    table = cli("--list").split("\n\n")[0]
    marks = {line[2:].split()[0]: line[0] for line in table.splitlines()[1:]}
    assert marks == {live.id: "*", promoted.id: " "}, "b2 has been live: not promotable again"
    assert passed_over.id not in ids_of(folder), "passed over when a newer release went live"
    assert releases.promotable(folder) == []


def test_a_promoted_release_is_a_normal_release_for_rollbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prod"
    keep_every_release(monkeypatch)
    live = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    never = stage(tmp_path, "b1", folder)
    promoted = stage(tmp_path, "b2", folder)
    releases.promote(folder, promoted.id)
    later = releases.deploy(make_set(tmp_path / "c", "c"), folder)
    assert releases.rollback(folder).id == promoted.id, "it was live before c"
    assert releases.rollback(folder).id == live.id, f"{never.id} was never live"
    assert releases.rollback(folder, later.id).id == later.id
    # A current that names a missing release is repaired the same way.
    for gone in (later, promoted):
        shutil.rmtree(gone.folder)
    assert releases.rollback(folder).id == live.id
    assert ids_of(folder) == [live.id, never.id]


def test_a_never_live_staged_release_is_no_rollback_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prod"
    live = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    staged = stage(tmp_path, "b", folder)
    refused = run_script(
        "deployment.py",
        "--rollback",
        staged.id,
        "--config",
        str(bare_config(tmp_path)),
        cwd=tmp_path,
    )
    assert_one_line_failure(
        refused,
        f"{folder}: release {staged.id} was staged and never live, so it is no rollback target; "
        f"deployment.py --promote {staged.id} makes it live",
    )
    assert releases.current_release(folder).id == live.id
    # Nor one older than the live release (pruned when the newer one went live, unless
    # the prune failed), which cannot be promoted either.
    keep_every_release(monkeypatch)
    releases.deploy(make_set(tmp_path / "c", "c"), folder)
    with pytest.raises(releases.DeploymentError, match="a newer release has gone live since"):
        releases.rollback(folder, staged.id)
    assert releases.rollback(folder).id == live.id


def test_an_empty_release_id_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    live = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    releases.deploy(make_set(tmp_path / "b", "b"), folder)
    releases.rollback(folder)
    staged = stage(tmp_path, "c", folder)
    config_path = bare_config(tmp_path)
    for option, fragment in [
        ("--promote", "an empty release id; name a staged release"),
        ("--rollback", "an empty release id; name a kept release"),
    ]:
        done = run_script("deployment.py", option, "", "--config", str(config_path), cwd=tmp_path)
        assert_one_line_failure(done, f"{folder}: {fragment}")
        assert releases.current_release(folder).id == live.id
    with pytest.raises(releases.DeploymentError, match="an empty release id"):
        releases.promote(folder, " ")
    promoted = run_script("deployment.py", "--promote", "--config", str(config_path), cwd=tmp_path)
    assert promoted.stdout.startswith(f"promoted release {staged.id} "), promoted.stderr


def test_staged_releases_are_bounded_and_leave_the_live_history_alone(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    a, b = (releases.deploy(make_set(tmp_path / x, x), folder, keep=2) for x in "ab")
    staged = [stage(tmp_path, f"s{n}", folder, keep=2) for n in range(3)]
    assert ids_of(folder) == [a.id, b.id, staged[1].id, staged[2].id]
    # A deployment supersedes the staged releases before it; they are not its history.
    c = releases.deploy(make_set(tmp_path / "c", "c"), folder, keep=2)
    assert ids_of(folder) == [b.id, c.id]
    later = [stage(tmp_path, f"t{n}", folder, keep=2) for n in range(2)]
    promoted = releases.promote(folder, later[0].id, keep=2)
    assert ids_of(folder) == [c.id, promoted.id, later[1].id]
    assert [r.id for r in releases.promotable(folder)] == [later[1].id]
    assert releases.rollback(folder).id == c.id
    assert not list((folder / releases.RELEASES).glob(".*"))


def test_a_promoted_release_says_when_it_went_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prod"
    releases.deploy(make_set(tmp_path / "a", "a"), folder)
    staged = stage(tmp_path, "b", folder)
    staged_at = staged.manifest["staged_at"]
    assert "deployed_at" not in staged.manifest, "it has not gone live"
    row = releasefolder.release_table(folder)[0]
    assert (row["staged"], row["deployed_at"], row["staged_at"]) == (True, None, staged_at)
    shown = releasefolder.format_release_table([row])
    assert shown.splitlines()[1].split()[:4] == ["s", staged.id, *staged_at[:19].split("T")]

    monkeypatch.setattr(releases, "utc_now", lambda: "2031-01-02T03:04:05.678Z")
    releases.promote(folder)
    live = releases.current_release(folder)
    assert live.id == staged.id
    assert live.manifest["deployed_at"] == "2031-01-02T03:04:05.678Z"
    assert live.manifest["staged_at"] == staged_at
    assert "staged" not in live.manifest
    assert live.manifest["files"] == staged.manifest["files"]
    releases.verify_release(live)
    row = releasefolder.release_table(folder)[0]
    assert (row["live"], row["staged"], row["deployed_at"], row["staged_at"]) == (
        True,
        False,
        "2031-01-02T03:04:05.678Z",
        None,
    )
    assert not list(live.folder.glob(".*"))


def test_a_promotion_killed_halfway_leaves_no_release_that_seems_to_have_been_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prod"
    live = releases.deploy(make_set(tmp_path / "a", "a"), folder)
    staged = stage(tmp_path, "b", folder)

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # stands for the process dying here

    # Killed before the switch: still staged, still promotable, no rollback target.
    monkeypatch.setattr(releases, "activate", killed)
    with pytest.raises(KeyboardInterrupt):
        releases.promote(folder)
    monkeypatch.undo()
    assert releases.current_release(folder).id == live.id
    assert [r.id for r in releases.promotable(folder)] == [staged.id]
    with pytest.raises(releases.DeploymentError, match="staged and never live"):
        releases.rollback(folder, staged.id)
    # Killed after the switch, before the manifest lost its staged flag.
    mark_live = releases._mark_live

    def killed_after_the_switch(release: releases.Release) -> releases.Release:
        if release.id == staged.id:
            raise KeyboardInterrupt
        return mark_live(release)

    monkeypatch.setattr(releases, "_mark_live", killed_after_the_switch)
    with pytest.raises(KeyboardInterrupt):
        releases.promote(folder)
    monkeypatch.undo()
    assert releases.current_release(folder).id == staged.id
    assert releasefolder.release_table(folder)[0]["deployed_at"] is not None
    releases.deploy(make_set(tmp_path / "c", "c"), folder)
    assert releases.rollback(folder).id == staged.id, "it was live: leaving it said so"
    assert releases.promotable(folder) == []


@pytest.mark.parametrize("script", ["ingestion.py", "training.py", "scoring.py", "deployment.py"])
def test_a_hand_run_step_waits_for_the_pipeline_lock_then_says_busy(
    config_path: Path, tmp_path: Path, script: str
) -> None:
    change_config(config_path.parent, lock_wait_seconds=0.3)
    config = load_config(config_path)
    before = tree(config.root)
    with pipeline_lock(config) as held:
        assert held
        result = run_script(script, "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, "busy: another pipeline run holds")
    assert "waited 0.3 s" in result.stderr
    after = tree(config.root)
    assert {k: v for k, v in after.items() if "history" not in k and "lock" not in k} == {
        k: v for k, v in before.items() if "history" not in k and "lock" not in k
    }


def test_a_score_of_another_model_is_refused(trained: Config) -> None:
    scored = trained.score_path.read_bytes(), trained.score_card_path.read_bytes()
    (trained.input_folder / "dataset1.csv").unlink()
    ingestion.run(trained)
    training.run(trained)  # a new model on other data; the score is still the old model's
    raw = json.loads(trained.model_card_path.read_text())
    with pytest.raises(releases.DeploymentError, match="not computed on this model"):
        releases.run(trained)
    assert releases.current_release(trained.deployment_folder) is None
    assert (trained.score_path.read_bytes(), trained.score_card_path.read_bytes()) == scored
    assert json.loads(trained.model_card_path.read_text()) == raw


def test_an_ingestion_record_newer_than_the_model_is_refused(
    trained: Config,
) -> None:
    shutil.copy(trained.input_folder / "dataset1.csv", trained.input_folder / "dataset9.csv")
    ingestion.run(trained)  # what a hand-run ingestion.py does during a pipeline run
    with pytest.raises(releases.DeploymentError, match="changed since the model was trained"):
        releases.run(trained)
    assert releases.current_release(trained.deployment_folder) is None


@pytest.mark.parametrize("card", [MODEL_CARD_NAME, SCORE_CARD_NAME])
def test_a_set_without_its_records_or_with_damaged_ones_is_refused(
    trained: Config, card: str
) -> None:
    path = trained.model_folder / card
    path.unlink()
    with pytest.raises(releases.DeploymentError, match=f"{card}: not found"):
        releases.run(trained)
    path.write_text("[1, 2")
    with pytest.raises(releases.DeploymentError, match=f"{card}: damaged"):
        releases.run(trained)
    assert not list((trained.deployment_folder / releases.RELEASES).iterdir())


def test_a_model_trained_on_fewer_files_than_the_record_names_deploys(
    trained: Config,
) -> None:
    card = json.loads(trained.model_card_path.read_text())
    card["trained_on"] = ["dataset2.csv"]
    trained.model_card_path.write_text(json.dumps(card))
    release = releases.run(trained)
    assert release.trained_on() == ["dataset2.csv"]
    assert release.ingested_files() == ["dataset1.csv", "dataset2.csv"]


@pytest.mark.parametrize(
    "manifest",
    [
        {},
        {"files": 5},
        {"files": {}},
        {"files": {MODEL_NAME: 12345}},
        [],
        "not json at all",
    ],
)
def test_a_damaged_manifest_is_a_clear_error_everywhere_and_rollback_repairs_it(
    two_releases: tuple[Config, releases.Release], tmp_path: Path, manifest: object
) -> None:
    config, first = two_releases
    current = releases.current_release(config.deployment_folder)
    assert current is not None
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (current.folder / releases.MANIFEST).write_text(text)
    for script in ("diagnostics.py", "reporting.py"):
        result = run_script(script, "--config", str(config.path), cwd=tmp_path)
        assert_one_line_failure(result, "manifest")
    result = run_script("fullprocess.py", "--config", str(config.path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "manifest" in result.stderr.strip().splitlines()[-1]

    repaired = run_script("deployment.py", "--rollback", "--config", str(config.path), cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert releases.current_release(config.deployment_folder).id == first.id


def test_rollback_repairs_a_current_that_points_at_a_missing_release(
    two_releases: tuple[Config, releases.Release],
) -> None:
    config, first = two_releases
    current = releases.current_release(config.deployment_folder)
    assert current is not None
    shutil.rmtree(current.folder)
    assert releases.run_rollback(config)[1].id == first.id
    assert releases.current_release(config.deployment_folder).load_model() is not None


@pytest.mark.parametrize(
    ("card_change", "manifest_change"),
    [
        ({"expected": None}, {}),
        ({"expected": 5}, {}),
        ({"expected": {"f1": "x"}}, {}),
        ({"trained_on": [1, 2]}, {}),
        ({"trained_on": "dataset1.csv"}, {}),
        ({}, {"deployed_at": 12345}),
    ],
)
def test_release_list_shows_damaged_fields_as_unknown(
    two_releases: tuple[Config, releases.Release],
    card_change: dict,
    manifest_change: dict,
) -> None:
    config, first = two_releases
    card = json.loads(first.path(MODEL_CARD_NAME).read_text())
    first.path(MODEL_CARD_NAME).write_text(json.dumps({**card, **card_change}))
    manifest = json.loads(first.path(releases.MANIFEST).read_text())
    manifest["files"][MODEL_CARD_NAME] = file_sha256(first.path(MODEL_CARD_NAME))
    first.path(releases.MANIFEST).write_text(json.dumps({**manifest, **manifest_change}))
    listed = run_script("deployment.py", "--list", "--config", str(config.path), cwd=config.root)
    assert listed.returncode == 0, listed.stderr
    [oldest] = [line for line in listed.stdout.splitlines() if line.startswith(f"  {first.id} ")]
    assert "d, a, t, a" not in oldest


def test_a_current_that_is_a_folder_says_what_to_do(trained: Config) -> None:
    (trained.deployment_folder / releases.CURRENT).mkdir(parents=True)
    listed = run_script("deployment.py", "--list", "--config", str(trained.path), cwd=trained.root)
    assert_one_line_failure(listed, "current: not a deployment link")
    assert "move it aside, then run deployment.py --rollback RELEASE" in listed.stderr
