"""drift.py: the model-drift tests on known score histories, and the feature-drift measure."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

import ingestion
from drs import drift, releases
from drs.config import FEATURES, Config, DriftTest, check_drift_test
from drs.datarules import read_dataset
from drs.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("test", "new_f1", "deployed_f1", "history", "drifted"),
    [
        ("raw", 0.60, 0.70, [], True),
        ("raw", 0.70, 0.70, [], False),
        ("raw", 0.80, 0.70, [0.1, 0.9], False),
        # mean 0.70, sample sd 0.0316: bound 0.6368
        ("parametric", 0.63, 0.70, [0.66, 0.70, 0.74, 0.70], True),
        ("parametric", 0.64, 0.70, [0.66, 0.70, 0.74, 0.70], False),
        # too little history: falls back to the raw comparison
        ("parametric", 0.69, 0.70, [0.70], True),
        # Q1 0.68, Q3 0.72, IQR 0.04: bound 0.62
        ("nonparametric", 0.61, 0.70, [0.66, 0.68, 0.70, 0.72, 0.74], True),
        ("nonparametric", 0.63, 0.70, [0.66, 0.68, 0.70, 0.72, 0.74], False),
        # one outlier in the history widens nothing: quartiles resist it
        ("nonparametric", 0.61, 0.70, [0.0, 0.68, 0.70, 0.72, 0.74], True),
    ],
)
def test_model_drift_on_known_histories(
    test: str, new_f1: float, deployed_f1: float, history: list[float], drifted: bool
) -> None:
    verdict = drift.model_drift(test, drift.Evidence(new_f1, deployed_f1, history))
    assert verdict.drifted is drifted
    assert f"{new_f1:.4f}" in verdict.reason


def test_drift_of_identical_data_is_zero() -> None:
    data = pd.DataFrame({feature: [1.0, 5.0, 9.0, 2.0] for feature in FEATURES})
    measured_all = drift.feature_drift(data, data.copy())
    assert set(measured_all) == set(FEATURES)
    for measured in measured_all.values():
        assert measured == {"value": 0.0, "threshold": 0.1, "p_value": 1.0, "drifted": False}


def test_drift_is_the_wasserstein_distance_over_the_reference_std() -> None:
    rng = np.random.default_rng(0)
    before = rng.normal(100, 10, 500)
    after = rng.normal(105, 10, 400)  # a shift of half a standard deviation
    reference = pd.DataFrame({feature: before for feature in FEATURES})
    current = pd.DataFrame({feature: after for feature in FEATURES})

    measured = drift.feature_drift(reference, current)["lastyear_activity"]

    expected = wasserstein_distance(before, after) / np.std(before, ddof=1)
    assert measured["value"] == pytest.approx(expected)
    assert measured["value"] == pytest.approx(0.5, abs=0.12)
    assert measured["drifted"] is True


@pytest.mark.parametrize(
    ("reference", "current", "value", "drifted"),
    [
        ([0.0, 10.0, 20.0, 30.0], [0.0, 10.0, 20.0, 30.0], 0.0, False),
        (
            [0.0, 10.0, 20.0, 30.0],
            [0.5, 10.5, 20.5, 30.5],
            0.5 / np.std([0, 10, 20, 30], ddof=1),
            False,
        ),
        # Over the threshold, but four rows a side cannot tell it from chance.
        (
            [0.0, 10.0, 20.0, 30.0],
            [3.0, 13.0, 23.0, 33.0],
            3.0 / np.std([0, 10, 20, 30], ddof=1),
            False,
        ),
        ([0.0, 10.0, None, 30.0], [0.0, 10.0, 30.0, None], 0.0, False),  # blanks left out
        ([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], 0.0, False),  # constant, unchanged
        ([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 6.0], math.inf, False),  # one row of four
        ([5.0] * 40, [6.0] * 40, math.inf, True),  # constant, changed, on forty rows
        ([None, None, None, None], [1.0, 2.0, 3.0, 4.0], None, False),  # nothing to compare
    ],
)
def test_drift_edge_cases(
    reference: list[float | None], current: list[float | None], value: float | None, drifted: bool
) -> None:
    before = pd.DataFrame({f: reference for f in FEATURES}, dtype="float64")
    after = pd.DataFrame({f: current for f in FEATURES}, dtype="float64")
    measured = drift.feature_drift(before, after)["number_of_employees"]
    assert measured["drifted"] is drifted
    if value is None:
        assert measured["value"] is None
    else:
        assert measured["value"] == pytest.approx(value)


def test_every_test_in_the_table_gives_a_verdict_with_its_bound() -> None:
    evidence = drift.Evidence(0.5, 0.7, [0.66, 0.70, 0.74])
    for name, test in drift.MODEL_DRIFT_TESTS.items():
        verdict = test(evidence)
        assert isinstance(verdict.drifted, bool), name
        assert "0.5000" in verdict.reason
        assert verdict.bound is not None and 0 <= verdict.bound <= 1


def test_every_drift_test_the_config_may_name_exists() -> None:
    assert set(drift.MODEL_DRIFT_TESTS) == set(DriftTest)


def test_an_unknown_test_name_is_a_config_error_naming_the_choices(config: Config) -> None:
    with pytest.raises(ConfigError, match="must be one of raw, parametric, nonparametric"):
        check_drift_test(config._replace(drift_test="fancy"))
    check_drift_test(config._replace(drift_test="expected"))


def test_feature_drift_is_described_at_the_dataset_level() -> None:
    measured = {
        "a": {"value": 0.153, "threshold": 0.1, "drifted": True},
        "b": {"value": 0.02, "threshold": 0.1, "drifted": False},
        "c": {"value": None, "threshold": 0.1, "drifted": False},
    }
    assert drift.describe_feature_drift(measured) == "1 of 3 features drifted (a 0.153)"
    assert drift.describe_feature_drift({"b": measured["b"]}) == "no feature drifted (of 1)"


def test_a_changed_training_file_is_not_taken_for_the_training_data(
    trained: Config,
) -> None:
    from drs import drift

    release = releases.run(trained)
    frame, label = drift.training_data(trained, release)
    assert "trained on dataset1.csv, dataset2.csv" in label and "finaldata" not in label
    source = trained.root / "sourcedata" / "dataset3.csv"
    shutil.copy(source, trained.input_folder / "dataset2.csv")  # new data under an old name
    frame, label = drift.training_data(trained, release)
    assert label.endswith("(finaldata.csv)"), "the unchanged finaldata.csv, not the new file"
    assert len(frame) == len(read_dataset(trained.final_data_path))
    ingestion.run(trained)
    with pytest.raises(DataError, match=r"is no longer in practicedata or finaldata\.csv"):
        drift.training_data(trained, release)
