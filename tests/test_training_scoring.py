"""training.py and scoring.py against independent computations."""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import ingestion
import scoring
import training
from drs import datagen, modelling
from drs.config import FEATURES, TARGET, Config
from drs.errors import DataError
from drs.files import file_sha256, read_score
from drs.history import open_history

FEATURES = list(FEATURES)


def reference_model(penalty_spelling: str = "l1_ratio") -> object:
    """The course model, built here from its settings rather than from training.py."""
    settings = {
        "C": 1.0,
        "solver": "liblinear",
        "tol": 1e-4,
        "max_iter": 100,
        "random_state": 0,
        "fit_intercept": True,
        "intercept_scaling": 1,
        "class_weight": None,
    }
    if penalty_spelling == "l1_ratio":
        regression = LogisticRegression(l1_ratio=0.0, **settings)
    else:
        regression = LogisticRegression(penalty="l2", **settings)
    return make_pipeline(SimpleImputer(strategy="median"), regression)


def fit_quietly(model: object, data: pd.DataFrame) -> object:
    """Fit, ignoring the FutureWarning of the deprecated penalty= spelling."""
    labelled = data[data[TARGET].notna()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return model.fit(labelled[FEATURES], labelled[TARGET].astype(int))


@pytest.fixture
def data(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training data with blank cells and unlabelled rows, test data), read by plain pandas."""
    train_path = datagen.write_files(tmp_path / "train", 500, seed=21, missing_rate=0.08)[0]
    test_path = datagen.write_files(tmp_path / "test", 300, seed=22, missing_rate=0.08)[0]
    train = pd.read_csv(train_path)
    train.loc[train.index % 17 == 0, TARGET] = np.nan
    return train, pd.read_csv(test_path)


def test_training_equals_an_independent_pipeline_with_the_spec_settings(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = data
    assert train[FEATURES].isna().any().all()
    assert test[FEATURES].isna().any().all()
    model = modelling.train(train)
    expected = fit_quietly(reference_model(), train).predict_proba(test[FEATURES])
    np.testing.assert_allclose(model.predict_proba(test[FEATURES]), expected, rtol=0, atol=1e-9)
    # l1_ratio=0 is the L2 penalty: the same fit as the deprecated penalty="l2".
    old_spelling = fit_quietly(reference_model("penalty"), train).predict_proba(test[FEATURES])
    np.testing.assert_allclose(expected, old_spelling, rtol=0, atol=1e-12)
    assert (model.predict(test[FEATURES]) == (expected[:, 1] > 0.5)).all()


def test_the_saved_model_has_the_spec_settings_and_training_medians(
    config: Config,
) -> None:
    ingestion.run(config)
    training.run(config)
    model = pickle.loads(config.model_path.read_bytes())
    imputer, regression = (step for _, step in model.steps)
    assert imputer.strategy == "median"
    params = regression.get_params()
    assert {key: params[key] for key in ("C", "solver", "tol", "max_iter", "random_state")} == {
        "C": 1.0,
        "solver": "liblinear",
        "tol": 1e-4,
        "max_iter": 100,
        "random_state": 0,
    }
    assert params["l1_ratio"] == 0.0
    assert params["fit_intercept"] is True
    assert params["intercept_scaling"] == 1
    assert params["class_weight"] is None
    final = pd.read_csv(config.final_data_path)
    labelled = final[final[TARGET].notna()]
    np.testing.assert_array_equal(imputer.statistics_, labelled[FEATURES].median().to_numpy())
    test = pd.read_csv(config.test_data_path)
    expected = fit_quietly(reference_model(), final).predict_proba(test[FEATURES])
    np.testing.assert_allclose(model.predict_proba(test[FEATURES]), expected, rtol=0, atol=1e-9)


def test_blank_cells_are_filled_with_training_medians_in_training_and_prediction(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = data
    model = modelling.train(train)
    labelled = train[train[TARGET].notna()]
    blank = pd.DataFrame({column: [np.nan, 5.0] for column in FEATURES})
    filled = pd.DataFrame({column: [labelled[column].median(), 5.0] for column in FEATURES})
    np.testing.assert_allclose(model.predict_proba(blank), model.predict_proba(filled), atol=0)


def test_rows_without_a_target_are_left_out_and_counted(
    data: tuple[pd.DataFrame, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    train, test = data
    unlabelled = int(train[TARGET].isna().sum())
    assert unlabelled == 30
    caplog.set_level(logging.INFO)
    with_blanks = modelling.train(train)
    assert f"left out {unlabelled} row(s) without a value in 'exited'" in caplog.text
    only_labelled = modelling.train(train[train[TARGET].notna()])
    np.testing.assert_array_equal(
        with_blanks.predict_proba(test[FEATURES]), only_labelled.predict_proba(test[FEATURES])
    )


def test_training_warns_about_nothing(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = modelling.train(train)
        model.predict_proba(test[FEATURES])
    assert [str(warning.message) for warning in caught] == []


@pytest.mark.parametrize("targets", [[1, 1, 1, np.nan], [0, 0, 0, 0], [np.nan, np.nan]])
def test_a_dataset_without_both_classes_is_a_clear_error(targets: list[float]) -> None:
    frame = pd.DataFrame({column: range(len(targets)) for column in FEATURES})
    frame[TARGET] = targets
    with pytest.raises(DataError, match=r"'exited' needs both 0 and 1 in the data"):
        modelling.train(frame)


def test_training_without_finaldata_says_run_ingestion_first(config: Config) -> None:
    with pytest.raises(DataError, match=re.escape("finaldata.csv: not found; run ingestion.py")):
        training.run(config)


def hand_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    true_positive = int(np.sum((predicted == 1) & (truth == 1)))
    false_positive = int(np.sum((predicted == 1) & (truth == 0)))
    false_negative = int(np.sum((predicted == 0) & (truth == 1)))
    if true_positive == 0:
        return 0.0
    return 2 * true_positive / (2 * true_positive + false_positive + false_negative)


def test_f1_equals_a_hand_computation(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = data
    model = modelling.train(train)
    predicted = model.predict(test[FEATURES])
    expected = hand_f1(test[TARGET].to_numpy(), predicted)
    assert 0.3 < expected < 1
    assert modelling.f1_of(model, test) == pytest.approx(expected, abs=1e-12)


class Constant:
    """A stand-in model that predicts fixed labels."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = np.array(labels)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.labels[: len(features)]


@pytest.mark.parametrize(
    ("truth", "predicted", "expected"),
    [
        ([1, 0, 1, 1], [1, 1, 0, 1], 2 * 2 / (2 * 2 + 1 + 1)),
        ([1, 1, 0, 0], [0, 0, 0, 0], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
        ([1, 1, 0], [1, 1, 0], 1.0),
    ],
)
def test_f1_on_small_known_tables(truth: list[int], predicted: list[int], expected: float) -> None:
    frame = pd.DataFrame({column: 1.0 for column in FEATURES}, index=range(len(truth)))
    frame[TARGET] = truth
    assert modelling.f1_of(Constant(predicted), frame) == pytest.approx(expected, abs=1e-12)
    assert hand_f1(np.array(truth), np.array(predicted)) == pytest.approx(expected, abs=1e-12)


def test_scoring_leaves_out_rows_without_a_target() -> None:
    frame = pd.DataFrame({column: 1.0 for column in FEATURES}, index=range(4))
    frame[TARGET] = [1, np.nan, 0, 1]
    # The model sees only the labelled rows: [1, 0, 1] against predictions [1, 1, 1].
    assert modelling.f1_of(Constant([1, 1, 1]), frame) == pytest.approx(0.8)


def test_scoring_writes_one_number_and_a_history_row(config: Config) -> None:
    ingestion.run(config)
    model = training.run(config)
    f1 = scoring.run(config)
    text = config.score_path.read_text()
    assert text.count("\n") == 1
    assert float(text) == f1 == read_score(config.score_path)
    test = pd.read_csv(config.test_data_path)
    expected = hand_f1(test[TARGET].to_numpy(), model.predict(test[FEATURES]))
    assert f1 == pytest.approx(expected, abs=1e-12)
    with open_history(config) as history:
        (row,) = history.rows("SELECT * FROM scores WHERE purpose = 'test'")
        (cv,) = history.rows("SELECT * FROM scores WHERE purpose = 'expected-cv'")
    assert cv["model_sha256"] == row["model_sha256"]
    assert cv["dataset"] == "5-fold cross-validation on dataset1.csv, dataset2.csv"
    assert cv["f1"] == json.loads(config.model_card_path.read_text())["expected"]["f1"]
    assert row["f1"] == f1
    assert row["model_sha256"] == file_sha256(config.model_path)
    assert row["dataset"] == str(config.test_data_path)
    assert row["purpose"] == "test"
