"""What the API, the page and the app factory share: the app's state, errors, parsing helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app
from werkzeug.routing import BaseConverter

from drs import clients, diagnosis
from drs import state as system
from drs.config import Config
from drs.runs import Verdict
from drs.web.risks import RiskView

SHOWN_PATH_CHARS = 200
MAX_QUERY_CHARS = 100  # a search (?q=), on the page as in the API


@dataclass(frozen=True)
class State:
    """What every view works over, made once per app (per gunicorn worker)."""

    config: Config
    models: clients.ModelCache
    datasets: clients.DatasetCache
    refresher: diagnosis.Refresher
    risks: RiskView
    token: str | None  # $DRS_API_TOKEN: guards everything but /health when set


class ClientIdConverter(BaseConverter):
    """A client id in a URL path: the whole rest of the path, '/' and line breaks included.

    Werkzeug decodes %2F and %0A before routing, and its path converter neither starts
    with '/' nor spans a line break, so '/lead' or 'line%0Abreak' could not be asked
    for. Rules using it set merge_slashes=False, or '/clients/%2Flead' would be
    redirected to the client 'lead'. Browsers still remove '.' and '..' segments: links
    to such ids use the query form (?id=).
    """

    regex = "(?s:.+)"
    part_isolating = False
    weight = 200  # as the path converter's: fixed routes come first

    def to_url(self, value: str) -> str:
        """Every '/' encoded too: one path segment, whatever the id holds."""
        from urllib.parse import quote

        return quote(value, safe="!$&'()*+,:;=@")


class ApiError(Exception):
    """A request the API refuses: HTTP status and the one-line message of the JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def state() -> State:
    """The app's state (config, model cache, diagnostics refresher), made by create_app."""
    return current_app.extensions["risk"]


def account() -> tuple[system.State, Verdict]:
    """The system's state now and its verdict: what the page, /health and /metrics say.

    Read at each request (a few bounded reads), so a rollback by hand shows at once.
    """
    now = system.read(state().config)
    return now, system.verdict(now)


def whole_number(raw: str, low: int, high: int) -> int | None:
    """raw as a whole number from low to high, or None.

    Plain ASCII digits only: int() would also take '5_0', '+5', ' 5' and other
    scripts' digits, which no client means and no error would name.
    """
    if not (raw.isascii() and raw.isdigit()):
        return None
    try:
        value = int(raw)
    except ValueError:  # more digits than Python converts
        return None
    return value if low <= value <= high else None


def json_safe(value: Any) -> Any:
    """value with NaN and infinities as null and numpy scalars as numbers (valid JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalars, arrays
        return json_safe(value.tolist())
    return value


def shown(raw: str) -> str:
    """A client's path as an error message quotes it: cut when very long."""
    return raw if len(raw) <= SHOWN_PATH_CHARS else f"{raw[:SHOWN_PATH_CHARS]}..."


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def secure(response: Response) -> Response:
    """Every page, error pages too, forbids content from other hosts (offline networks)."""
    response.headers.update(SECURITY_HEADERS)
    return response
