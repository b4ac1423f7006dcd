"""The model stays right, and its alarms mean something, on streams of known behaviour.

Clients come from the streams benchmark's generator (bench/bench_streams.py): their
probability of leaving is known and not linear in the raw features, and a behaviour can
flip, double its attrition rate or shift the population while each client's chance of
leaving stays as it was. "Best" is the project's own model fitted on 50,000 fresh rows
of the behaviour.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bench_streams as streams
import numpy as np
import pandas as pd
import pytest
from helpers import tick_with_details

from drs import drift, modelling, releases, retraining
from drs.config import FEATURES, TARGET, Config, load_config
from drs.runs import RunRecord

SHIFTED = streams.A._replace(shift=1.0)
DOUBLED = streams.A._replace(rate=2 * streams.A.rate)


def batch(rows: int, seed: int, behaviour: streams.Behaviour = streams.A) -> pd.DataFrame:
    return streams.clients(rows, seed, behaviour)


def workspace(root: Path, drift_test: str = "expected", **extra: Any) -> Config:
    """An empty input folder, test data of behaviour A, an alert command that counts."""
    (root / "incoming").mkdir(parents=True)
    (root / "testdata").mkdir()
    batch(2_000, 1).to_csv(root / "testdata" / "testdata.csv", index=False)
    alerts = root / "alerts.txt"
    (root / "config.json").write_text(
        json.dumps(
            {
                "input_folder_path": "incoming",
                "output_folder_path": "ingesteddata",
                "test_data_path": "testdata",
                "output_model_path": "models",
                "prod_deployment_path": "production_deployment",
                "drift_test": drift_test,
                "api_url": "http://127.0.0.1:9",
                "alert_command": f"head -n 1 >> '{alerts}'",
                **extra,
            }
        )
    )
    return load_config(root / "config.json")


def arrive(config: Config, name: str, frame: pd.DataFrame, when: int) -> None:
    """A file in the input folder, arriving at minute `when` (arrival order is mtime)."""
    path = config.input_folder / name
    frame.to_csv(path, index=False)
    os.utime(path, (1_700_000_000 + 60 * when, 1_700_000_000 + 60 * when))


def tick(config: Config, capsys: pytest.CaptureFixture[str]) -> str:
    """One fullprocess.py run in this process (its libraries already imported).

    What its outcome line says it did (the severity left out), then the details the log
    gave just before it.
    """
    out, details = tick_with_details(config, capsys)
    return "\n".join([out.strip().split(": ", 1)[1], *details])


def alerts(config: Config) -> list[str]:
    """The subject line of each alert the command got."""
    path = config.root / "alerts.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.startswith("[risk model ")]


def live(config: Config) -> releases.Release:
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    return release


def ratio(config: Config, behaviour: streams.Behaviour, judge: streams.Judge) -> float:
    """The deployed model's F1 against the best model's, on fresh rows of behaviour."""
    return ratio_of(live(config).load_model(), behaviour, judge)


def ratio_of(model: Any, behaviour: streams.Behaviour, judge: streams.Judge) -> float:
    """model's F1 against the best model's, on fresh rows of behaviour."""
    x, truth, best = judge.sample(behaviour)
    return streams.f1(truth, model.predict(x)) / best


@pytest.fixture(scope="module")
def judge() -> streams.Judge:
    return streams.Judge(streams.PROJECT)


def first_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], **config: Any) -> Config:
    space = workspace(tmp_path / "workspace", **config)
    arrive(space, "a.csv", batch(2_000, 2), 0)
    assert tick(space, capsys).startswith("first model deployed")
    return space


# 1. Windows that follow change.


def test_the_newest_window_is_this_runs_files_not_everything_since_the_deployed_model() -> None:
    chosen = retraining.windows(["a.csv", "b.csv", "c.csv", "d.csv"], ["d.csv"], 2)
    assert chosen == {
        retraining.ALL_DATA: ["a.csv", "b.csv", "c.csv", "d.csv"],
        retraining.NEW_FILES: ["d.csv"],
        "newest 2 file(s)": ["c.csv", "d.csv"],
    }


@pytest.mark.slow
def test_a_change_after_quiet_batches_is_followed_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], judge: streams.Judge
) -> None:
    """Three quiet batches, then the rule flips: the first flipped batch brings a new model."""
    space = first_model(tmp_path, capsys)
    for number in (1, 2, 3):
        arrive(space, f"b{number}.csv", batch(1_000, 10 + number), number)
        tick(space, capsys)
    arrive(space, "b4.csv", batch(1_000, 14, streams.FLIPPED), 4)
    line = tick(space, capsys)
    assert "retrained and redeployed: release " in line.splitlines()[0], line
    assert "retraining: this run's new files won on the 1,000 newest labelled rows" in line
    assert ratio(space, streams.FLIPPED, judge) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("drift_test", ["expected", "raw"])
def test_a_clearly_better_model_goes_live_even_when_no_test_fired(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    drift_test: str,
) -> None:
    """Every run with enough new labels challenges the champion, except with the course's test.

    The tests are made blind here, so only the challenge can find the flipped behaviour.
    """
    space = first_model(tmp_path, capsys, drift_test=drift_test)
    blind = drift.DriftVerdict(False, "blind for this test")
    monkeypatch.setitem(drift.MODEL_DRIFT_TESTS, drift_test, lambda evidence: blind)
    monkeypatch.setattr(drift, "exits", lambda actual, probabilities: blind)
    arrive(space, "b.csv", batch(1_000, 20, streams.FLIPPED), 1)
    line = tick(space, capsys)
    if drift_test == "raw":
        assert "kept the deployed model" in line.splitlines()[0], line
        assert "retraining" not in line, "the course's test alone decides to retrain"
    else:
        assert "retrained and redeployed: release " in line.splitlines()[0], line
        assert "no model drift (blind for this test)" in line
        assert "retraining: this run's new files won on the 1,000 newest labelled rows" in line


def rotation_batch(tick: int) -> pd.DataFrame:
    """The rotation stream's batch of this tick: the rule turned by (tick - 2) pi / 8."""
    behaviour = streams.A._replace(angle=np.pi * (tick - 2) / 8)
    name = f"b{tick:03d}.csv"
    return streams.clients(1_000, streams.seed_of("rotation", tick, name), behaviour, 0.005)


def test_a_turning_behaviour_is_followed_on_the_evidence_of_every_new_row(
    judge: streams.Judge,
) -> None:
    """The rule keeps turning: the model of the last batch falls to 0.88x the best.

    Judged on one held-out slice of 300 rows, the better model of the newest rows was not
    clearly better, and the champion stayed. Cross-validated on all 1,000 new rows, and
    judged on their probabilities too, it is: it replaces the champion.
    """
    before, now = rotation_batch(5), rotation_batch(6)
    champion = modelling.train(before)
    frames = {"b005.csv": before, "b006.csv": now}
    chosen = retraining.windows(list(frames), ["b006.csv"], None, ["b005.csv"])
    assert ratio_of(champion, streams.A._replace(angle=np.pi / 2), judge) < 0.9
    choice = retraining.choose(frames, chosen, ["b006.csv"], champion)
    assert choice.winner is not None, choice.reason
    assert " won on the 1,000 newest labelled rows (candidates out of fold)" in choice.reason
    refit = modelling.train(pd.concat([frames[name] for name in choice.winner.files]))
    assert ratio_of(refit, streams.A._replace(angle=np.pi / 2), judge) >= 0.9


def test_surer_probabilities_count_but_a_routine_run_swaps_models_only_for_a_real_gain() -> None:
    """The same calls, one fewer wrong, with probabilities far surer of the truth.

    The F1 can hardly tell the two apart; the Brier score can. Without a drift found the
    champion still stays: 1 call in 1,000 is not worth a new release. After one, it goes.
    """
    truth = np.array([1, 0] * 1_000)
    calls = truth.copy()
    calls[:40:2] = 0  # 20 clients who left, missed by both models
    unsure = retraining.Judged(calls, truth, np.where(calls == 1, 0.6, 0.4))
    better_calls = calls.copy()
    better_calls[0] = 1
    sure = retraining.Judged(better_calls, truth, np.where(better_calls == 1, 0.9, 0.1))
    assert not retraining.Judged(sure.predicted, truth).beats(unsure), "on the F1 alone: no"
    assert sure.beats(unsure, retraining.CHALLENGE_Z), "with the Brier score: clearly"
    scored = [retraining.Candidate(retraining.ALL_DATA, ["a.csv"], 2_000, sure.f1)]
    judged = {retraining.ALL_DATA: sure}
    assert retraining.decide(scored, judged, unsure).winner is None
    assert retraining.decide(scored, judged, unsure, drift_found=True).winner is not None


def test_the_deployed_models_window_grows_with_the_files_since() -> None:
    names = ["a.csv", "b.csv", "c.csv", "d.csv"]
    assert retraining.windows(names, ["d.csv"], None, ["b.csv", "c.csv"]) == {
        retraining.ALL_DATA: names,
        retraining.NEW_FILES: ["d.csv"],
        retraining.SINCE_DEPLOYED: ["b.csv", "c.csv", "d.csv"],
    }
    # Trained on every file (the course's way): the same window as all the data.
    assert retraining.SINCE_DEPLOYED not in retraining.windows(names, ["d.csv"], None, names)


def one_candidate(
    champion_misses: int, candidate_misses: int
) -> tuple[
    retraining.Judged, retraining.Judged, list[retraining.Candidate], dict[str, retraining.Judged]
]:
    """A champion and one candidate (all the data) on 100 rows, each wrong on 2 rows a miss.

    Returns the champion, the candidate, and the candidate as decide() takes it.
    """
    truth = np.array([1, 0] * 50)

    def missing(pairs: int) -> retraining.Judged:
        return retraining.Judged(np.array([1, 0] * (50 - pairs) + [0, 1] * pairs), truth)

    champion, candidate = missing(champion_misses), missing(candidate_misses)
    scored = [retraining.Candidate(retraining.ALL_DATA, ["a.csv"], 1_000, candidate.f1)]
    return champion, candidate, scored, {retraining.ALL_DATA: candidate}


def test_noise_picks_more_data_and_a_model_found_drifting_gives_way_only_to_no_worse() -> None:
    """After a drift found the champion stays only if it does at least as well."""
    champion, candidate, scored, judged = one_candidate(champion_misses=3, candidate_misses=2)
    assert retraining.decide(scored, judged, champion).winner is None, "not clearly better"
    found = retraining.decide(scored, judged, champion, drift_found=True)
    assert found.winner is not None and "did better than the model found drifting" in found.reason
    kept = retraining.decide(scored, judged, candidate, drift_found=True)
    assert kept.winner is None and "no candidate did as well as" in kept.reason


# 2. Small data still retrains.


@pytest.mark.slow
def test_course_size_batches_a_drift_found_retrains_on_all_data_and_says_it_was_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = workspace(tmp_path / "workspace", drift_test="raw")
    arrive(space, "a.csv", batch(24, 2), 0)  # the course's practice data is as small
    tick(space, capsys)
    before = live(space)
    arrive(space, "b.csv", batch(12, 30, streams.FLIPPED), 1)
    line = tick(space, capsys)
    assert "model drift found (new-data F1 " in line, line
    assert "retrained and redeployed: release " in line.splitlines()[0], line
    assert (
        "retraining: not judged: the data of the newest 2 file(s) has " in line
        and "drift found, so retrained on all ingested data as the course does" in line
    ), line
    after = live(space)
    assert after.id != before.id and after.trained_on() == ["a.csv", "b.csv"]


@pytest.mark.slow
def test_course_size_batches_a_drift_found_on_the_new_rows_retrains_on_them_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], judge: streams.Judge
) -> None:
    """A dozen clients of a flipped behaviour, too many of whom left: the exits test finds it.

    Too few to judge models on in folds, but enough one row at a time: a model of all the
    data mixes the two behaviours and flags nobody; a model of these twelve rows follows
    the flip.
    """
    space = workspace(tmp_path / "workspace")
    first, changed = batch(24, 2), batch(12, 32, streams.FLIPPED)
    arrive(space, "a.csv", first, 0)
    tick(space, capsys)
    arrive(space, "b.csv", changed, 1)
    line = tick(space, capsys)
    assert "retrained and redeployed: release " in line.splitlines()[0], line
    assert "attrition changed (6 of 12 new clients left" in line, line
    assert (
        "no model drift (F1 not measurable: the model flagged none of the 12 new rows (6 of "
        "them left); the exits count judges them)" in line
    ), line
    assert (
        "retraining: this run's new files did best, judged on this run's 12 rows alone, each "
        "left out in turn, by the Brier score" in line
    ), line
    assert live(space).trained_on() == ["b.csv"]
    assert ratio(space, streams.FLIPPED, judge) >= 0.9
    mixed = modelling.train(pd.concat([first, changed]))
    assert ratio_of(mixed, streams.FLIPPED, judge) < 0.5


def course_files(ticks: int) -> dict[str, pd.DataFrame]:
    """The course-size stream's files, in the order they arrive, up to this tick."""
    made = streams.streams(quick=False)["course-12"]
    files = {
        batch.name: streams.clients(
            batch.rows, streams.seed_of(made.name, "first", n), batch.behaviour, 0.005
        )
        for n, batch in enumerate(made.first)
    }
    for number, each in enumerate(made.ticks[:ticks], start=1):
        for batch in each.batches:
            seed = streams.seed_of(made.name, number, batch.name)
            files[batch.name] = streams.clients(batch.rows, seed, batch.behaviour, 0.005)
    return files


def test_course_size_batches_are_judged_on_the_last_few_files_and_follow_a_flip(
    judge: streams.Judge,
) -> None:
    """Batches of 12 rows; the behaviour flipped four batches ago; the model knows only A.

    One batch holds too few exits to judge on (it used to leave the model as it was);
    the newest files together hold enough, and a model of them follows the flip.
    """
    files = course_files(8)
    names = list(files)
    deployed = names[: names.index("b004.csv") + 1]
    champion = modelling.train(pd.concat([files[name] for name in deployed]))
    chosen = retraining.windows(names, ["b008.csv"], None, deployed)
    choice = retraining.choose(files, chosen, ["b008.csv"], champion)
    assert choice.judged and choice.winner is not None, choice.reason
    assert choice.winner.files == ["b004.csv", "b005.csv", "b006.csv", "b007.csv", "b008.csv"]
    assert choice.reason.startswith("newest 5 file(s) won on the 60 newest labelled rows")
    assert ratio_of(champion, streams.FLIPPED, judge) < 0.1
    refit = modelling.train(pd.concat([files[name] for name in choice.winner.files]))
    assert ratio_of(refit, streams.FLIPPED, judge) >= 0.9


def test_a_dozen_rows_found_changed_are_judged_one_at_a_time_so_noise_keeps_all_the_data(
    judge: streams.Judge,
) -> None:
    """The course stream's last quiet batch and its first flipped one, each found drifting.

    On the quiet one a model of all the data predicts each row best; on the flipped one a
    model of its own rows does, and it follows the flip where all the data cannot.
    """
    for ticks, winner in ((3, retraining.ALL_DATA), (4, retraining.NEW_FILES)):
        files = course_files(ticks)
        names, newest = list(files), list(files)[-1]
        deployed = names[:2]
        champion = modelling.train(pd.concat([files[name] for name in deployed]))
        chosen = retraining.windows(names, [newest], None, deployed)
        choice = retraining.choose(files, chosen, [newest], champion, True, True, deployed)
        assert choice.winner is not None and choice.winner.window == winner, choice.reason
        assert "judged on this run's 12 rows alone, each left out in turn" in choice.reason
    everything = modelling.train(pd.concat(files.values()))
    assert ratio_of(everything, streams.FLIPPED, judge) < 0.1
    refit = modelling.train(files[newest])
    assert ratio_of(refit, streams.FLIPPED, judge) >= 0.9


def test_a_window_a_hundred_times_larger_than_the_rows_judged_is_fitted_once() -> None:
    """A year of dozen-row files is 600,000 rows: twelve fits of it would take 14 s."""
    changed = batch(12, 32, streams.FLIPPED)
    small, large = batch(100, 5), batch(1_300, 6)
    once = modelling.train(large).predict_proba(changed[list(FEATURES)])[:, 1]
    judged = retraining.left_one_out(pd.concat([large, changed]), changed, "all")
    assert isinstance(judged, np.ndarray) and np.allclose(judged, once)
    each = retraining.left_one_out(pd.concat([small, changed]), changed, "all")
    without_all = modelling.train(small).predict_proba(changed[list(FEATURES)])[:, 1]
    assert isinstance(each, np.ndarray) and not np.allclose(each, without_all)


def test_a_drift_found_on_too_few_rows_of_its_own_retrains_on_the_best_window() -> None:
    """Judged on earlier files too, which the champion may have learnt: it is not kept."""
    champion, _, scored, judged = one_candidate(champion_misses=2, candidate_misses=3)
    kept = retraining.decide(scored, judged, champion, drift_found=True)
    assert kept.winner is None, "judged on this run's rows alone, the better champion stays"
    chosen = retraining.decide(scored, judged, champion, drift_found=True, this_run_alone=False)
    assert chosen.winner is not None and "this run's rows alone too few" in chosen.reason
    quiet = retraining.decide(scored, judged, champion, this_run_alone=False)
    assert quiet.winner is None, "without a drift found the champion stays"


def test_after_a_drift_found_on_few_rows_the_champion_stays_only_if_clearly_better_unlearnt() -> (
    None
):
    """Judged on earlier files too: on rows it did not learn the champion must clearly win."""
    champion, _, scored, judged = one_candidate(champion_misses=2, candidate_misses=25)
    kept = retraining.decide(scored, judged, champion, drift_found=True, this_run_alone=False)
    assert kept.winner is None, kept.reason
    assert kept.reason.startswith("the deployed model stays: no candidate did as well as")
    # Its lead is all on the rows it was trained on (the first 60); on the rest, a tie.
    learnt_only = np.arange(100) < 60
    candidate = judged[retraining.ALL_DATA]
    predicted = np.where(learnt_only, champion.truth, candidate.predicted)
    ahead_where_learnt = retraining.Judged(predicted, champion.truth)
    assert ahead_where_learnt.beats(candidate)
    chosen = retraining.decide(
        scored, judged, ahead_where_learnt, True, this_run_alone=False, unlearnt=~learnt_only
    )
    assert chosen.winner is not None, chosen.reason


def test_a_window_whose_model_finds_none_of_the_leavers_never_replaces_one_that_finds_some() -> (
    None
):
    """Two behaviours mixed can cancel out: such a model gives a client manager nobody to call."""
    truth = np.array([1] * 4 + [0] * 16)
    champion = retraining.Judged(np.array([1, 0, 0, 0] + [1] * 3 + [0] * 13), truth)
    nobody = retraining.Judged(np.zeros(20, dtype=int), truth)
    assert not champion.beats(nobody), "on 20 rows the champion is not clearly ahead"
    scored = [retraining.Candidate(retraining.ALL_DATA, ["a.csv"], 1_000, nobody.f1)]
    kept = retraining.decide(
        scored, {retraining.ALL_DATA: nobody}, champion, drift_found=True, this_run_alone=False
    )
    assert kept.winner is None, kept.reason


# 3. Tests that see what matters, and only that.


def test_the_exits_test_catches_a_doubled_attrition_rate_and_ignores_covariate_shift() -> None:
    model = modelling.train(batch(5_000, 40))

    def verdict(behaviour: streams.Behaviour, seed: int) -> drift.DriftVerdict:
        rows = batch(1_000, seed, behaviour)
        return drift.exits(rows[TARGET], model.predict_proba(rows[list(FEATURES)])[:, 1])

    assert [verdict(DOUBLED, seed).drifted for seed in range(41, 46)] == [True] * 5
    assert [verdict(SHIFTED, seed).drifted for seed in range(41, 51)] == [False] * 10
    assert [verdict(streams.A, seed).drifted for seed in range(41, 51)] == [False] * 10
    said = verdict(DOUBLED, 41).reason
    assert " of 1,000 new clients left, the model expected " in said and "|z| > 3" in said
    sure = drift.exits([1] + [0] * 11, [1e-9] * 12)
    assert sure.drifted and sure.reason == (
        "1 of 12 new clients left, the model expected 0.0 (z over +99, |z| > 3)"
    )


def test_a_drift_found_on_all_the_data_is_told_apart_from_one_found_on_the_new_rows() -> None:
    """Only a drift the new rows themselves show asks a person to look at them."""
    known = {"f1": 0.8, "f1_sd": 0.01, "folds": 5}
    on_batch = drift.Measured(0.3, 1_000, 250.0, 250.0)
    raw = drift.raw(drift.Evidence(0.7252, 0.7254))
    labelled = drift.expected(drift.Evidence(0.7, 0.7, (), known, on_batch))
    estimated = drift.expected(drift.Evidence(0.7, 0.7, (), known, None, on_batch))
    assert raw.drifted and labelled.drifted and estimated.drifted
    assert (raw.on_new_rows, labelled.on_new_rows, estimated.on_new_rows) == (False, True, False)
    exits = drift.exits([1] * 50 + [0] * 50, [0.2] * 100)
    assert exits.drifted and exits.on_new_rows
    assert RunRecord(model_drift=raw._asdict()).drift_on_new_rows() is None
    for found in (labelled, estimated):
        assert RunRecord(model_drift=found._asdict()).drift_on_new_rows() == found._asdict()
    record = RunRecord(model_drift=raw._asdict(), exits_drift=exits._asdict())
    assert record.drift_on_new_rows() == exits._asdict()


def test_the_expected_tolerance_is_the_standard_error_of_the_mean_plus_sampling() -> None:
    """Five folds of spread 0.05: the mean is known to 0.05 / sqrt(5), not to 0.05."""
    expected = {"f1": 0.70, "f1_sd": 0.05, "folds": 5}
    measured = drift.Measured(0.62, 2_000, 500.0)
    sampling = np.sqrt(0.7 * 0.3 * 1.3 / 1_000)
    assert drift.tolerance(expected, measured) == pytest.approx(
        drift.TOLERANCE_Z * np.hypot(0.05 / np.sqrt(5), sampling)
    )
    assert drift.expected(drift.Evidence(0.5, 0.7, (), expected, measured)).drifted
    # A loss of 8.5 % of the F1 is caught on a batch of 2,000 rows (500 cases).
    costly = measured._replace(f1=0.64)
    assert drift.expected(drift.Evidence(0.5, 0.7, (), expected, costly)).drifted


def test_small_no_drift_batches_raise_no_feature_drift_and_a_real_shift_still_does() -> None:
    reference = batch(3_000, 50)
    flagged = [
        bool(drift.drifted_features(drift.feature_drift(reference, batch(50, seed))))
        for seed in range(60)
    ]
    assert sum(flagged) <= 1, "under 5 % of no-drift batches of 50 rows"
    shifted = drift.feature_drift(reference, batch(50, 99, SHIFTED))
    assert {"lastyear_activity", "number_of_employees"} <= set(drift.drifted_features(shifted))


@pytest.mark.slow
def test_a_covariate_shift_alone_raises_no_alarm_and_leaves_the_test_data_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bigger, less active clients who leave as the rule says: reported, not alarmed."""
    space = first_model(tmp_path, capsys)
    for number in (1, 2, 3):
        arrive(space, f"s{number}.csv", batch(1_500, 60 + number, SHIFTED), number)
        line = tick(space, capsys)
        assert "kept the deployed model" in line.splitlines()[0], line
        assert "no model drift" in line and "attrition changed" not in line
        assert "test data stale" not in line
        assert "3 of 3 features drifted" in line
    assert len(alerts(space)) == 1, alerts(space)  # the first model's


@pytest.mark.parametrize("test", ["parametric", "nonparametric"])
def test_the_score_history_tests_say_when_the_raw_test_decides(test: str) -> None:
    verdict = drift.model_drift(test, drift.Evidence(0.69, 0.70, [0.70]))
    assert verdict.drifted and verdict.fallback is not None
    assert f"(raw test: the {test} test needs 2 past test scores, the history has 1)" in (
        verdict.reason
    )
    assert drift.model_drift(test, drift.Evidence(0.69, 0.70, [0.70, 0.72])).fallback is None


# 4. Estimates you can lean on.


def test_the_estimate_uses_probabilities_calibrated_beside_the_model_and_has_an_interval() -> None:
    training = batch(3_000, 70)
    model = modelling.train(training)
    card = modelling.expected_performance(training)
    fresh = batch(3_000, 71)
    chance = model.predict_proba(fresh[list(FEATURES)])[:, 1]
    realised = drift.realised(fresh[TARGET], chance > 0.5).f1
    raw = drift.estimated(chance)
    calibrated = drift.estimated(drift.calibrated(chance, card["calibration"]), chance > 0.5)
    assert abs(raw.f1 - realised) > 0.05, "this model's own probabilities are not calibrated"
    assert abs(calibrated.f1 - realised) <= 0.03, (calibrated, realised)
    assert calibrated.low is not None and calibrated.high is not None and calibrated.sd
    assert calibrated.low < realised < calibrated.high
    assert 0 < calibrated.sd < 0.05
    assert type(model).__name__ == "Pipeline", "the calibration stays out of the model"


@pytest.mark.slow
def test_an_alarm_resting_on_the_estimate_alone_alerts_and_waits_for_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clients the model can hardly call, without labels: the estimate alarms, nothing retrains."""
    space = first_model(tmp_path, capsys)
    deployed = live(space)
    pool = batch(40_000, 80)
    chance = deployed.load_model().predict_proba(pool[list(FEATURES)])[:, 1]
    calibrated = drift.calibrated(chance, deployed.model_card()["expected"]["calibration"])
    unsure = pool[(calibrated > 0.35) & (calibrated < 0.65)].head(1_000)
    unsure = unsure.assign(**{TARGET: None})
    arrive(space, "b.csv", unsure, 1)
    line = tick(space, capsys)
    assert "kept the deployed model" in line.splitlines()[0], line
    assert "model drift found (estimated F1 (no labels) " in line and "95 % interval" in line
    assert "retraining: not retrained: the drift rests on an F1 estimated without labels" in line
    assert live(space).id == deployed.id
    assert len(alerts(space)) == 2
    assert alerts(space)[-1].startswith("[risk model WARNING] model drift found, no better model")


# The crash: the newest file without labels.


@pytest.mark.slow
def test_a_drift_whose_newest_file_has_no_labels_retrains_without_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = first_model(tmp_path, capsys, newest_files=1)
    arrive(space, "b.csv", batch(1_000, 90, streams.FLIPPED), 1)
    assert "retrained and redeployed: release " in tick(space, capsys).splitlines()[0]
    arrive(space, "c.csv", batch(1_000, 91), 2)
    arrive(space, "d.csv", batch(1_000, 92).assign(**{TARGET: None}), 3)
    line = tick(space, capsys)
    assert "retrained and redeployed: release " in line.splitlines()[0], line
    assert "newest 1 file(s) not trained" in line


@pytest.mark.slow
def test_the_streams_benchmark_meets_its_targets_on_the_key_streams() -> None:
    """A flip after quiet batches and course-size batches, each tick the real fullprocess.py."""
    made = streams.streams(quick=True)
    judge = streams.Judge(streams.PROJECT)
    import sys

    flip = streams.run_stream(made["flip"], "expected", streams.PROJECT, sys.executable, judge)
    assert min(r.ratio for r in flip) >= 0.9, streams.tick_table(flip)
    course = streams.run_stream(
        made["course-12"], "expected", streams.PROJECT, sys.executable, judge
    )
    assert all(r.deployed for r in course if r.alarm), streams.tick_table(course)
    assert min(r.ratio for r in course if r.changed) >= 0.9, streams.tick_table(course)
    assert all(r.exit == 0 for r in flip + course)
