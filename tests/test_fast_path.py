"""The prediction path whose cost is the arithmetic: equal to the pipeline, cached, stable."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import deploy_workspace, fitted, make_app, scaled_pipeline
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from drs import clients, linear, modelling
from drs.config import FEATURES, TARGET, Config
from drs.datarules import read_dataset
from drs.modelling import load_model

CELLS = st.one_of(
    st.just(np.nan), st.floats(0, 1e7, allow_nan=False), st.integers(0, 10**6).map(float)
)
FEATURE_ROWS = hnp.arrays(float, st.tuples(st.integers(1, 40), st.just(3)), elements=CELLS)


@pytest.fixture(scope="module")
def course_model() -> Any:
    """The course's pipeline, fitted on generated clients with blanks."""
    from drs import datagen

    data = datagen.generate(3_000, seed=8, missing_rate=0.05).astype(
        {column: "float64" for column in (*FEATURES, TARGET)}
    )
    return modelling.train(data)


def assert_equal_to_the_pipeline(model: Any, features: np.ndarray) -> None:
    frame = pd.DataFrame(features, columns=list(FEATURES))
    predictions, risk = linear.Scorer(model).predict(features)
    np.testing.assert_allclose(risk, model.predict_proba(frame)[:, 1], rtol=0, atol=1e-12)
    assert predictions.tolist() == model.predict(frame).tolist()


@settings(max_examples=300, deadline=None, database=None)
@given(features=FEATURE_ROWS)
def test_the_arrays_equal_the_pipeline_on_any_input(
    course_model: Any, features: np.ndarray
) -> None:
    assert linear.Scorer(course_model).linear is not None
    assert_equal_to_the_pipeline(course_model, features)


@settings(max_examples=300, deadline=None, database=None)
@given(row=hnp.arrays(float, 3, elements=CELLS))
def test_one_row_in_plain_python_equals_the_pipeline(course_model: Any, row: np.ndarray) -> None:
    frame = pd.DataFrame([row], columns=list(FEATURES))
    prediction, risk = linear.Scorer(course_model).predict_one(row.tolist())
    assert abs(risk - course_model.predict_proba(frame)[0, 1]) <= 1e-12
    assert prediction == course_model.predict(frame)[0]


@settings(max_examples=100, deadline=None, database=None)
@given(features=FEATURE_ROWS)
def test_one_row_gets_the_same_bits_alone_or_in_a_batch(
    course_model: Any, features: np.ndarray
) -> None:
    """A record asked about on its own, as a list of one, or among others: one answer."""
    scorer = linear.Scorer(course_model)
    batch_predictions, batch_risk = scorer.predict(features)
    for row, prediction, risk in zip(features, batch_predictions, batch_risk, strict=True):
        assert scorer.predict_one(row.tolist()) == (prediction, risk)
        alone_predictions, alone_risk = scorer.predict(row[np.newaxis, :])
        assert (alone_predictions[0], alone_risk[0]) == (prediction, risk)


def test_a_model_whose_imputer_fills_zeros_is_called_as_it_is() -> None:
    """The arrays fill NaN only: an imputer that treats 0 as missing is the model's to apply."""
    from sklearn.impute import SimpleImputer

    model = scaled_pipeline()
    model.set_params(impute=SimpleImputer(strategy="median", missing_values=0.0))
    rng = np.random.default_rng(5)
    training_rows = rng.gamma(2.0, 300.0, size=(400, 3)) * (rng.random((400, 3)) > 0.1)
    labels = (training_rows[:, 0] < 400).astype(int)
    model.fit(pd.DataFrame(training_rows, columns=list(FEATURES)), labels)
    features = np.array([[0.0, 250.0, 900.0], [300.0, 0.0, 0.0], [10.0, 20.0, 30.0]])
    assert linear.Scorer(model).linear is None
    assert_equal_to_the_pipeline(model, features)
    prediction, risk = linear.Scorer(model).predict_one(features[0].tolist())
    frame = pd.DataFrame(features[:1], columns=list(FEATURES))
    assert risk == model.predict_proba(frame)[0, 1] and prediction == model.predict(frame)[0]


@settings(max_examples=100, deadline=None, database=None)
@given(features=FEATURE_ROWS)
def test_scalers_folded_in_equal_the_pipeline_too(features: np.ndarray) -> None:
    model, _ = fitted(scaled_pipeline())
    assert_equal_to_the_pipeline(model, features)


@pytest.fixture
def deployed(tmp_path: Path) -> Config:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    (config.test_data_folder / "clients.csv").write_bytes(config.test_data_path.read_bytes())
    return config


def test_a_dataset_is_read_once_per_version_of_its_file(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    real = clients.read_dataset
    monkeypatch.setattr(clients, "read_dataset", lambda path: reads.append(path) or real(path))
    client = make_app(deployed).test_client()
    body = {"dataset_path": "testdata/clients.csv"}
    first = client.post("/prediction", json=body).get_data()
    assert client.post("/prediction", json=body).get_data() == first
    assert len(reads) == 1, "the second answer came from memory"

    path = deployed.test_data_folder / "clients.csv"
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # touched, not changed
    assert client.post("/prediction", json=body).get_data() == first
    assert len(reads) == 1, "same content: its SHA-256 says so"

    # Same size, same modification time, other content (two rows swapped): only the
    # change time and then the content's SHA-256 tell.
    header, one, two, *rest = path.read_text().splitlines(keepends=True)
    time.sleep(0.01)
    path.write_text(header + two + one + "".join(rest))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (
        status.st_size,
        status.st_mtime_ns,
    )
    answer = client.post("/prediction", json=body).get_json()
    assert len(reads) == 2
    before = client.post("/prediction", json={"dataset_path": "testdata/testdata.csv"}).get_json()
    assert answer["risk_scores"][:2] == before["risk_scores"][1::-1]


def test_the_cache_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    rows = "corporation,lastmonth_activity,lastyear_activity,number_of_employees\n"
    cache = clients.DatasetCache(max_files=2, max_rows=5)
    paths = []
    for number in range(4):
        path = tmp_path / f"d{number}.csv"
        path.write_text(rows + "".join(f"c{n},1,2,3\n" for n in range(number + 1)))
        paths.append(path)
        cache.get(path)
    # d0..d2 hold 1 + 2 + 3 rows: over 5, d0 went; d3 (4 rows) made d1 and d2 go too.
    assert list(cache._entries) == paths[-1:]


def test_answers_are_byte_for_byte_the_same_for_the_same_input(deployed: Config) -> None:
    bodies = [
        {"dataset_path": "testdata/testdata.csv", "top": 5, "explain": True},
        {"records": [dict.fromkeys(FEATURES, 7), dict.fromkeys(FEATURES, None)]},
    ]
    first, second = make_app(deployed).test_client(), make_app(deployed).test_client()
    for body in bodies:
        answers = {first.post("/prediction", json=body).get_data() for _ in range(3)}
        answers.add(second.post("/prediction", json=body).get_data())
        assert len(answers) == 1, body
    pages = {first.get("/clients?top=50").get_data(), second.get("/clients?top=50").get_data()}
    assert len(pages) == 1


def test_risk_scores_keep_their_full_precision(deployed: Config) -> None:
    answer = (
        make_app(deployed)
        .test_client()
        .post("/prediction", json={"dataset_path": "testdata/testdata.csv"})
    )
    text = answer.get_data(as_text=True)
    model = linear.Scorer(load_model(deployed.model_path))
    data = read_dataset(deployed.test_data_path)
    _, risk = model.predict(data[list(FEATURES)].to_numpy(float))
    assert answer.get_json()["risk_scores"] == risk.tolist()
    assert '"risk_scores":[' in text
