"""Retraining that keeps the model accurate: expected F1, the expected test, CBPE, candidates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import PROJECT, pdf_text, run_script, tick_with_details

import fullprocess
from drs import datagen, drift, modelling, releases, retraining, state
from drs.config import FEATURES, TARGET, Config, load_config
from drs.history import open_history
from drs.runs import Severity

FLOATS = {column: "float64" for column in (*FEATURES, TARGET)}


def clients_like(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    """Generated clients; drifted: behaving the other way round (the busy ones leave)."""
    return datagen.generate(rows, seed=seed, flipped=drifted).astype(FLOATS)


def f1_on(model: Any, data: pd.DataFrame) -> float:
    return drift.realised(data[TARGET], model.predict(data[list(FEATURES)])).f1


def run_once(config: Config, capsys: pytest.CaptureFixture[str]) -> str:
    """One fullprocess.py run: its outcome line, then the details the log gave before it."""
    out, details = tick_with_details(config, capsys)
    return out + "".join(f"{line}\n" for line in details)


def scenario_workspace(root: Path, drift_test: str) -> Config:
    """An empty input folder, original-pattern test data, and the drift test to use."""
    (root / "incoming").mkdir(parents=True)
    datagen.write_test_data(root / "testdata", 2_000, seed=2)
    (root / "config.json").write_text(
        json.dumps(
            {
                **datagen.WORKSPACE_CONFIG,
                "input_folder_path": "incoming",
                "drift_test": drift_test,
                "api_url": "http://127.0.0.1:9",
            }
        )
    )
    return load_config(root / "config.json")


def first_model_deployed(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> Config:
    """A scenario workspace with the expected test, a.csv ingested and its model deployed."""
    config = scenario_workspace(tmp_path / "workspace", "expected")
    clients_like(3_000, seed=seed, drifted=False).to_csv(config.input_folder / "a.csv", index=False)
    run_once(config, capsys)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("drift_test", ["expected", "raw"])
def test_the_deployed_model_keeps_up_with_changes_in_behaviour(
    tmp_path: Path, drift_test: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batches of 3,000 clients: original, drifted, original, drifted.

    The deployed model stays within 0.85x of the F1 of a model trained on the batch
    alone, on a fresh sample of the batch's behaviour. The course's raw test goes blind
    against the stale test data (the run says so), but the exits test still sees the
    change.
    """
    config = scenario_workspace(tmp_path / "workspace", drift_test)
    ratios, lines = [], []
    behaviours = [False, True, False, True] if drift_test == "expected" else [False, True, False]
    for number, drifted in enumerate(behaviours, start=1):
        batch = clients_like(3_000, seed=100 + number, drifted=drifted)
        batch.to_csv(config.input_folder / f"batch{number}.csv", index=False)
        lines.append(run_once(config, capsys))
        fresh = clients_like(3_000, seed=500 + number, drifted=drifted)
        deployed = releases.current_release(config.deployment_folder).load_model()
        ratios.append(f1_on(deployed, fresh) / f1_on(modelling.train(batch), fresh))
    if drift_test == "expected":
        assert min(ratios) >= 0.85, (ratios, lines)
        assert all("retraining: this run's new files won" in line for line in lines[1:]), lines
    else:
        # The course's raw test, against stale test data, is blind to the change back; the
        # exits test sees it (the behaviours leave at different rates) and retraining follows.
        assert min(ratios) >= 0.85, (ratios, lines)
        assert "test data stale: " in lines[1] and lines[1].startswith("WARNING: ")
        assert "no model drift (new-data F1 " in lines[2], lines[2]
        assert "attrition changed (900 of 3,000 new clients left" in lines[2], lines[2]
    with open_history(config) as history:
        purposes = {row["purpose"] for row in history.rows("SELECT purpose FROM scores")}
    assert {"expected-cv", "new-files", "estimated-cbpe", "test", "drift-check"} <= purposes


def frames_of(**files: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return dict(files)


def test_the_newest_window_wins_after_a_change_in_behaviour() -> None:
    old = clients_like(3_000, seed=11, drifted=False)
    new = clients_like(3_000, seed=12, drifted=True)
    champion = modelling.train(old)
    frames = frames_of(**{"old.csv": old, "new.csv": new})
    chosen = retraining.windows(["old.csv", "new.csv"], ["new.csv"], None)
    assert chosen == {
        retraining.ALL_DATA: ["old.csv", "new.csv"],
        retraining.NEW_FILES: ["new.csv"],
    }
    choice = retraining.choose(frames, chosen, ["new.csv"], champion)
    assert choice.winner is not None and choice.winner.window == retraining.NEW_FILES
    scores = {candidate.window: candidate.f1 for candidate in choice.candidates}
    # Fitted to both behaviours at once, all the data fits neither (as the old model).
    assert scores[retraining.NEW_FILES] > 0.8
    assert scores[retraining.ALL_DATA] < 0.3
    assert choice.champion_f1 < 0.2
    # Every new row judges every candidate, each predicted by a fit without its fold.
    assert choice.holdout_rows == len(retraining.window_rows(frames, ["new.csv"]))


def test_all_the_data_wins_when_the_new_batch_differs_only_by_noise() -> None:
    """A small new batch that behaves like the bulk of the data: more data is no worse.

    The deployed model was trained on an earlier behaviour, so both candidates beat it;
    the newest window is not clearly better than all the data, so all the data wins.
    """
    old = clients_like(4_000, seed=21, drifted=False)
    new = clients_like(400, seed=22, drifted=False)
    champion = modelling.train(clients_like(3_000, seed=23, drifted=True))  # an older behaviour
    chosen = {retraining.ALL_DATA: ["new.csv", "old.csv"], retraining.NEW_FILES: ["new.csv"]}
    frames = frames_of(**{"old.csv": old, "new.csv": new})
    choice = retraining.choose(frames, chosen, ["new.csv"], champion)
    assert choice.winner is not None and choice.winner.window == retraining.ALL_DATA, choice.reason


def test_the_champion_stays_when_no_candidate_beats_it() -> None:
    old = clients_like(4_000, seed=31, drifted=False)
    new = clients_like(1_000, seed=32, drifted=False)
    champion = modelling.train(old)
    chosen = {retraining.NEW_FILES: ["new.csv"]}
    frames = frames_of(**{"old.csv": old, "new.csv": new})
    choice = retraining.choose(frames, chosen, ["new.csv"], champion)
    assert choice.winner is None
    assert choice.reason.startswith("the deployed model stays: no candidate did clearly better")


def test_too_few_new_exits_are_judged_with_the_files_before_or_not_at_all() -> None:
    old = clients_like(2_000, seed=41, drifted=False)
    new = clients_like(500, seed=42, drifted=True)
    new[TARGET] = 0.0
    new.loc[new.index[:12], TARGET] = 1.0  # 12 exits: under 15, too few to judge on
    champion = modelling.train(old)
    chosen = {retraining.NEW_FILES: ["new.csv"]}
    frames = frames_of(**{"old.csv": old, "new.csv": new})
    choice = retraining.choose(frames, chosen, ["new.csv"], champion)
    assert choice.judged and choice.holdout_rows == len(
        retraining.window_rows(frames, list(frames))
    )
    assert "newest 2 file(s)" in {candidate.window for candidate in choice.candidates}
    new.loc[new.index[:5], TARGET] = 1.0
    new.loc[new.index[5:], TARGET] = 0.0
    choice = retraining.choose({"new.csv": new}, chosen, ["new.csv"], champion)
    assert not choice.judged and choice.winner is None
    assert choice.reason == (
        "not judged: this run's new data has 495 row(s) of clients who stayed and 5 of "
        "clients who left; at least 15 of each are needed"
    )


def test_the_newest_n_files_are_a_window_of_their_own() -> None:
    """The files in the order they arrived (c.csv after b.csv), not by name."""
    chosen = retraining.windows(["a.csv", "c.csv", "b.csv"], ["b.csv", "c.csv"], 1)
    assert chosen == {
        retraining.ALL_DATA: ["a.csv", "c.csv", "b.csv"],
        retraining.NEW_FILES: ["c.csv", "b.csv"],
        "newest 1 file(s)": ["b.csv"],
    }


def test_expected_performance_is_cross_validated_and_checks_calibration() -> None:
    data = clients_like(3_000, seed=51, drifted=False)
    expected = modelling.expected_performance(data)
    assert (expected["folds"], expected["rows"]) == (5, 3_000)
    assert 0.5 < expected["f1"] < 0.9 and 0 < expected["f1_sd"] < 0.1
    assert 0 < expected["brier"] < 0.25
    assert sum(row["rows"] for row in expected["reliability"]) == 3_000
    assert expected == modelling.expected_performance(data), "seeded: the same every time"


def test_the_estimated_f1_is_close_to_the_realised_one_for_a_calibrated_model() -> None:
    model = modelling.train(clients_like(20_000, seed=61, drifted=False))
    fresh = clients_like(5_000, seed=62, drifted=False)
    probabilities = model.predict_proba(fresh[list(FEATURES)])[:, 1]
    estimated = drift.estimated(probabilities)
    realised = f1_on(model, fresh)
    assert abs(estimated.f1 - realised) <= 0.03, (estimated.f1, realised)


@pytest.mark.parametrize(
    ("batch_f1", "relevant", "drifted"),
    [(0.60, 1000.0, True), (0.67, 1000.0, False), (0.60, 20.0, False)],
)
def test_the_expected_tests_tolerance_grows_for_small_batches(
    batch_f1: float, relevant: float, drifted: bool
) -> None:
    expected = {"f1": 0.70, "f1_sd": 0.01}
    evidence = drift.Evidence(0.5, 0.7, (), expected, drift.Measured(batch_f1, 2_000, relevant))
    assert drift.expected(evidence).drifted is drifted


def test_a_batch_in_which_every_client_stayed_raises_no_f1_alarm_but_counts_as_fewer_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An F1 with nobody to find is 0 whatever the model does: it proves nothing.

    That nobody left where the model expected some two dozen is news, though: the exits
    test says so, and the model is retrained: on the window that did best on the newest
    rows, which reach back into the earlier file (this run's hold no exit to judge on).
    """
    config = first_model_deployed(tmp_path, capsys, seed=73)
    stayed = clients_like(3_000, seed=74, drifted=False)
    stayed[stayed[TARGET] == 0].head(150).to_csv(config.input_folder / "b.csv", index=False)
    line = run_once(config, capsys)
    assert "no model drift (F1 not measurable: no client of the 150 new rows left " in line
    assert "attrition changed (0 of 150 new clients left, the model expected " in line
    assert (
        "retraining: all ingested data did best of the candidates (this run's rows alone too "
        "few to judge; drift found) on the 3,150 newest labelled rows" in line
    ), line
    assert "retrained and redeployed: release " in line.splitlines()[0], line


def test_the_expected_test_uses_the_estimate_when_the_new_rows_have_no_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = first_model_deployed(tmp_path, capsys, seed=71)
    unlabelled = clients_like(2_000, seed=72, drifted=True).drop(columns=[TARGET])
    unlabelled[TARGET] = None
    unlabelled.to_csv(config.input_folder / "b.csv", index=False)
    assert "estimated F1 (no labels)" in run_once(config, capsys)
    with open_history(config) as history:
        [row] = history.rows("SELECT dataset FROM scores WHERE purpose = 'estimated-cbpe'")
    assert row["dataset"] == "rows without labels of b.csv"


@pytest.mark.slow
def test_a_staged_model_waits_for_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = scenario_workspace(tmp_path / "workspace", "expected")
    raw = json.loads(config.path.read_text())
    config.path.write_text(json.dumps({**raw, "stage_retrained": True}))
    config = load_config(config.path)
    clients_like(3_000, seed=81, drifted=False).to_csv(config.input_folder / "a.csv", index=False)
    run_once(config, capsys)
    live = releases.current_release(config.deployment_folder)
    clients_like(3_000, seed=82, drifted=True).to_csv(config.input_folder / "b.csv", index=False)
    line = run_once(config, capsys)
    assert releases.current_release(config.deployment_folder).id == live.id
    staged_id = releases.promotable(config.deployment_folder)[-1].id
    assert line.startswith(f"WARNING: model drift found, retrained and staged release {staged_id}")
    said = state.verdict(state.read(config))
    assert said.severity == Severity.WARNING
    assert (
        said.headline
        == f"release {staged_id} staged, waiting for promotion; release {live.id} live"
    )
    assert said.action == f"Check release {staged_id}, then deployment.py --promote makes it live."
    with open_history(config) as history:
        [staging] = history.rows("SELECT recorded_at FROM deployments WHERE action = 'stage'")
    report = pdf_text(config.output_file(fullprocess.REPORT_NAME))
    assert "Attrition-risk model: WARNING" in report
    stamp = staging["recorded_at"][:19].replace("T", " ")
    assert f"model last retrained {stamp} UTC" in report
    listed = run_script("deployment.py", "--list", "--config", str(config.path), cwd=tmp_path)
    staged = [line for line in listed.stdout.splitlines() if line.startswith("s ")]
    assert len(staged) == 1 and staged[0].endswith("b.csv")
    promoted = run_script("deployment.py", "--promote", "--config", str(config.path), cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    now = releases.current_release(config.deployment_folder)
    assert now.id != live.id and now.trained_on() == ["b.csv"]
    assert promoted.stdout.startswith(f"promoted release {now.id} (test F1 ")
    again = run_script("deployment.py", "--promote", "--config", str(config.path), cwd=tmp_path)
    assert "no staged release newer than the live one" in again.stderr


@pytest.mark.slow
def test_the_course_flow_is_unchanged_on_the_shipped_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default config on the shipped data: the same decisions as the course makes."""
    for folder in ("practicedata", "sourcedata", "testdata"):
        shutil.copytree(PROJECT / folder, tmp_path / folder)
    raw = json.loads((PROJECT / "config.json").read_text())
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**raw, "api_url": "http://127.0.0.1:9"}))
    assert run_once(load_config(config_path), capsys).startswith("NOTICE: first model deployed")
    config_path.write_text(
        json.dumps(
            {
                **raw,
                "api_url": "http://127.0.0.1:9",
                "input_folder_path": "sourcedata",
                "output_model_path": "models",
            }
        )
    )
    config = load_config(config_path)
    second = run_once(config, capsys)
    assert second.startswith("NOTICE: model drift found, retrained and redeployed: release ")
    assert "model drift found (new-data F1 0.3543 < deployed 0.7149)" in second
    release = releases.current_release(config.deployment_folder)
    assert release.trained_on() == release.ingested_files() == ["dataset3.csv", "dataset4.csv"]
    assert release.score() == pytest.approx(0.4981, abs=1e-4)
    assert run_once(config, capsys).startswith("NOTICE: no new data")
