"""The JSON API: the course's endpoints and the client managers' (a Flask blueprint).

POST /prediction, GET /scoring, /summarystats, /diagnostics, /health, /clients,
/clients?id=<corporation>, /clients/<corporation> and /api (the index of endpoints).
Every client mistake is a JSON {"error": "..."} with a 4xx status (ApiError, turned
into a response by the app factory). The /prediction body is read and checked in
body.py; what the API shares with the page, in shared.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request

from drs import clients, diagnosis, linear, modelling, riskhistory
from drs.cli import describe_error
from drs.config import MAX_TOP, Config
from drs.datarules import read_dataset
from drs.errors import DataError, PipelineError
from drs.web import risks
from drs.web.body import (
    PredictionRequest,
    parse_prediction_request,
    read_json_body,
    records_features,
)
from drs.web.shared import (
    MAX_QUERY_CHARS,
    ApiError,
    account,
    json_safe,
    shown,
    state,
    whole_number,
)

if TYPE_CHECKING:
    import numpy as np


logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

# With nothing recorded, /diagnostics measures within the request for this long, then
# answers 202 with Retry-After.
DIAGNOSTICS_IN_REQUEST_S = 20.0
DIAGNOSTICS_RETRY_AFTER_S = 30
DEFAULT_TOP = 20
# (method, path, what it answers): the index GET /api gives.
ENDPOINTS = (
    ("GET", "/health", "liveness, the deployed model and the system's verdict; needs no token"),
    ("POST", "/prediction", "risk of the rows of a dataset file or of JSON records"),
    ("GET", "/scoring", "F1 of the deployed model on the test data"),
    ("GET", "/summarystats", "mean, median and std of each numeric column of the ingested data"),
    ("GET", "/diagnostics", "missing values, script timings and outdated packages"),
    (
        "GET",
        "/clients",
        "current clients ranked by risk, with drivers (?top=N&q=TEXT&band=high|medium|low)",
    ),
    (
        "GET",
        "/clients/<corporation>",
        "one client: risk, band, drivers with what-ifs, its rows and its risk over time",
    ),
    ("GET", "/clients?id=<corporation>", "the same for any id, percent-encoded ('/', '..' too)"),
    (
        "GET",
        "/changes",
        "newly high, risers, fallers and clients who left since the previous scoring "
        "(?since=YYYY-MM-DD&top=N)",
    ),
    ("GET", "/metrics", "the system's state for Prometheus (text format)"),
    ("GET", "/api", "this index"),
    ("GET", "/", "the page for client managers (HTML)"),
    ("GET", "/model-health", "the model's health: verdict, lift of the high band, F1 (HTML)"),
    ("GET", "/export.csv", "the page's list as CSV (?q=TEXT&band=...)"),
    ("GET", "/client/<corporation>", "one client's page (HTML)"),
    ("GET", "/client?id=<corporation>", "one client's page for any id (HTML)"),
)


def resolve_dataset(config: Config, raw: str) -> Path:
    """The file a client's dataset_path names, resolved (symlinks too) inside a data folder.

    Raises ApiError 400 for a path outside every data folder and 404 for a missing file;
    the containment check comes first, so nothing about other folders is revealed.
    """
    try:
        path = (config.root / raw).resolve()
    except (OSError, ValueError, RuntimeError):
        raise ApiError(400, f"dataset_path {shown(raw)!r}: not a usable path") from None
    if not any(path.is_relative_to(folder) for folder in config.data_folders):
        folders = ", ".join(shown_path(config, folder) for folder in config.data_folders)
        raise ApiError(
            400, f"dataset_path {shown(raw)!r}: must name a file inside a data folder ({folders})"
        )
    try:
        is_file = path.is_file()
    except OSError as error:  # a name longer than the file system allows, say
        raise ApiError(
            400, f"dataset_path {shown(raw)!r}: not a usable path ({error.strerror})"
        ) from None
    if not is_file:
        raise ApiError(404, f"dataset_path {shown(raw)!r}: no such file")
    return path


def read_client_dataset(config: Config, raw: str) -> clients.Dataset:
    """The dataset a client named, read and validated (once per file version, then from memory).

    ApiError 400/404 for what is wrong; the file can vanish between the check and the
    read (a 404 then, like a missing one).
    """
    path = resolve_dataset(config, raw)
    try:
        return state().datasets.get(path)
    except DataError as error:
        raise ApiError(400, f"dataset_path {shown(raw)!r}: {error}") from None
    except FileNotFoundError:
        raise ApiError(404, f"dataset_path {shown(raw)!r}: no such file") from None
    except OSError as error:
        raise ApiError(
            400, f"dataset_path {shown(raw)!r}: cannot read it ({error.strerror})"
        ) from None


def shown_path(config: Config, path: Path) -> str:
    """A path as a client sees it: relative to the config folder."""
    return os.path.relpath(path, config.root)


def top_rows(
    risk: np.ndarray,
    ids: Callable[[int], str | None],
    top: int,
    scorer: linear.Scorer,
    features: np.ndarray,
    bands: clients.Bands,
) -> list[dict[str, Any]]:
    """The `top` highest-risk rows, highest first (ties keep input order), with band and drivers."""
    import numpy as np

    order = np.argsort(-risk, kind="stable")[: min(top, len(risk))]
    drivers = scorer.drivers(features[order])
    return [
        {
            "corporation": ids(int(i)),
            "risk_score": float(risk[i]),
            "row": int(i),
            "band": bands.of(float(risk[i])),
            "drivers": drivers[n] if drivers is not None else None,
        }
        for n, i in enumerate(order)
    ]


def prediction_answer(
    config: Config, scorer: linear.Scorer, bands: clients.Bands, asked: PredictionRequest
) -> dict[str, Any]:
    """The /prediction answer for a checked request."""
    import numpy as np

    if asked.records is not None:
        rows, names = records_features(asked.records)
        if len(rows) == 1 and asked.top is None and not asked.explain:
            prediction, risk_score = scorer.predict_one(rows[0])
            return {"predictions": [prediction], "risk_scores": [risk_score]}
        features = np.array(rows, dtype=float)

        def corporation(i: int) -> str | None:
            return names[i]

    else:
        dataset = read_client_dataset(config, asked.dataset_path or "")
        features = dataset.features

        def corporation(i: int) -> str | None:
            return dataset.ids[i]

    predictions, risk = scorer.predict(features)
    # Arrays as they are: the app's JSON encoder writes them whole, fast.
    answer: dict[str, Any] = {"predictions": predictions, "risk_scores": risk}
    if asked.top is not None:
        answer["top"] = top_rows(risk, corporation, asked.top, scorer, features, bands)
    if asked.explain:
        answer["drivers"] = scorer.drivers(features)
        if answer["drivers"] is None:
            answer["drivers_unavailable"] = linear.DRIVERS_UNAVAILABLE
    return answer


def server_data(read: Callable[[], Any]) -> Any:
    """read(), with a missing or invalid server-side file as 503 (not the client's mistake)."""
    try:
        return read()
    except (PipelineError, OSError) as error:
        raise ApiError(503, f"data not available: {describe_error(error)}") from None


def model() -> tuple[Any, dict[str, Any], linear.Scorer]:
    """The deployed release, its identity and its scorer; ApiError 503 when there is none."""
    try:
        return state().models.model()
    except clients.ModelUnavailable as error:
        raise ApiError(503, str(error)) from None


def book() -> clients.ClientBook:
    """The current clients as the deployed model scores them; ApiError 503 when unavailable."""
    try:
        current = state().models.book()
    except clients.ModelUnavailable as error:
        raise ApiError(503, str(error)) from None
    except (PipelineError, OSError) as error:
        raise ApiError(503, f"data not available: {describe_error(error)}") from None
    state().risks.record(current)
    return current


def whole_number_arg(name: str, default: int, low: int, high: int) -> int:
    """A query-string argument that must be a whole number from low to high; ApiError 400."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = whole_number(raw, low, high)
    if value is None:
        raise ApiError(
            400, f"'{name}' must be a whole number from {low} to {high}, found {shown(raw)!r}"
        )
    return value


def query_arg() -> str:
    query = request.args.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        raise ApiError(400, f"'q' must be at most {MAX_QUERY_CHARS} characters")
    return query


def book_identity(current: clients.ClientBook) -> dict[str, Any]:
    """Which deployment and data a book's risks come from."""
    from datetime import UTC, datetime

    config = state().config
    return {
        "release_id": current.release_id,
        "data": {
            "file": shown_path(config, config.final_data_path),
            "modified_at": datetime.fromtimestamp(current.data.modified_at, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
        },
        "bands": current.bands._asdict(),
        "typical_log_odds": current.typical_log_odds,
        **({} if current.linear else {"drivers_unavailable": linear.DRIVERS_UNAVAILABLE}),
    }


@bp.get("/health")
def health() -> Response:
    """Liveness first: a verdict or a model that cannot be read is said, never a failure."""
    try:
        verdict: dict[str, Any] | None = account()[1].to_json()
    except (PipelineError, OSError) as error:
        logger.warning("health: the verdict: %s", describe_error(error))
        verdict = None
    try:
        info = state().models.deployed().info
    except PipelineError as error:
        logger.warning("health: %s", error)
        return jsonify(
            status="ok", model=None, problem="deployment unreadable; see the log", verdict=verdict
        )
    return jsonify(status="ok", model=info, verdict=verdict)


@bp.get("/metrics")
def metrics_view() -> Response:
    """The state and its verdict in the Prometheus text format, computed at each scrape."""
    from drs import metrics

    now, verdict = server_data(account)
    body, content_type = metrics.exposition(now, verdict)
    return Response(body, content_type=content_type)


@bp.post("/prediction")
def prediction() -> Response:
    asked = parse_prediction_request(read_json_body(), current_app.config["MAX_RECORDS"])
    _, _, scorer = model()
    return jsonify(prediction_answer(state().config, scorer, state().models.bands, asked))


@bp.get("/scoring")
def scoring_view() -> Response:
    config = state().config
    release, info, scorer = model()
    data = server_data(lambda: read_dataset(config.test_data_path))
    return jsonify(
        f1=server_data(lambda: modelling.f1_of(scorer.model, data)),
        release_id=release.id,
        model_sha256=info["model_sha256"],
        dataset=shown_path(config, config.test_data_path),
        rows=len(data),
    )


@bp.get("/summarystats")
def summarystats() -> Response:
    config = state().config
    summary = server_data(lambda: diagnosis.dataframe_summary(config))
    return jsonify(dataset=shown_path(config, config.final_data_path), summary=json_safe(summary))


@bp.get("/diagnostics")
def diagnostics_view() -> Response:

    config, refresher = state().config, state().refresher
    recorded = server_data(lambda: diagnosis.latest_recorded(config))
    refresher.refresh_if_stale(recorded)
    missing = server_data(lambda: diagnosis.missing_data(config))
    if recorded is None:
        # Nothing recorded yet (a deployment by hand): measured now, within the request.
        refresher.wait(current_app.config.get("DIAGNOSTICS_IN_REQUEST_S", DIAGNOSTICS_IN_REQUEST_S))
        recorded = server_data(lambda: diagnosis.latest_recorded(config))
    if recorded is None:
        answer = jsonify(
            status="pending",
            detail="no diagnostics recorded yet, and timing the scripts takes longer than a "
            f"request waits; ask again in {DIAGNOSTICS_RETRY_AFTER_S} s",
            problem=refresher.problem,
            missing_data=json_safe(missing),
            execution_time=None,
            outdated_packages=None,
        )
        answer.status_code = 202
        answer.headers["Retry-After"] = str(DIAGNOSTICS_RETRY_AFTER_S)
        return answer
    return jsonify(
        status="complete",
        recorded_at=recorded["recorded_at"],
        age_s=round(diagnosis.age_s(recorded), 1),
        source=recorded.get("source"),
        timed=recorded.get("timed"),
        refreshing=refresher.running,
        missing_data=json_safe(missing),
        execution_time=json_safe(recorded.get("execution_time")),
        outdated_packages=json_safe(recorded.get("outdated_packages")),
    )


def client_id_arg() -> str:
    """The one client id of ?id=, as sent (percent-decoded); ApiError 400 when absent or blank."""
    given = request.args.getlist("id")
    if len(given) != 1:
        raise ApiError(400, f"give one 'id', found {len(given)}")
    if not given[0].strip():
        raise ApiError(400, "'id' must be a client's corporation id, found a blank one")
    return given[0]


@bp.get("/clients")
def clients_view() -> Response:
    if "id" in request.args:
        mixed = [name for name in ("top", "q") if name in request.args]
        if mixed:
            raise ApiError(
                400,
                f"give 'id' (one client) or {' and '.join(map(repr, mixed))} (the list), not both",
            )
        return client_answer(client_id_arg())
    top = whole_number_arg("top", DEFAULT_TOP, 1, MAX_TOP)
    query = query_arg()
    band = band_arg()
    current = book()
    ranked, matching = current.ranked(top, query, band)
    return jsonify(
        clients=ranked,
        total=len(current.ids),
        matching=matching,
        query=query,
        band=band,
        band_counts=current.band_counts(),
        **book_identity(current),
    )


def band_arg() -> str | None:
    """?band=: one of the bands, or None when absent or empty; ApiError 400 otherwise."""
    raw = request.args.get("band") or None
    if raw is not None and raw not in clients.BANDS:
        raise ApiError(
            400, f"'band' must be one of {', '.join(clients.BANDS)}, found {shown(raw)!r}"
        )
    return raw


def since_arg() -> str | None:
    """?since=: a date as YYYY-MM-DD, or None; ApiError 400 for anything else."""
    from datetime import date

    raw = request.args.get("since") or None
    if raw is None:
        return None
    try:
        if not (raw.isascii() and len(raw) == 10):
            raise ValueError(raw)
        date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"'since' must be a date as YYYY-MM-DD, found {shown(raw)!r}") from None
    return raw


@bp.get("/changes")
def changes_view() -> Response:
    since = since_arg()
    top = whole_number_arg("top", riskhistory.MOVERS, 1, MAX_TOP)
    current = book()
    return jsonify(
        **state().risks.changes(since, top),
        release_id=current.release_id,
        bands=current.bands._asdict(),
    )


@bp.get("/clients/<client_id:corporation>", merge_slashes=False)
def client_view(corporation: str) -> Response:
    return client_answer(corporation)


def client_answer(corporation: str) -> Response:
    """One client's JSON answer; ApiError 404 for an unknown id."""
    current = book()
    try:
        found = current.client(corporation)
    except clients.UnknownClient as error:
        raise ApiError(404, str(error)) from None
    log_odds = None
    if found["drivers"] is not None and current.typical_log_odds is not None:
        log_odds = current.typical_log_odds + sum(d["effect"] for d in found["drivers"])
    records = state().risks.trend(corporation)
    rows = [*found["earlier_rows"], found["latest"]]
    arrived = risks.arrivals(rows, records)
    found["earlier_rows"] = [
        {**row, "arrived_at": when.at, "arrived_by": when.by}
        for row, when in zip(found["earlier_rows"], arrived, strict=False)
    ]
    history = [
        {
            "recorded_at": record["recorded_at"],
            "risk_score": record["risk"],
            "band": record["band"],
            "event": record["event"],
            "release_id": record["release_id"],
        }
        for record in records
    ]
    return jsonify(
        **found,
        latest_arrived_at=arrived[-1].at,
        history=history,
        total=len(current.ids),
        log_odds=json_safe(log_odds),
        **book_identity(current),
    )


@bp.get("/api")
def index() -> Response:
    return jsonify(
        endpoints=[
            {"method": method, "path": path, "description": description}
            for method, path, description in ENDPOINTS
        ]
    )
