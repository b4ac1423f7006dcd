"""The page for client managers: who is at risk, and why (a Flask blueprint).

Server-rendered from templates/ with static/ beside them: nothing from another host,
no build step. The list, the search and the client page work without JavaScript;
static/search.js only makes the search live. With $DRS_API_TOKEN set the page asks
for the token once, and a cookie derived from it (HttpOnly, SameSite=Strict) keeps
the manager signed in.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

import clients
import common
import drift

if TYPE_CHECKING:
    from app import State

logger = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)

SESSION_COOKIE = "risk_session"
SESSION_DAYS = 30
SHOWN_FIRST = 20  # rows of the list before "show more"
SHOW_MORE = 50
MAX_SHOWN = 1_000
MAX_QUERY_CHARS = 100
# The F1 chart of the model-health panel, in SVG user units.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 24
DRIVER_BAR = 120  # the longest driver bar, in SVG user units
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def state() -> State:
    return current_app.extensions["risk"]


@bp.after_request
def secure(response: Response) -> Response:
    """Every page forbids content from other hosts (it must work on an offline network)."""
    response.headers.update(SECURITY_HEADERS)
    return response


def require_session(expected: str | None) -> Response | None:
    """None when the request carries the page cookie, else a redirect to the token form."""
    given = request.cookies.get(SESSION_COOKIE, "")
    if expected is not None and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


def error_page(status: int, message: str) -> Response:
    """An error as a page (unknown client, no deployment yet, ...) with its status."""
    titles = {404: "Not found", 503: "Not available yet", 401: "Token needed"}
    html = render_template(
        "message.html", title=titles.get(status, "Something went wrong"), message=message
    )
    response = current_app.make_response((html, status))
    response.headers.update(SECURITY_HEADERS)
    return response


class Header(NamedTuple):
    """What the top of every page says: the model, the data, the last check."""

    release_id: str
    deployed_at: str
    f1: float | None
    verdict: drift.Verdict
    checked_at: str | None
    data_rows: int
    data_written: str
    newest_file: str | None


class Health(NamedTuple):
    """The model-health panel: F1 over time as SVG shapes, the latest feature drift."""

    lines: list[dict[str, Any]]
    points: list[dict[str, Any]]
    deployments: list[float]
    ticks: list[dict[str, Any]]
    drift: dict[str, Any] | None


class _HistoryView:
    """The run history as the page needs it, read again only when the history changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._value: tuple[dict[str, Any] | None, Health] | None = None

    def get(self, config: common.Config) -> tuple[dict[str, Any] | None, Health]:
        key = _history_key(config)
        with self._lock:
            if self._value is None or key != self._key:
                with common.open_history(config) as history:
                    finished = drift.finished_runs(history)
                    scores = history.rows(
                        "SELECT recorded_at, f1, purpose, dataset_sha256 FROM scores ORDER BY id"
                    )
                    deployments = history.rows("SELECT recorded_at FROM deployments ORDER BY id")
                run = drift.latest_model_run(finished)
                self._value = (run, _health(scores, deployments, run))
                self._key = key
            return self._value


def _history_key(config: common.Config) -> tuple[Any, ...]:
    """The history database's state on disk (the file and its write-ahead log)."""
    key = []
    for suffix in ("", "-wal"):
        try:
            status = os.stat(f"{config.history_path}{suffix}")
            key.append((status.st_size, status.st_mtime_ns))
        except FileNotFoundError:
            key.append(None)
    return tuple(key)


def history_view() -> tuple[dict[str, Any] | None, Health]:
    """The latest run and the health panel, cached per app."""
    view = current_app.extensions.setdefault("risk_history_view", _HistoryView())
    return view.get(state().config)


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else "unknown"


def _health(
    scores: list[dict[str, Any]], deployments: list[dict[str, Any]], run: dict[str, Any] | None
) -> Health:
    """Place F1 scores and deployments on the chart: each test dataset a line, checks points."""
    scores = [row for row in scores if common.parse_stamp(row["recorded_at"])]
    deployments = [row for row in deployments if common.parse_stamp(row["recorded_at"])]
    moments = [_seconds(row["recorded_at"]) for row in (*scores, *deployments)]
    low, high = (min(moments), max(moments)) if moments else (0.0, 1.0)
    span = max(high - low, 60.0)

    def x(stamp: str) -> float:
        return round(CHART_PAD + (_seconds(stamp) - low) / span * (CHART_WIDTH - 2 * CHART_PAD), 1)

    def y(f1: float) -> float:
        return round(CHART_HEIGHT - CHART_PAD - f1 * (CHART_HEIGHT - 2 * CHART_PAD), 1)

    series: dict[str | None, list[dict[str, Any]]] = {}
    points = []
    for row in scores:
        spot = {"x": x(row["recorded_at"]), "y": y(row["f1"]), "f1": row["f1"]}
        if row["purpose"] == "test":
            series.setdefault(row["dataset_sha256"], []).append(spot)
        else:
            points.append({**spot, "when": _when(row["recorded_at"])})
    lines = [
        {"path": " ".join(f"{s['x']},{s['y']}" for s in spots), "spots": spots}
        for spots in series.values()
    ]
    ticks = [{"y": y(f1), "label": f"{f1:.1f}"} for f1 in (0.0, 0.5, 1.0)]
    return Health(
        lines,
        points,
        [x(row["recorded_at"]) for row in deployments],
        ticks,
        (run or {}).get("data_drift"),
    )


def _seconds(stamp: str) -> float:
    when = common.parse_stamp(stamp)
    return when.timestamp() if when else 0.0


def header(book: clients.ClientBook, info: dict[str, Any]) -> Header:
    """The top of the page: the deployed model, its last check, how fresh the client data is."""
    config = state().config
    run, _ = history_view()
    arrived = [path.stat().st_mtime for path in config.input_folder.glob("*.csv")]
    newest = datetime.fromtimestamp(max(arrived), UTC).isoformat() if arrived else None
    written = datetime.fromtimestamp(book.data.modified_at, UTC).isoformat()
    return Header(
        release_id=book.release_id,
        deployed_at=_when(info.get("deployed_at")),
        f1=info.get("score"),
        verdict=drift.verdict(run, book.release_id),
        checked_at=_when(run.get("finished_at")) if run else None,
        data_rows=sum(len(rows) for rows in book.rows.values()),
        data_written=_when(written),
        newest_file=_when(newest) if newest else None,
    )


def current_book() -> tuple[clients.ClientBook, dict[str, Any]] | Response:
    """The client book and the release's identity, or the page saying why there is none."""
    models = state().models
    try:
        book = models.book()
        _, info, _ = models.model()
    except clients.ModelUnavailable as error:
        if not error.deployed:
            return error_page(
                503,
                "No model is deployed yet, so there is no risk to show. It appears here once "
                "fullprocess.py (or deployment.py) has deployed one.",
            )
        return error_page(503, f"The deployed model cannot be used: {error}")
    except (common.PipelineError, OSError) as error:
        return error_page(503, f"The client data is not available: {common.describe_error(error)}")
    return book, info


def _shown_count() -> int:
    try:
        count = int(request.args.get("n", SHOWN_FIRST))
    except ValueError:
        count = SHOWN_FIRST
    return min(max(count, 1), MAX_SHOWN)


@bp.get("/")
def home() -> Response | str:
    found = current_book()
    if isinstance(found, Response):
        return found
    book, info = found
    query = request.args.get("q", "")[:MAX_QUERY_CHARS]
    count = _shown_count()
    entries, matching = book.ranked(count, query)
    results = {
        "entries": entries,
        "matching": matching,
        "total": len(book.ids),
        "query": query,
        "more": url_for("pages.home", q=query or None, n=count + SHOW_MORE)
        if matching > count
        else None,
        "drivers_unavailable": book.linear is None,
    }
    if request.args.get("fragment") == "results":
        return render_template("results.html", **results)
    _, health = history_view()
    return render_template(
        "index.html",
        header=header(book, info),
        health=health,
        chart={"width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD},
        **results,
    )


@bp.get("/client/<path:corporation>")
def client(corporation: str) -> Response | str:
    found = current_book()
    if isinstance(found, Response):
        return found
    book, info = found
    try:
        entry = book.client(corporation)
    except clients.UnknownClient as error:
        return error_page(404, f"{error}.")
    drivers = entry["drivers"] or []
    longest = max((abs(d["effect"]) for d in drivers), default=0.0) or 1.0
    bars = [
        {
            **driver,
            "words": clients.FEATURE_WORDS[driver["feature"]],
            "length": round(abs(driver["effect"]) / longest * DRIVER_BAR, 1),
            "raises": driver["effect"] > 0,
        }
        for driver in drivers
    ]
    return render_template(
        "client.html",
        header=header(book, info),
        entry=entry,
        total=len(book.ids),
        bars=bars,
        bar_room=DRIVER_BAR,
        words=clients.FEATURE_WORDS,
        features=common.FEATURES,
        medians=dict(zip(common.FEATURES, book.linear.medians, strict=True)) if book.linear else {},
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    expected = state().page_session
    target = request.values.get("next", "")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("pages.home")
    if expected is None:
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", target=target, wrong=False)
    given = request.form.get("token", "").strip(" \t")
    token = state().token or ""
    if not (given.isascii() and hmac.compare_digest(given.encode(), token.encode())):
        return render_template("login.html", target=target, wrong=True), 401
    response = redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        expected,
        max_age=SESSION_DAYS * 86_400,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("pages.login"))
    response.delete_cookie(SESSION_COOKIE)
    return response
