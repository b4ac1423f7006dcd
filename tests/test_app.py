"""app.py: every endpoint's contract through the Flask test client, over a deployed workspace."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from helpers import (
    BODIES,
    PROJECT,
    RECORD,
    STUB_PACKAGES,
    STUB_TIMINGS,
    TEST_DATASET,
    TOKEN,
    assert_error,
    deploy_workspace,
    finish_background_work,
    make_app,
    post,
    run_script,
    stub_slow_diagnostics,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingestion
import scoring
import training
from drs import diagnosis, modelling, releases
from drs.config import (
    FEATURES,
    ID_COLUMN,
    MODEL_NAME,
    Config,
    load_config,
)
from drs.datarules import read_dataset
from drs.errors import ConfigError, PipelineError
from drs.web import api, factory, shared


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """One deployed workspace for the module, with files to aim dataset paths at."""
    config = deploy_workspace(tmp_path_factory.mktemp("api") / "workspace")
    private = config.root / "private"
    private.mkdir()
    (private / "clients.csv").write_bytes(config.test_data_path.read_bytes())
    (config.test_data_folder / "escape.csv").symlink_to(private / "clients.csv")
    (config.test_data_folder / "alias.csv").symlink_to(config.test_data_path)
    (config.test_data_folder / "nocount.csv").write_text(
        "corporation,lastmonth_activity,lastyear_activity\nabcd,1,2\n"
    )
    return config


@pytest.fixture(scope="module")
def client(deployed: Config) -> FlaskClient:
    return make_app(deployed).test_client()


@pytest.fixture(scope="module")
def test_data(deployed: Config) -> Any:
    return read_dataset(deployed.test_data_path)


@pytest.fixture(scope="module")
def model(deployed: Config) -> Any:
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None
    return release.load_model()


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def features(frame: Any) -> Any:
    return frame[list(FEATURES)]


def test_health_names_the_deployed_release_without_token(deployed: Config) -> None:
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None
    response = make_app(deployed, TOKEN).test_client().get("/health")
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "ok"
    assert answer["model"] == {
        "release_id": release.id,
        "model_sha256": release.model_sha256,
        "deployed_at": release.manifest["deployed_at"],
        "score": release.score(),
    }
    assert answer["verdict"]["release_id"] == release.id
    assert answer["verdict"]["severity"] == "notice"
    assert answer["verdict"]["headline"] == f"no automated check yet; release {release.id} live"


def test_prediction_of_records_in_input_order(
    client: FlaskClient, test_data: Any, model: Any
) -> None:
    rows = test_data.head(12)
    records = [
        {column: None if is_nan(value) else value for column, value in row.items()}
        for row in rows[[ID_COLUMN, *FEATURES]].to_dict("records")
    ]
    records[3]["lastyear_activity"] = None  # a missing value is filled by the model
    records[4].pop(ID_COLUMN)  # corporation is optional
    records[5]["exited"] = 1  # other keys are ignored, as extra CSV columns are
    response = post(client, {"records": records})
    assert response.status_code == 200
    answer = response.get_json()
    assert list(answer) == ["predictions", "risk_scores"]
    expected = features(rows).astype("float64")
    expected.iloc[3, 1] = float("nan")
    assert answer["predictions"] == model.predict(expected).tolist()
    assert answer["risk_scores"] == pytest.approx(model.predict_proba(expected)[:, 1].tolist())


def test_prediction_of_a_dataset_with_top(client: FlaskClient, test_data: Any, model: Any) -> None:
    response = post(client, {"dataset_path": TEST_DATASET, "top": 5})
    assert response.status_code == 200
    answer = response.get_json()
    risk = model.predict_proba(features(test_data))[:, 1]
    assert answer["predictions"] == model.predict(features(test_data)).tolist()
    assert answer["risk_scores"] == pytest.approx(risk.tolist())
    top = answer["top"]
    assert [row["row"] for row in top] == sorted(range(len(risk)), key=lambda i: -risk[i])[:5]
    for row in top:
        assert row["corporation"] == test_data[ID_COLUMN].iloc[row["row"]]
        assert row["risk_score"] == pytest.approx(risk[row["row"]])
    assert [row["risk_score"] for row in top] == sorted(
        (row["risk_score"] for row in top), reverse=True
    )


def test_top_larger_than_the_input_returns_every_row(client: FlaskClient) -> None:
    record = {column: 1 for column in FEATURES}
    answer = post(client, {"records": [record, record], "top": 10**30}).get_json()
    assert [row["row"] for row in answer["top"]] == [0, 1]
    assert [row["corporation"] for row in answer["top"]] == [None, None]


@pytest.mark.parametrize(
    "path",
    [
        "testdata/../testdata/testdata.csv",
        "./practicedata/dataset1.csv",
        "ingesteddata/finaldata.csv",
        "testdata/alias.csv",  # a symlink that stays inside the data folders
    ],
)
def test_dataset_paths_inside_the_data_folders(client: FlaskClient, path: str) -> None:
    response = post(client, {"dataset_path": path})
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) > 0


def test_absolute_path_inside_a_data_folder_is_accepted(
    client: FlaskClient, deployed: Config
) -> None:
    response = post(client, {"dataset_path": str(deployed.test_data_path)})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([RECORD], "expected a JSON object, found a list"),
        ("records", "expected a JSON object, found text"),
        ({"records": [RECORD], "extra": 1}, "unknown field(s) 'extra'"),
        ({"dataset_paths": TEST_DATASET}, "unknown field(s) 'dataset_paths'"),
        ({}, "exactly one of 'dataset_path' and 'records'"),
        ({"top": 3}, "exactly one of"),
        ({"records": [RECORD], "dataset_path": TEST_DATASET}, "not both"),
        ({"dataset_path": 5}, "'dataset_path' must be a non-empty string"),
        ({"dataset_path": ""}, "'dataset_path' must be a non-empty string"),
        ({"dataset_path": None}, "'dataset_path' must be a non-empty string"),
        ({"records": {"a": RECORD}}, "'records' must be a non-empty list"),
        ({"records": []}, "'records' must be a non-empty list"),
        ({"records": [RECORD, 7]}, "records[1]: expected an object, found a number"),
        (
            {"records": [{"lastmonth_activity": 1}]},
            "records[0]: missing column(s) 'lastyear_activity', 'number_of_employees'",
        ),
        (
            {"records": [{**RECORD, "lastyear_activity": "twelve"}]},
            "column 'lastyear_activity' must be a number, found 'twelve'",
        ),
        ({"records": [{**RECORD, "lastyear_activity": "-12"}]}, "finite number >= 0, found -12"),
        ({"records": [{**RECORD, "number_of_employees": True}]}, "found a boolean"),
        ({"records": [{**RECORD, "number_of_employees": [1]}]}, "found a list"),
        ({"records": [{**RECORD, "lastmonth_activity": -1}]}, "finite number >= 0, found -1"),
        ({"records": [{**RECORD, "lastmonth_activity": 10**400}]}, "finite number >= 0, found inf"),
        ({"records": [{**RECORD, "corporation": 17}]}, "'corporation' must be text or null"),
        ({"records": [RECORD], "top": 0}, "'top' must be a whole number >= 1"),
        ({"records": [RECORD], "top": -2}, "'top' must be a whole number >= 1"),
        ({"records": [RECORD], "top": 2.5}, "'top' must be a whole number >= 1"),
        ({"records": [RECORD], "top": "3"}, "'top' must be a whole number >= 1, found text"),
        ({"records": [RECORD], "top": True}, "found a boolean"),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(
    client: FlaskClient, body: Any, fragment: str
) -> None:
    assert_error(post(client, body), 400, fragment)


@pytest.mark.parametrize(
    ("data", "content_type", "fragment"),
    [
        (b'{"records": [', "application/json", "body is not valid JSON"),
        (b"", "application/json", "body is not valid JSON"),
        (b'{"records": [{"lastmonth_activity": NaN}]}', "application/json", "NaN is not allowed"),
        (b'{"top": Infinity}', "application/json", "Infinity is not allowed"),
        (b"\xff\xfe\x00garbage", "application/json", "body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "body is not valid JSON"),
        (b'{"dataset_path": "testdata/testdata.csv"}', "text/plain", "Content-Type"),
        (b"dataset_path=testdata.csv", "application/x-www-form-urlencoded", "Content-Type"),
    ],
)
def test_bad_json_or_content_type_is_400(
    client: FlaskClient, data: bytes, content_type: str, fragment: str
) -> None:
    response = client.post("/prediction", data=data, content_type=content_type)
    assert_error(response, 400, fragment)


def test_no_content_type_is_400(client: FlaskClient) -> None:
    assert_error(client.post("/prediction", data=b"{}"), 400, "Content-Type")


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("../outside.csv", 400, "must name a file inside a data folder"),
        ("testdata/../private/clients.csv", 400, "must name a file inside a data folder"),
        ("testdata/../../../../../../etc/passwd", 400, "must name a file inside a data folder"),
        ("/etc/passwd", 400, "must name a file inside a data folder"),
        ("config.json", 400, "must name a file inside a data folder"),
        ("private/clients.csv", 400, "must name a file inside a data folder"),
        ("testdata/escape.csv", 400, "must name a file inside a data folder"),  # symlink out
        ("testdata/bad\x00name.csv", 400, "not a usable path"),
        ("testdata/missing.csv", 404, "no such file"),
        ("testdata", 404, "no such file"),
        ("testdata/nocount.csv", 400, "missing column(s) 'number_of_employees'"),
    ],
)
def test_dataset_path_problems(client: FlaskClient, path: str, status: int, fragment: str) -> None:
    assert_error(post(client, {"dataset_path": path}), status, fragment)


def test_absolute_path_outside_is_refused_even_when_it_is_a_valid_dataset(
    client: FlaskClient, deployed: Config
) -> None:
    outside = deployed.root / "private" / "clients.csv"
    assert_error(post(client, {"dataset_path": str(outside)}), 400, "inside a data folder")


def test_oversize_body_is_413_json(deployed: Config) -> None:
    service = make_app(deployed)
    service.config["MAX_CONTENT_LENGTH"] = 1_000
    body = {"records": [RECORD] * 40}
    assert len(json.dumps(body)) > 1_000
    assert_error(
        service.test_client().post("/prediction", json=body), 413, "over the limit of 1000"
    )
    assert service.test_client().post("/prediction", json={"records": [RECORD]}).status_code == 200


def test_body_limit_comes_from_the_environment(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_app(deployed).config["MAX_CONTENT_LENGTH"] == factory.DEFAULT_MAX_BODY_BYTES
    monkeypatch.setenv(factory.MAX_BODY_ENV_VAR, "2048")
    assert factory.create_app(deployed).config["MAX_CONTENT_LENGTH"] == 2048
    monkeypatch.setenv(factory.MAX_BODY_ENV_VAR, "lots")
    with pytest.raises(ConfigError, match=factory.MAX_BODY_ENV_VAR):
        factory.create_app(deployed)


def test_too_many_records_is_413(deployed: Config) -> None:
    service = make_app(deployed)
    service.config["MAX_RECORDS"] = 3
    response = service.test_client().post("/prediction", json={"records": [RECORD] * 4})
    assert_error(response, 413, "too many records (4); at most 3")


def test_nothing_deployed_is_503_but_health_is_alive(config: Config) -> None:
    client = make_app(config).test_client()
    health = client.get("/health")
    assert (health.status_code, health.get_json()["model"]) == (200, None)
    assert health.get_json()["verdict"]["headline"] == "no model deployed yet"
    assert_error(post(client, {"records": [RECORD]}), 503, "no model deployed yet")
    assert_error(client.get("/scoring"), 503, "no model deployed yet")


def test_bad_requests_are_still_400_when_nothing_is_deployed(config: Config) -> None:
    client = make_app(config).test_client()
    assert_error(post(client, {"records": "x"}), 400, "'records' must be")


def test_tampered_model_is_refused_with_503(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=200)
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    release.path(MODEL_NAME).write_bytes(b"not the deployed model")
    client = make_app(config).test_client()
    assert_error(post(client, {"records": [RECORD]}), 503, "cannot be loaded")
    assert client.get("/health").get_json()["model"]["release_id"] == release.id


def test_broken_deployment_link_is_503_and_health_stays_alive(config: Config) -> None:
    config.deployment_folder.mkdir(parents=True)
    (config.deployment_folder / releases.CURRENT).symlink_to("releases/gone")
    client = make_app(config).test_client()
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["model"] is None
    assert_error(post(client, {"records": [RECORD]}), 503, "deployment cannot be read")


def test_token_guards_every_endpoint_but_health(deployed: Config) -> None:
    client = make_app(deployed, TOKEN).test_client()
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for response in (
            client.get("/scoring", headers=headers),
            client.get("/summarystats", headers=headers),
            client.get("/diagnostics", headers=headers),
            client.post("/prediction", json={"records": [RECORD]}, headers=headers),
            client.post("/prediction", data=b"{", headers=headers),  # refused before parsing
            client.get("/no-such-page", headers=headers),
        ):
            assert_error(response, 401, "Authorization: Bearer")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/prediction", json={"records": [RECORD]}, headers=good).status_code == 200
    assert client.get("/scoring", headers=good).status_code == 200
    assert client.get("/scoring", headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200


def test_without_token_no_header_is_needed(client: FlaskClient) -> None:
    assert client.get("/scoring").status_code == 200
    assert client.get("/scoring", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_unknown_route_and_wrong_method_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/predict"), 404, "Not Found")
    response = client.get("/prediction")
    assert_error(response, 405, "GET is not allowed on /prediction; it allows POST")
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_a_logged_500_without_internals(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(api, "prediction_answer", broken)
    response = post(client, {"records": [RECORD]})
    assert_error(response, 500, "internal server error")
    assert "secret" not in response.get_data(as_text=True)
    assert "secret internal detail" in caplog.text


def test_scoring_is_the_deployed_models_f1_on_the_test_data(
    client: FlaskClient, deployed: Config, test_data: Any, model: Any
) -> None:
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None
    answer = client.get("/scoring").get_json()
    assert answer == {
        "f1": pytest.approx(modelling.f1_of(model, test_data)),
        "release_id": release.id,
        "model_sha256": release.model_sha256,
        "dataset": TEST_DATASET,
        "rows": len(test_data),
    }


def test_summarystats_are_the_diagnostics_summary(client: FlaskClient, deployed: Config) -> None:

    response = client.get("/summarystats")
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["dataset"] == "ingesteddata/finaldata.csv"
    assert answer["summary"] == shared.json_safe(diagnosis.dataframe_summary(deployed))
    for column in FEATURES:
        assert set(answer["summary"][column]) == {"mean", "median", "std"}


def test_summarystats_without_ingested_data_is_503(config: Config) -> None:
    response = make_app(config).test_client().get("/summarystats")
    assert response.status_code == 503
    assert "data not available" in response.get_json()["error"]


def recorded_payload() -> dict[str, Any]:
    return {
        "source": "fullprocess.py",
        "execution_time": STUB_TIMINGS,
        "timed": "in process",
        "outdated_packages": STUB_PACKAGES,
    }


def test_diagnostics_answers_at_once_from_the_recorded_diagnostics(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:

    calls = stub_slow_diagnostics(monkeypatch)
    diagnosis.record(deployed, recorded_payload())
    client = make_app(deployed).test_client()
    # "At once": nothing is measured in the request (the stubs count every measurement;
    # a wall-clock bound would fail on a busy machine, and prove less).
    response = client.get("/diagnostics")
    answer = response.get_json()
    assert answer["status"] == "complete"
    assert answer["missing_data"] == shared.json_safe(diagnosis.missing_data(deployed))
    assert (answer["execution_time"], answer["outdated_packages"]) == (STUB_TIMINGS, STUB_PACKAGES)
    assert (answer["source"], answer["refreshing"]) == ("fullprocess.py", False)
    assert 0 <= answer["age_s"] < 60
    assert calls == {"execution_time": 0, "outdated_packages_list": 0}


def wait_for(check: Callable[[], bool], limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_with_nothing_recorded_one_refresh_runs_across_all_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = threading.Event()

    def slow_timings() -> dict[str, float]:
        release.wait(30)
        return STUB_TIMINGS.copy()

    calls = stub_slow_diagnostics(monkeypatch, timings=slow_timings)
    workers = [make_app(config), make_app(config)]  # two workers: two apps, one history
    for worker in workers:
        worker.config["DIAGNOSTICS_IN_REQUEST_S"] = 0.2  # the timing outlasts the request
    try:
        for worker in workers:
            response = worker.test_client().get("/diagnostics")
            answer = response.get_json()
            assert (response.status_code, response.headers["Retry-After"]) == (202, "30")
            assert answer["status"] == "pending"
            assert answer["execution_time"] is None
            assert "no diagnostics recorded yet" in answer["detail"]
        wait_for(lambda: calls["execution_time"] == 1)
    finally:
        release.set()
    for worker in workers:
        finish_background_work(worker, 30)
    assert calls == {"execution_time": 1, "outdated_packages_list": 1}
    for worker in workers:
        answer = worker.test_client().get("/diagnostics").get_json()
        assert (answer["status"], answer["execution_time"]) == ("complete", STUB_TIMINGS)


def test_the_first_diagnostics_after_a_hand_deployment_are_measured_in_the_request(
    tmp_path: Path,
) -> None:
    """Nothing recorded yet: the scripts are timed (for real) while the request waits."""
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    response = make_app(config).test_client().get("/diagnostics")
    answer = response.get_json()
    assert (response.status_code, answer["status"]) == (200, "complete")
    assert set(answer["execution_time"]) == {"ingestion.py", "training.py"}
    assert all(seconds > 0 for seconds in answer["execution_time"].values())
    assert answer["outdated_packages"] and answer["source"] == "the risk API's refresh"


def test_stale_diagnostics_are_served_while_a_refresh_runs(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:

    calls = stub_slow_diagnostics(monkeypatch)
    diagnosis.record(deployed, recorded_payload(), at="2020-01-01T00:00:00.000Z")
    service = make_app(deployed)
    answer = service.test_client().get("/diagnostics").get_json()
    assert answer["status"] == "complete"
    assert answer["age_s"] > 3600
    finish_background_work(service, 30)
    assert calls == {"execution_time": 1, "outdated_packages_list": 1}
    fresh = service.test_client().get("/diagnostics").get_json()
    assert fresh["age_s"] < 60 and fresh["source"] == "the risk API's refresh"


def test_a_failed_refresh_says_why_and_waits_before_trying_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise PipelineError("package index unreachable")

    calls = stub_slow_diagnostics(monkeypatch, packages=broken)
    service = make_app(deploy_workspace(tmp_path / "workspace", rows=300))
    client = service.test_client()
    client.get("/diagnostics")
    finish_background_work(service, 30)
    answer = client.get("/diagnostics").get_json()
    assert (answer["status"], answer["problem"]) == ("pending", "package index unreachable")
    finish_background_work(service, 30)
    assert calls["outdated_packages_list"] == 1


def workspace_files(root: Path, skip: Path) -> dict[str, str]:
    """Every path under root with its content hash (link target for symlinks)."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.name.startswith(skip.name):
            continue
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = "folder"
    return found


def test_get_endpoints_change_no_file(deployed: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_slow_diagnostics(monkeypatch)
    before = workspace_files(deployed.root, deployed.history_path)
    client = make_app(deployed).test_client()
    for path in ("/health", "/scoring", "/summarystats", "/diagnostics"):
        assert client.get(path).status_code == 200, path
    assert post(client, {"dataset_path": TEST_DATASET}).status_code == 200
    assert workspace_files(deployed.root, deployed.history_path) == before


def go_live(config: Config) -> Config:
    """A second config over the same workspace reading the drifted sourcedata."""
    raw = json.loads(config.path.read_text())
    raw.update(input_folder_path="sourcedata", output_model_path="models")
    path = config.root / "live.json"
    path.write_text(json.dumps(raw))
    return load_config(path)


def test_new_deployment_is_served_without_restart(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace")
    first = releases.current_release(config.deployment_folder)
    assert first is not None
    client = make_app(config).test_client()
    body = {"dataset_path": TEST_DATASET}
    before = post(client, body).get_json()
    assert client.get("/health").get_json()["model"]["release_id"] == first.id

    live = go_live(config)
    for step in (ingestion, training, scoring):
        step.run(live)
    second = releases.run(live)
    assert second.model_sha256 != first.model_sha256

    health = client.get("/health").get_json()["model"]
    assert (health["release_id"], health["model_sha256"]) == (second.id, second.model_sha256)
    after = post(client, body).get_json()
    data = features(read_dataset(config.test_data_path))
    assert after["risk_scores"] == pytest.approx(
        second.load_model().predict_proba(data)[:, 1].tolist()
    )
    assert after["risk_scores"] != before["risk_scores"]
    assert client.get("/scoring").get_json()["release_id"] == second.id

    releases.rollback(config.deployment_folder)
    assert client.get("/health").get_json()["model"]["release_id"] == first.id
    assert post(client, body).get_json() == before


def test_requests_during_a_deployment_all_succeed(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    live = go_live(config)
    for step in (ingestion, training, scoring):
        step.run(live)
    service = make_app(config)
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()

    def ask() -> None:
        client = service.test_client()
        for _ in range(25):
            response = post(client, {"records": [RECORD]})
            with lock:
                answers.append((response.status_code, response.get_json()["risk_scores"][0]))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    releases.run(live)
    for thread in threads:
        thread.join(60)
    models = [r.load_model() for r in releases.list_releases(config.deployment_folder)]
    frame = features(api_frame([RECORD]))
    possible = [m.predict_proba(frame)[0, 1] for m in models]
    assert len(answers) == 100
    for status, risk in answers:
        assert status == 200
        assert any(risk == pytest.approx(p) for p in possible)


def api_frame(records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(records, columns=list(FEATURES), dtype="float64")


PAYLOADS = BODIES.map(lambda body: json.dumps(body).encode()) | st.binary(max_size=64)


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payload=PAYLOADS)
def test_no_body_makes_a_server_error(client: FlaskClient, payload: bytes) -> None:
    response = client.post("/prediction", data=payload, content_type="application/json")
    assert response.status_code < 500, response.get_data(as_text=True)
    answer = response.get_json()
    if response.status_code >= 400:
        assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]
    else:
        assert response.status_code == 200
        assert len(answer["predictions"]) == len(answer["risk_scores"]) > 0
        assert set(answer["predictions"]) <= {0, 1}
        assert all(0.0 <= risk <= 1.0 for risk in answer["risk_scores"])


def test_json_safe_makes_valid_json() -> None:
    import numpy as np

    value = {"a": float("nan"), "b": [np.float64(1.5), np.int64(3), float("inf")], 4: "x"}
    assert shared.json_safe(value) == {"a": None, "b": [1.5, 3, None], "4": "x"}


def test_app_command_line_help() -> None:
    result = run_script("app.py", "--help", cwd=PROJECT)
    assert result.returncode == 0
    assert "--port" in result.stdout and "--config" in result.stdout


def test_app_command_line_bad_config_is_one_line(tmp_path: Path) -> None:
    result = run_script("app.py", "--config", str(tmp_path / "none.json"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "config file not found" in result.stderr


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Background diagnostics threads of one test finish before the next starts."""
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("diagnostics-"):
            thread.join(30)


def test_under_gunicorn_the_apps_lines_go_to_its_error_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    caught: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(self.format(record))

    server_log = logging.getLogger("gunicorn.error")
    root = logging.getLogger()
    monkeypatch.setattr(server_log, "handlers", [Collect()])
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    factory.log_where_the_server_logs()
    logging.getLogger("app").error("a traceback the operator must see")
    assert caught == ["a traceback the operator must see"]
