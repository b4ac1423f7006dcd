"""Who is at risk and why: current clients, exact drivers, bands, the /clients endpoints."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flask.testing import FlaskClient
from helpers import TOKEN, deploy, fitted, make_app, make_workspace, scaled_pipeline

import ingestion
import scoring
import training
from drs import clients, explain, linear, releases
from drs.config import COLUMNS, FEATURES, ID_COLUMN, MODEL_NAME, TARGET, Config, load_config
from drs.errors import ConfigError
from drs.files import file_sha256

HEADER = ",".join(COLUMNS)
# Rows a test can reason about, added to the generated ones: (corporation, features, exited).
KNOWN_ROWS = [
    ("leftco", (10, 100, 5), 0),
    ("leftco", (1, 20, 5), 1),  # its latest row says it left: not a current client
    ("moved", (5, 50, 900), 0),
    ("moved", (400, 5000, 30), 0),  # the latest row is the one that counts
    ("=cmd", (0, 10, 2000), None),  # no label yet; an id a spreadsheet would run
    ("blanks", (None, 3000, None), 0),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Config:
    config = load_config(make_workspace(tmp_path_factory.mktemp("clients") / "ws", 800))
    lines = [HEADER] + [
        ",".join(
            [
                name,
                *("" if v is None else str(v) for v in values),
                "" if left is None else str(left),
            ]
        )
        for name, values, left in KNOWN_ROWS
    ]
    (config.input_folder / "dataset9.csv").write_text("\n".join(lines) + "\n")
    deploy(config)
    return config


@pytest.fixture(scope="module")
def client(workspace: Config) -> FlaskClient:
    return make_app(workspace).test_client()


@pytest.fixture(scope="module")
def pipeline(workspace: Config) -> Any:
    with open(workspace.deployment_folder / MODEL_NAME, "rb") as handle:
        return pickle.load(handle)


def current_clients(config: Config) -> pd.DataFrame:
    """Each corporation's latest row in finaldata.csv, those that left taken out (by pandas)."""
    data = pd.read_csv(config.final_data_path, keep_default_na=False, na_values=[""])
    latest = data.drop_duplicates(subset=ID_COLUMN, keep="last")
    return latest[latest[TARGET] != 1].reset_index(drop=True)


def independent_effects(pipeline: Any, row: pd.Series) -> dict[str, float]:
    """coef * (value - median), from the pickled pipeline's own fitted parameters."""
    medians = pipeline.named_steps["impute"].statistics_
    coef = pipeline.named_steps["classify"].coef_[0]
    return {
        feature: coef[i] * ((medians[i] if pd.isna(row[feature]) else row[feature]) - medians[i])
        for i, feature in enumerate(FEATURES)
    }


def test_clients_are_ranked_by_the_models_risk_highest_first(
    client: FlaskClient, workspace: Config, pipeline: Any
) -> None:
    answer = client.get("/clients?top=1000").get_json()
    current = current_clients(workspace)
    risk = pipeline.predict_proba(current[list(FEATURES)])[:, 1]
    expected = current.assign(risk=risk).sort_values(["risk", ID_COLUMN], ascending=[False, True])
    assert answer["total"] == len(current)
    listed = answer["clients"]
    assert [c["corporation"] for c in listed] == expected[ID_COLUMN].tolist()[:1000]
    assert [c["rank"] for c in listed] == list(range(1, len(listed) + 1))
    for entry, (_, row) in zip(listed, expected.iterrows(), strict=False):
        assert entry["risk_score"] == pytest.approx(row["risk"], abs=1e-12)
        assert entry["band"] == (
            "high" if row["risk"] >= 0.5 else "medium" if row["risk"] >= 0.25 else "low"
        )
        assert entry["prediction"] == int(row["risk"] > 0.5)
    release = releases.current_release(workspace.deployment_folder)
    assert answer["release_id"] == release.id
    assert answer["data"]["file"] == "ingesteddata/finaldata.csv"
    assert answer["bands"] == {"high": 0.5, "medium": 0.25}


def test_the_latest_row_of_each_client_counts_and_those_who_left_are_out(
    client: FlaskClient,
) -> None:
    names = {c["corporation"] for c in client.get("/clients?top=1000&q=o").get_json()["clients"]}
    assert "leftco" not in names and "moved" in names
    moved = client.get("/clients/moved").get_json()
    assert moved["latest"]["number_of_employees"] == 30
    assert [row["number_of_employees"] for row in moved["earlier_rows"]] == [900]
    gone = client.get("/clients/leftco")
    assert gone.status_code == 404
    assert "no longer a client: its latest row says exited = 1" in gone.get_json()["error"]
    unknown = client.get("/clients/nobody")
    assert (unknown.status_code, unknown.get_json()["error"]) == (
        404,
        "no client 'nobody' in the ingested data",
    )


def test_drivers_are_exact_and_add_up_to_the_models_log_odds(
    client: FlaskClient, workspace: Config, pipeline: Any
) -> None:
    current = current_clients(workspace).set_index(ID_COLUMN)
    for name in ["moved", "=cmd", "blanks", *current.index[:20]]:
        answer = client.get(f"/clients/{name}").get_json()
        effects = independent_effects(pipeline, current.loc[name])
        drivers = answer["drivers"]
        assert {d["feature"]: d["effect"] for d in drivers} == pytest.approx(effects, abs=1e-9)
        assert [abs(d["effect"]) for d in drivers] == sorted(
            (abs(d["effect"]) for d in drivers), reverse=True
        )
        medians = pipeline.named_steps["impute"].statistics_
        assert {d["feature"]: d["typical"] for d in drivers} == dict(
            zip(FEATURES, medians, strict=True)
        )
        frame = current.loc[[name], list(FEATURES)]
        log_odds = pipeline.decision_function(frame)[0]
        assert answer["typical_log_odds"] + sum(effects.values()) == pytest.approx(
            log_odds, abs=1e-9
        )
        assert answer["log_odds"] == pytest.approx(log_odds, abs=1e-9)
        assert answer["risk_score"] == pytest.approx(1 / (1 + math.exp(-log_odds)), abs=1e-12)
    blanks = client.get("/clients/blanks").get_json()["drivers"]
    missing = next(d for d in blanks if d["feature"] == "lastmonth_activity")
    assert (missing["value"], missing["effect"]) == (None, 0.0)
    assert missing["phrase"] == "activity last month not known (counted as typical)"


@pytest.mark.parametrize(
    ("value", "typical", "effect", "phrase"),
    [
        (100.0, 1000.0, 0.8, "activity last year far below typical (raises risk)"),
        (700.0, 1000.0, 0.2, "activity last year below typical (raises risk)"),
        (1500.0, 1000.0, -0.3, "activity last year above typical (lowers risk)"),
        (2500.0, 1000.0, -0.9, "activity last year far above typical (lowers risk)"),
        (1000.0, 1000.0, 0.0, "activity last year typical"),
        (3.0, 0.0, 0.1, "activity last year above typical (raises risk)"),
    ],
)
def test_phrases_say_where_the_client_stands_and_which_way_it_pushes(
    value: float, typical: float, effect: float, phrase: str
) -> None:
    assert explain.phrase("lastyear_activity", value, typical, effect) == phrase


def test_search_filters_by_id_and_ranks_stay_those_of_all_clients(client: FlaskClient) -> None:
    everyone = client.get("/clients?top=1000").get_json()["clients"]
    found = client.get("/clients?q=MOV").get_json()
    assert found["matching"] == 1 and found["query"] == "MOV"
    [moved] = found["clients"]
    assert moved["rank"] == next(c["rank"] for c in everyone if c["corporation"] == "moved")
    assert client.get("/clients?q=zzzzzz").get_json()["clients"] == []
    assert len(client.get("/clients").get_json()["clients"]) == 20


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("top=0", "'top' must be a whole number from 1 to 1000, found '0'"),
        ("top=1001", "found '1001'"),
        ("top=-3", "found '-3'"),
        ("top=ten", "found 'ten'"),
        ("top=2.5", "found '2.5'"),
        ("top=", "found ''"),
        ("q=" + "x" * 101, "'q' must be at most 100 characters"),
    ],
)
def test_bad_top_or_query_is_400(client: FlaskClient, query: str, fragment: str) -> None:
    response = client.get(f"/clients?{query}")
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]


def test_prediction_top_entries_carry_band_and_drivers_and_explain_adds_them_for_all(
    client: FlaskClient, pipeline: Any
) -> None:
    records = [
        {
            "corporation": "a",
            "lastmonth_activity": 1,
            "lastyear_activity": 50,
            "number_of_employees": 900,
        },
        {
            "corporation": "b",
            "lastmonth_activity": 300,
            "lastyear_activity": 4000,
            "number_of_employees": None,
        },
    ]
    answer = client.post(
        "/prediction", json={"records": records, "top": 1, "explain": True}
    ).get_json()
    assert list(answer) == ["predictions", "risk_scores", "top", "drivers"]
    [top] = answer["top"]
    assert top["band"] in {"high", "medium", "low"} and top["drivers"][0]["phrase"]
    assert len(answer["drivers"]) == 2
    frame = pd.DataFrame(records)[list(FEATURES)].astype(float)
    for row, drivers in zip(frame.to_dict("records"), answer["drivers"], strict=True):
        effects = independent_effects(pipeline, pd.Series(row))
        assert {d["feature"]: d["effect"] for d in drivers} == pytest.approx(effects)
    bad = client.post("/prediction", json={"records": records, "explain": "yes"})
    assert bad.status_code == 400 and "'explain' must be true or false" in bad.get_json()["error"]


def test_the_api_index_and_405_name_what_is_allowed(client: FlaskClient) -> None:
    index = client.get("/api").get_json()["endpoints"]
    assert {"method": "GET", "path": "/clients", "description": index[5]["description"]} in index
    assert {(e["method"], e["path"]) for e in index} >= {
        ("POST", "/prediction"),
        ("GET", "/clients/<corporation>"),
        ("GET", "/"),
    }
    wrong = client.post("/clients")
    assert wrong.status_code == 405
    assert wrong.get_json()["error"] == "POST is not allowed on /clients; it allows GET"


def test_the_token_guards_the_new_endpoints(workspace: Config) -> None:
    guarded = make_app(workspace, TOKEN).test_client()
    for path in ("/clients", "/clients/moved", "/api"):
        assert guarded.get(path).status_code == 401
        assert guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_book_is_scored_once_per_deployment_and_data_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 400))
    deploy(config)
    builds = []
    real_build = clients.ClientBook.build.__func__

    def counted(cls: type, *args: Any) -> clients.ClientBook:
        builds.append(args[0])
        return real_build(cls, *args)

    monkeypatch.setattr(clients.ClientBook, "build", classmethod(counted))
    api = make_app(config).test_client()
    first = api.get("/clients?top=5").get_json()
    api.get("/clients?top=50&q=a")
    api.get(f"/clients/{first['clients'][0]['corporation']}")
    assert len(builds) == 1, "the same deployment and data: scored once"

    (config.input_folder / "dataset1.csv").unlink()
    ingestion.run(config)  # new ingested data, same deployment
    after_data = api.get("/clients?top=5").get_json()
    assert len(builds) == 2 and after_data["total"] != first["total"]

    training.run(config)
    scoring.run(config)
    release = releases.run(config)  # a new deployment, same data
    after_release = api.get("/clients?top=5").get_json()
    assert len(builds) == 3 and after_release["release_id"] == release.id


def test_risk_bands_come_from_the_config(tmp_path: Path) -> None:
    path = make_workspace(tmp_path / "ws", 300, risk_bands={"high": 0.9, "medium": 0.6})
    config = load_config(path)
    deploy(config)
    answer = make_app(config).test_client().get("/clients?top=1000").get_json()
    assert answer["bands"] == {"high": 0.9, "medium": 0.6}
    for entry in answer["clients"]:
        risk = entry["risk_score"]
        assert entry["band"] == ("high" if risk >= 0.9 else "medium" if risk >= 0.6 else "low")
    for bad in (
        {"high": 0.2, "medium": 0.5},
        {"high": 1.5, "medium": 0.2},
        [0.5, 0.2],
        {"high": 0.5},
    ):
        path.write_text(json.dumps({**json.loads(path.read_text()), "risk_bands": bad}))
        with pytest.raises(ConfigError, match="key 'risk_bands'"):
            load_config(path)


def tree_pipeline() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("tree", DecisionTreeClassifier(max_depth=3)),
        ]
    )


def test_affine_steps_fold_into_exact_drivers() -> None:
    model, features = fitted(scaled_pipeline())
    scorer = linear.Scorer(model)
    assert scorer.linear is not None
    frame = pd.DataFrame(features, columns=list(FEATURES))
    log_odds = model.decision_function(frame)
    effects = scorer.linear.effects(features)
    assert scorer.linear.typical_log_odds + effects.sum(axis=1) == pytest.approx(log_odds, abs=1e-9)
    predictions, risk = scorer.predict(features)
    assert risk == pytest.approx(model.predict_proba(frame)[:, 1], abs=1e-12)
    assert predictions.tolist() == model.predict(frame).tolist()


def test_another_model_shape_is_scored_by_itself_and_has_no_drivers() -> None:
    model, features = fitted(tree_pipeline())
    scorer = linear.Scorer(model)
    assert scorer.linear is None
    predictions, risk = scorer.predict(features)
    frame = pd.DataFrame(features, columns=list(FEATURES))
    assert risk.tolist() == model.predict_proba(frame)[:, 1].tolist()
    assert predictions.tolist() == model.predict(frame).tolist()
    assert scorer.drivers(features) is None


def test_a_deployed_model_of_another_shape_says_its_drivers_are_unavailable(
    tmp_path: Path,
) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 300))
    deploy(config)
    model, _ = fitted(tree_pipeline())
    config.model_path.write_bytes(pickle.dumps(model))
    training_card = json.loads(config.model_card_path.read_text())
    training_card["model_sha256"] = file_sha256(config.model_path)
    config.model_card_path.write_text(json.dumps(training_card))
    scoring.run(config)
    releases.run(config)
    api = make_app(config).test_client()
    answer = api.get("/clients?top=3").get_json()
    assert "cannot be computed exactly" in answer["drivers_unavailable"]
    assert all(entry["drivers"] is None for entry in answer["clients"])
    explained = api.post(
        "/prediction",
        json={"records": [dict.fromkeys(FEATURES, 1)], "explain": True, "top": 1},
    ).get_json()
    assert explained["drivers"] is None and "drivers_unavailable" in explained
    assert explained["top"][0]["drivers"] is None
