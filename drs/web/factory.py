"""The risk service: the JSON API and the client managers' page, built by create_app(config).

api.py holds the JSON endpoints, pages.py the page; this module builds the app over one
State (config, the deployed model and its client book, the diagnostics refresher),
guards both with $DRS_API_TOKEN when it is set (a bearer header for the API, a cookie
set by a one-time form for the page) and turns every error into JSON or a page.

The deployed model is loaded on first use and reloaded when `current` in
prod_deployment_path points at another release, so a deployment or rollback needs no
restart. Production, from the project folder, with threads so that a slow client
holds one thread and not a whole worker: `DRS_CONFIG=/path/config.json gunicorn --bind
127.0.0.1:8000 --workers 2 --worker-class gthread --threads 8 wsgi:app`.
Development: `python app.py [--config PATH] [--port 8000]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Flask, Response, current_app, jsonify, request
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.serving import WSGIRequestHandler

from drs import clients, diagnosis
from drs.cli import configure_logging
from drs.config import Config, load_config
from drs.errors import ConfigError
from drs.web import api, auth, pages
from drs.web.risks import RiskView
from drs.web.shared import ApiError, ClientIdConverter, State, json_safe

logger = logging.getLogger(__name__)

MAX_BODY_ENV_VAR = "DRS_API_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 50_000
# Endpoints anyone may reach, token or not.


class FastJSON(JSONProvider):
    """Answers encoded by orjson: numpy arrays whole, floats exact, NaN as null.

    A 10,000-row answer costs a fraction of what the standard library's encoder takes;
    keys keep the order they are built in. What orjson refuses (a whole number beyond
    64 bits, from a client's request) goes through the standard library's encoder, with
    the same result for everything else, for answers and dumps() alike.
    """

    OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, option=self.OPTIONS)
        except TypeError:
            return json.dumps(json_safe(obj), ensure_ascii=False, separators=(",", ":")).encode()

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self.encode(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self.encode(self._prepare_response_obj(args, kwargs))
        return current_app.response_class(body, mimetype="application/json")


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
        raise ConfigError(f"${MAX_BODY_ENV_VAR}: expected a whole number of bytes >= 1")
    return value


def error_response(status: int, message: str) -> Response:
    """An error as the client reads it: a page for the page's paths, JSON for the rest."""
    if request.blueprint in auth.PAGE_BLUEPRINTS:
        return pages.error_page(status, message)
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="risk API"'
    return response


def api_error(error: ApiError) -> Response:
    log = logger.warning if error.status >= 500 else logger.info
    log("%s %s -> %d: %s", request.method, request.path, error.status, error.message)
    return error_response(error.status, error.message)


def http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 413:
        message = f"request body over the limit of {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    elif isinstance(error, MethodNotAllowed) and error.valid_methods:
        allowed = ", ".join(m for m in error.valid_methods if m not in {"HEAD", "OPTIONS"})
        message = f"{request.method} is not allowed on {request.path}; it allows {allowed}"
    else:
        message = f"{error.name}: {error.description}" if error.description else error.name
    logger.info("%s %s -> %d", request.method, request.path, status)
    response = error_response(status, message)
    for name, value in error.get_headers():
        if name.lower() == "allow":
            response.headers[name] = value
    return response


def unexpected_error(error: Exception) -> Response:
    logger.exception("%s %s: unexpected error", request.method, request.path)
    return error_response(500, "internal server error; see the server log")


def log_where_the_server_logs() -> None:
    """Under gunicorn, the app's log lines (500 tracebacks too) go to gunicorn's error log.

    Elsewhere (a WSGI server of another kind), to stderr.
    """
    server_log = logging.getLogger("gunicorn.error")
    if not server_log.handlers:
        configure_logging()
        return
    root = logging.getLogger()
    root.handlers = list(server_log.handlers)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def create_app(config: Config | None = None) -> Flask:
    """Build the service over config (None: load_config(), which honours $DRS_CONFIG).

    Cheap on purpose: nothing is read from the deployment until the first request.
    $DRS_API_TOKEN, when set, is read here and guards everything but /health.
    """
    config = config or load_config()
    if not logging.getLogger().handlers:  # tests and main() configure their own
        log_where_the_server_logs()
    app = Flask(__name__)
    app.json = FastJSON(app)
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes(), MAX_RECORDS=DEFAULT_MAX_RECORDS)
    token = auth.api_token()
    app.extensions["risk"] = State(
        config=config,
        models=clients.ModelCache(config),
        datasets=clients.DatasetCache(),
        refresher=diagnosis.Refresher(config),
        risks=RiskView(config),
        token=token,
    )
    auth.configure(app, token)
    app.before_request(auth.guard)
    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    app.url_map.converters["client_id"] = ClientIdConverter  # before the rules using it
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
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
