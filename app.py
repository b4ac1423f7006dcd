"""The risk API for client managers: a Flask app built by create_app(config).

POST /prediction, GET /scoring, /summarystats, /diagnostics and /health. The deployed
model is loaded on first use and reloaded when `current` in prod_deployment_path
points at another release, so a deployment or rollback needs no restart.

Production, from the project folder, with threads so that a slow client holds one
thread and not a whole worker: `DRS_CONFIG=/path/config.json gunicorn --bind
127.0.0.1:8000 --workers 2 --worker-class gthread --threads 8 wsgi:app`.
Development: `python app.py [--config PATH] [--port 8000]`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler

import common
import deployment

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

MAX_BODY_ENV_VAR = "DRS_API_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 50_000
BODY_FIELDS = ("dataset_path", "records", "top")
SHOWN_PATH_CHARS = 200


class ApiError(Exception):
    """A request the API refuses: HTTP status and the one-line message of the JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Deployed:
    """What `current` pointed at when last looked: the link text, the release, its identity."""

    link: str | None
    release: deployment.Release | None
    info: dict[str, Any] | None


class ModelCache:
    """The deployed release and its model, one per process, reloaded when `current` moves.

    Each request costs one readlink; the manifest is read and the model unpickled
    (after its SHA-256 check) only when the link names another release. Release folders
    never change once made, so the link text identifies the model.
    """

    def __init__(self, deployment_folder: Path) -> None:
        self.folder = deployment_folder
        self._lock = threading.Lock()
        self._deployed = Deployed("", None, None)  # "" never equals a link: first look reads
        self._model: tuple[str, Any] | None = None

    def _link(self) -> str | None:
        try:
            return os.readlink(self.folder / deployment.CURRENT)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise deployment.DeploymentError(
                f"{self.folder / deployment.CURRENT}: not a deployment link ({error.strerror})"
            ) from None

    def deployed(self) -> Deployed:
        """The release `current` points at now (release None when nothing is deployed)."""
        link = self._link()
        known = self._deployed
        if known.link == link:
            return known
        with self._lock:
            if self._deployed.link != link:
                release = self._read_release()
                self._deployed = Deployed(link, release, release_info(release) if release else None)
                if release is not None:
                    logger.info("deployment %s found in %s", release.id, self.folder)
            return self._deployed

    def _read_release(self) -> deployment.Release | None:
        """current_release, tried twice: a release pruned between readlink and read is gone."""
        try:
            return deployment.current_release(self.folder)
        except common.PipelineError:
            return deployment.current_release(self.folder)

    def model(self) -> tuple[deployment.Release, dict[str, Any], Any]:
        """The deployed release, its identity and its model; ApiError 503 when there is none."""
        try:
            deployed = self.deployed()
        except common.PipelineError as error:
            logger.error("cannot read the deployment: %s", error)
            raise ApiError(503, "the deployment cannot be read; see the log") from None
        release = deployed.release
        if release is None or deployed.info is None:
            raise ApiError(503, "no model deployed yet; run deployment.py or fullprocess.py first")
        loaded = self._model
        if loaded is None or loaded[0] != release.id:
            with self._lock:
                loaded = self._model
                if loaded is None or loaded[0] != release.id:
                    loaded = (release.id, self._load(release))
                    self._model = loaded
        return release, deployed.info, loaded[1]

    @staticmethod
    def _load(release: deployment.Release) -> Any:
        try:
            model = release.load_model()
        except (common.PipelineError, OSError) as error:
            logger.error(
                "cannot load the model of release %s: %s", release.id, common.describe_error(error)
            )
            raise ApiError(
                503, f"the deployed model (release {release.id}) cannot be loaded; see the log"
            ) from None
        logger.info("loaded the model of release %s", release.id)
        return model


def release_info(release: deployment.Release) -> dict[str, Any]:
    """A release's identity as /health shows it; the score is read once per release."""
    try:
        score: float | None = release.score()
    except (common.PipelineError, OSError) as error:
        logger.warning("release %s: no readable score (%s)", release.id, error)
        score = None
    return {
        "release_id": release.id,
        "model_sha256": release.model_sha256,
        "deployed_at": release.manifest.get("deployed_at"),
        "score": score,
    }


def json_safe(value: Any) -> Any:
    """value with NaN and infinities as null and numpy scalars as numbers (valid JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return json_safe(value.item())
    return value


@dataclass(frozen=True)
class PredictionRequest:
    """A checked /prediction body: exactly one of dataset_path and records, optional top."""

    dataset_path: str | None
    records: list[Any] | None
    top: int | None


def parse_prediction_request(body: Any, max_records: int) -> PredictionRequest:
    """Check the shape of a /prediction body; raises ApiError 400 (413 for too many records)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object, found {json_type(body)}")
    unknown = [key for key in body if key not in BODY_FIELDS]
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))}; "
            "expected 'dataset_path' or 'records', and optionally 'top'",
        )
    has_path, has_records = "dataset_path" in body, "records" in body
    if has_path == has_records:
        raise ApiError(
            400, "give exactly one of 'dataset_path' and 'records'" + (", not both" * has_path)
        )
    path, records, top = body.get("dataset_path"), body.get("records"), body.get("top")
    if has_path and (not isinstance(path, str) or not path.strip()):
        raise ApiError(
            400, "'dataset_path' must be a non-empty string (a path relative to the config folder)"
        )
    if has_records:
        if not isinstance(records, list) or not records:
            raise ApiError(400, "'records' must be a non-empty list of objects")
        if len(records) > max_records:
            raise ApiError(413, f"too many records ({len(records)}); at most {max_records}")
    if "top" in body and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
        raise ApiError(400, f"'top' must be a whole number >= 1, found {json_type(top)}")
    return PredictionRequest(path, records, top)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    return common.value_kind(value)


def records_features(records: list[Any]) -> tuple[list[list[float]], list[str | None]]:
    """The feature rows and corporation ids of API records, checked by the data rules.

    Every record names every feature (null is a missing value, filled by the model);
    each cell is checked as a file's cell is, with the same messages; corporation is
    optional text; other keys are ignored. Plain Python: pandas would cost more than
    the model for a few records.
    """
    rows, corporations = [], []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ApiError(400, f"records[{index}]: expected an object, found {json_type(record)}")
        missing = [column for column in common.FEATURES if column not in record]
        if missing:
            raise ApiError(
                400, f"records[{index}]: missing column(s) {', '.join(map(repr, missing))}"
            )
        try:
            rows.append([common.cell_number(column, record[column]) for column in common.FEATURES])
        except common.CellError as error:
            raise ApiError(400, f"records[{index}]: {error}") from None
        corporation = record.get(common.ID_COLUMN)
        if corporation is not None and not isinstance(corporation, str):
            raise ApiError(
                400,
                f"records[{index}]: column '{common.ID_COLUMN}' must be text or null, "
                f"found {json_type(corporation)}",
            )
        corporations.append(corporation)
    return rows, corporations


def resolve_dataset(config: common.Config, raw: str) -> Path:
    """The file a client's dataset_path names, resolved (symlinks too) inside a data folder.

    Raises ApiError 400 for a path outside every data folder and 404 for a missing file;
    the containment check comes first, so nothing about other folders is revealed.
    """
    shown = raw if len(raw) <= SHOWN_PATH_CHARS else f"{raw[:SHOWN_PATH_CHARS]}..."
    try:
        path = (config.root / raw).resolve()
    except (OSError, ValueError, RuntimeError):
        raise ApiError(400, f"dataset_path {shown!r}: not a usable path") from None
    if not any(path.is_relative_to(folder) for folder in config.data_folders):
        folders = ", ".join(shown_path(config, folder) for folder in config.data_folders)
        raise ApiError(
            400, f"dataset_path {shown!r}: must name a file inside a data folder ({folders})"
        )
    try:
        is_file = path.is_file()
    except OSError as error:  # a name longer than the file system allows, say
        raise ApiError(
            400, f"dataset_path {shown!r}: not a usable path ({error.strerror})"
        ) from None
    if not is_file:
        raise ApiError(404, f"dataset_path {shown!r}: no such file")
    return path


def read_client_dataset(config: common.Config, raw: str) -> pd.DataFrame:
    """The dataset a client named, read and validated; ApiError 400/404 for what is wrong.

    The file can vanish between the check and the read (a 404 then, like a missing one).
    """
    path = resolve_dataset(config, raw)
    shown = raw if len(raw) <= SHOWN_PATH_CHARS else f"{raw[:SHOWN_PATH_CHARS]}..."
    try:
        return common.read_dataset(path, require_target=False)
    except common.DataError as error:
        raise ApiError(400, f"dataset_path {shown!r}: {error}") from None
    except FileNotFoundError:
        raise ApiError(404, f"dataset_path {shown!r}: no such file") from None
    except OSError as error:
        raise ApiError(400, f"dataset_path {shown!r}: cannot read it ({error.strerror})") from None


def shown_path(config: common.Config, path: Path) -> str:
    """A path as a client sees it: relative to the config folder."""
    return os.path.relpath(path, config.root)


def predict(model: Any, features: pd.DataFrame) -> tuple[list[int], Any]:
    """0/1 predictions and probabilities of exiting, from one predict_proba call.

    The prediction is the likelier class, which for logistic regression is what
    predict() answers; one model call instead of two halves the cost of small requests.
    """
    import numpy as np

    probabilities = model.predict_proba(features)
    classes = np.asarray(model.classes_)
    positive = int(np.flatnonzero(classes == 1)[0])
    predictions = classes[probabilities.argmax(axis=1)].astype(int).tolist()
    return predictions, probabilities[:, positive]


def top_rows(risk: Any, corporations: Callable[[int], str | None], top: int) -> list[dict]:
    """The `top` highest-risk rows, highest first (ties keep input order)."""
    import numpy as np

    order = np.argsort(-risk, kind="stable")[: min(top, len(risk))]
    return [
        {"corporation": corporations(int(i)), "risk_score": float(risk[i]), "row": int(i)}
        for i in order
    ]


def prediction_answer(config: common.Config, model: Any, asked: PredictionRequest) -> dict:
    """The /prediction answer for a checked request."""
    import pandas as pd

    if asked.records is not None:
        rows, ids = records_features(asked.records)
        features = pd.DataFrame(rows, columns=list(common.FEATURES), dtype="float64")

        def corporation(i: int) -> str | None:
            return ids[i]

    else:
        data = read_client_dataset(config, asked.dataset_path or "")
        features = data[list(common.FEATURES)]
        column = data[common.ID_COLUMN]

        def corporation(i: int) -> str | None:
            value = column.iloc[i]
            return value if isinstance(value, str) else None

    predictions, risk = predict(model, features)
    answer: dict[str, Any] = {"predictions": predictions, "risk_scores": risk.tolist()}
    if asked.top is not None:
        answer["top"] = top_rows(risk, corporation, asked.top)
    return answer


def read_json_body() -> Any:
    """The request's JSON body; ApiError 400 for another content type or invalid JSON."""
    if not request.is_json:
        raise ApiError(400, "expected a JSON body (Content-Type: application/json)")
    data = request.get_data(cache=False)  # a Content-Length over the limit: 413 from werkzeug
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body has no Content-Length: werkzeug stops reading at the limit and
    # says nothing, so a body cut there would pass. One more byte tells. Only then: past
    # a Content-Length, werkzeug's own server would wait for the client's next request.
    if (
        request.content_length is None
        and len(data) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    announced = request.content_length
    if announced is not None and len(data) < announced:  # the client stopped sending
        raise ApiError(
            400, f"body ended after {len(data)} of the {announced} bytes of its Content-Length"
        )

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed in JSON")

    try:
        return json.loads(data, parse_constant=no_constants)
    except RecursionError:
        raise ApiError(400, "body is not valid JSON (nested too deeply)") from None
    except ValueError as error:
        raise ApiError(400, f"body is not valid JSON ({error})") from None


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="risk API"'
    return response


def api_token() -> str | None:
    """$DRS_API_TOKEN, or None when unset; set but empty or not ASCII, the app refuses to start.

    An empty token would leave the API open while its operator believes it guarded.
    """
    token = os.environ.get(common.API_TOKEN_ENV_VAR)
    if token is None:
        return None
    if not token.strip():
        raise common.ConfigError(
            f"${common.API_TOKEN_ENV_VAR} is set but empty; give it a token, or unset it "
            "to leave the API open"
        )
    if not token.isascii() or not token.isprintable() or token != token.strip():
        raise common.ConfigError(
            f"${common.API_TOKEN_ENV_VAR} must be printable ASCII without spaces around it"
        )
    return token


def max_body_bytes() -> int:
    """The body size limit: $DRS_API_MAX_BODY_BYTES, else DEFAULT_MAX_BODY_BYTES."""
    raw = os.environ.get(MAX_BODY_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise common.ConfigError(f"${MAX_BODY_ENV_VAR}: expected a whole number of bytes >= 1")
    return value


def register_error_handlers(app: Flask) -> None:
    """Every error becomes JSON {"error": "..."}; an unexpected one is logged, not shown."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        log = logger.warning if error.status >= 500 else logger.info
        log("%s %s -> %d: %s", request.method, request.path, error.status, error.message)
        return error_response(error.status, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            message = f"request body over the limit of {current_app.config['MAX_CONTENT_LENGTH']}"
            message += " bytes"
        else:
            message = f"{error.name}: {error.description}" if error.description else error.name
        logger.info("%s %s -> %d", request.method, request.path, status)
        response = error_response(status, message)
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("%s %s: unexpected error", request.method, request.path)
        return error_response(500, "internal server error; see the server log")


def create_app(config: common.Config | None = None) -> Flask:
    """Build the API over config (None: common.load_config(), which honours $DRS_CONFIG).

    Cheap on purpose: nothing is read from the deployment until the first request.
    $DRS_API_TOKEN, when set, is read here and guards every endpoint but /health.
    """
    config = config or common.load_config()
    if not logging.getLogger().handlers:  # under gunicorn; tests and main() configure their own
        common.configure_logging()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes(), MAX_RECORDS=DEFAULT_MAX_RECORDS)
    app.json.sort_keys = False  # answers keep the order they are built in
    token = api_token()
    models = ModelCache(config.deployment_folder)
    refresher = _diagnostics().Refresher(config)
    app.extensions["risk_api"] = {"config": config, "models": models, "diagnostics": refresher}

    @app.before_request
    def require_token() -> None:
        if token is None or request.endpoint == "health":
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Headers arrive as latin-1 text, one character a byte; the token is ASCII, so a
        # header with anything else (a no-break space too: only spaces and tabs are
        # trimmed) is a wrong token, never an encoding error.
        given = given.strip(" \t")
        if (
            scheme.lower() != "bearer"
            or not given.isascii()
            or not hmac.compare_digest(given.encode("ascii"), token.encode("ascii"))
        ):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")

    register_error_handlers(app)

    @app.get("/health")
    def health() -> Response:
        try:
            info = models.deployed().info
        except common.PipelineError as error:
            logger.warning("health: %s", error)
            return jsonify(status="ok", model=None, problem="deployment unreadable; see the log")
        return jsonify(status="ok", model=info)

    @app.post("/prediction")
    def prediction() -> Response:
        asked = parse_prediction_request(read_json_body(), current_app.config["MAX_RECORDS"])
        _, _, model = models.model()
        return jsonify(prediction_answer(config, model, asked))

    @app.get("/scoring")
    def scoring_view() -> Response:
        import scoring

        release, info, model = models.model()
        data = _server_data(lambda: common.read_dataset(config.test_data_path))
        return jsonify(
            f1=_server_data(lambda: scoring.f1_of(model, data)),
            release_id=release.id,
            model_sha256=info["model_sha256"],
            dataset=shown_path(config, config.test_data_path),
            rows=len(data),
        )

    @app.get("/summarystats")
    def summarystats() -> Response:
        summary = _server_data(lambda: _diagnostics().dataframe_summary(config))
        return jsonify(
            dataset=shown_path(config, config.final_data_path), summary=json_safe(summary)
        )

    @app.get("/diagnostics")
    def diagnostics_view() -> Response:
        diagnostics = _diagnostics()
        recorded = _server_data(lambda: diagnostics.latest_recorded(config))
        refresher.refresh_if_stale(recorded)
        missing = _server_data(lambda: diagnostics.missing_data(config))
        if recorded is None:
            return jsonify(
                status="pending",
                detail="no diagnostics recorded yet; timing the scripts now, ask again shortly",
                problem=refresher.problem,
                missing_data=json_safe(missing),
                execution_time=None,
                outdated_packages=None,
            )
        return jsonify(
            status="complete",
            recorded_at=recorded["recorded_at"],
            age_s=round(diagnostics.age_s(recorded), 1),
            source=recorded.get("source"),
            timed=recorded.get("timed"),
            refreshing=refresher.running,
            missing_data=json_safe(missing),
            execution_time=json_safe(recorded.get("execution_time")),
            outdated_packages=json_safe(recorded.get("outdated_packages")),
        )

    return app


class _QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its access line per request (fullprocess.py's log is cron's)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextlib.contextmanager
def serve_on_loopback(flask_app: Flask) -> Iterator[str]:
    """Serve flask_app on a free loopback port in a thread for the block; yields its URL.

    For short-lived servers (fullprocess.py's temporary API, tests), not production.
    """
    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1", 0, flask_app, threaded=True, request_handler=_QuietRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="loopback-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def finish_background_work(app: Flask, timeout: float) -> None:
    """Wait up to timeout seconds for a diagnostics refresh still running.

    A short-lived server then leaves no timing workspace or process behind when it stops.
    """
    app.extensions["risk_api"]["diagnostics"].wait(timeout)


def _diagnostics() -> Any:
    """diagnostics.py, imported on first use (it pulls in pandas; /health does not need it)."""
    import diagnostics

    return diagnostics


def _server_data(read: Callable[[], Any]) -> Any:
    """read(), with a missing or invalid server-side file as 503 (not the client's mistake)."""
    try:
        return read()
    except (common.PipelineError, OSError) as error:
        raise ApiError(503, f"data not available: {common.describe_error(error)}") from None


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    args = parser.parse_args(argv)

    def action() -> None:
        app = create_app(common.load_config(args.config))
        logger.info("development server on http://%s:%d (debug off)", args.host, args.port)
        app.run(host=args.host, port=args.port, debug=False, use_reloader=False)

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
