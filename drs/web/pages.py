"""The page for client managers: who is at risk, and why (a Flask blueprint).

Server-rendered from templates/ with static/ beside them: nothing from another host,
no build step. The list, the search and the client page work without JavaScript;
static/search.js only makes the search live. With $DRS_API_TOKEN set the page asks
for the token once (auth.py keeps the manager signed in for a working day).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from flask import Blueprint, Response, current_app, render_template, request, url_for

from drs import clients, explain, exports, releasefolder, releases, riskhistory, runs, timeline
from drs import state as system
from drs.cli import describe_error
from drs.clock import parse_stamp
from drs.conditions import Condition
from drs.config import FEATURES, MAX_TOP, Config
from drs.errors import PipelineError
from drs.files import last_ingested_name
from drs.history import open_history
from drs.runs import Outcome, RunRecord, Severity, Verdict
from drs.web import risks
from drs.web.shared import MAX_QUERY_CHARS, secure, shown, state, whole_number

logger = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)
bp.after_request(secure)

SHOWN_FIRST = 20  # rows of the list before "show more"
SHOW_MORE = 50
MAX_SHOWN = MAX_TOP
# The F1 chart of the model-health panel, in SVG user units.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 24
DRIVER_BAR = 120  # the longest driver bar, in SVG user units
RECENT_RUNS = 200  # runs looked at for the latest one that checked the model
VERDICT_AGE_S = 600  # the verdict is computed again at least this often (news grows old)


def error_page(status: int, message: str) -> Response:
    """An error as a page (unknown client, no deployment yet, ...) with its status."""
    titles = {
        400: "Cannot show that",
        404: "Not found",
        503: "Not available yet",
        401: "Token needed",
    }
    html = render_template(
        "message.html", title=titles.get(status, "Something went wrong"), message=message
    )
    return current_app.make_response((html, status))


@bp.app_template_global()
def client_url(corporation: str) -> str:
    """The link to a client's page: /client/<id> when a browser keeps that path as it is.

    Browsers remove '.' and '..' segments (also written %2e), read '\\' as '/', and
    werkzeug decodes %2F before routing; any id with such a risk, or a space or a
    control character, gets /client?id=<id>, which reaches exactly that client.
    """
    plain = (
        corporation.isprintable()
        and corporation.strip(".") != ""
        and not any(char in corporation for char in " /\\%?#")
    )
    if plain:
        return url_for("pages.client", corporation=corporation)
    return url_for("pages.client_by_id", id=corporation)


class Header(NamedTuple):
    """The Model health page's account: the model, the data, the last check."""

    release_id: str
    deployed_at: str
    f1: float | None
    verdict: Verdict
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


class Seen(NamedTuple):
    """What the pages show of the history: the latest model run, the charts, the verdict."""

    run: RunRecord | None
    health: Health
    verdict: Verdict


class _HistoryView:
    """The run history as the page needs it, read again only when the history changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._value: Seen | None = None

    def get(self, config: Config) -> Seen:
        key = _history_key(config)
        with self._lock:
            if self._value is None or key != self._key:
                with open_history(config) as history:
                    recent = runs.latest(history, RECENT_RUNS)
                    grouped = timeline.bucket(history)
                    scores = timeline.scores(history, grouped)
                    deployments = timeline.deployments(history, grouped, releases.WENT_LIVE)
                    verdict = system.verdict(system.read(config, opened=history))
                run = next((r for r in reversed(recent) if r.decision is not None), None)
                self._value = Seen(run, _health(scores, deployments, run), verdict)
                self._key = key
            return self._value


def _history_key(config: Config) -> tuple[Any, ...]:
    """What the verdict is computed from, as it stands on disk: the history database (the
    file and its write-ahead log), the live release's link and the test data; and the
    time to VERDICT_AGE_S, since a notice becomes ok once it is old."""
    key: list[Any] = []
    for path in (
        config.history_path,
        f"{config.history_path}-wal",
        config.test_data_path,
    ):
        try:
            status = os.stat(path)
            key.append((status.st_size, status.st_mtime_ns, status.st_ino))
        except OSError:
            key.append(None)
    try:
        key.append(os.readlink(config.deployment_folder / releasefolder.CURRENT))
    except OSError:
        key.append(None)
    key.append(int(time.time() // VERDICT_AGE_S))
    return tuple(key)


def history_view() -> Seen:
    """The latest model run, the health panel and the verdict, cached per app."""
    view = current_app.extensions.setdefault("risk_history_view", _HistoryView())
    return view.get(state().config)


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else "unknown"


def _health(
    scores: list[dict[str, Any]], deployments: list[dict[str, Any]], run: RunRecord | None
) -> Health:
    """Place F1 scores and deployments on the chart: each test dataset a line, checks points."""
    scores = [row for row in scores if parse_stamp(row["recorded_at"])]
    deployments = [row for row in deployments if parse_stamp(row["recorded_at"])]
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
        run.data_drift if run else None,
    )


def _seconds(stamp: str) -> float:
    when = parse_stamp(stamp)
    return when.timestamp() if when else 0.0


def _stamp(seconds: float | None) -> str | None:
    """A modification time as an ISO stamp; None when there is none or it is no real time."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def newest_arrival(config: Config) -> float | None:
    """When the newest file of the last ingestion arrived (its modification time), or None.

    ingestedfiles.txt lists the files in the order they arrived, so its last name is the
    newest one: one stat, however many files the input folder holds. None when nothing
    was ingested yet, or that file is gone.
    """
    try:
        name = last_ingested_name(config.ingested_record_path)
        return (config.input_folder / name).stat().st_mtime if name else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def header(book: clients.ClientBook, info: dict[str, Any]) -> Header:
    """The top of the page: the deployed model, its last check, how fresh the client data is."""
    config = state().config
    run, _, verdict = history_view()
    newest = _stamp(newest_arrival(config))
    written = _stamp(book.data.modified_at)
    return Header(
        release_id=book.release_id,
        deployed_at=_when(info.get("deployed_at")),
        f1=info.get("score"),
        verdict=verdict,
        checked_at=_when(run.finished_at) if run else None,
        data_rows=book.row_count,
        data_written=_when(written),
        newest_file=_when(newest) if newest else None,
    )


class Freshness(NamedTuple):
    """The sentence at the top of every page: how fresh the scores are, can they be trusted."""

    sentence: str
    trust: str  # "ok", "care" or "alarm": the sentence's colour


# The open conditions that bear on the scores a manager acts on, in a manager's words;
# the others (an alert not delivered, say) are the Model health page's.
CAUTIONS = {
    Condition.DEPLOYMENT_DAMAGED: "the deployed model is damaged",
    Condition.RUN_FAILED: "the last automated check failed",
    Condition.TEST_DATA_STALE: "the test data no longer represents the clients",
    Condition.DRIFT_UNRESOLVED: "the model scores worse on the newest clients",
    Condition.FILES_REJECTED: "some new client files were rejected",
    Condition.STAGED_WAITING: "a retrained model is waiting to be approved",
}


def trust(verdict: Verdict, checked: bool) -> tuple[str, str]:
    """(colour, words) of how far the verdict lets a manager trust the scores.

    checked: whether an automated run has ever checked the model against new data.
    """
    for name in verdict.open:  # worst first; a StrEnum key finds its plain value
        words = CAUTIONS.get(name)  # type: ignore[call-overload]
        if words is not None:
            if Condition(name).severity is Severity.CRITICAL:
                return "alarm", f"do not rely on them: {words}"
            return "care", f"treat with care: {words}"
    if not checked:
        return "care", "not yet checked automatically"
    return "ok", "checked OK"


def freshness(book: clients.ClientBook, info: dict[str, Any]) -> Freshness:
    """When the scores last changed and why, and whether the last check trusts them."""
    run, _, verdict = history_view()
    latest = state().risks.latest()
    if latest is not None and latest["release_id"] == book.release_id:
        when = latest["recorded_at"]
        if latest["id"] == 1:
            why = "first scored {when}"
        elif latest["new_model"] and run is not None and run.decision == Outcome.REDEPLOYED:
            why = "updated {when} after client behaviour changed"
        elif latest["new_model"]:
            why = "updated {when} with a new model"
        else:
            why = "updated {when} with new client data"
    else:  # not recorded (the history cannot be written): what the files say
        when = max(
            filter(None, [_stamp(book.data.modified_at), info.get("deployed_at")]),
            key=_seconds,
        )
        why = "updated {when}"
    colour, words = trust(verdict, checked=run is not None)
    sentence = f"Risk scores {why.format(when=risks.short_when(when))}; {words}."
    return Freshness(sentence, colour)


def current_book() -> tuple[clients.ClientBook, dict[str, Any]] | Response:
    """The client book and the identity of the release that scored it, or the page saying why."""
    try:
        found = state().models.snapshot()
    except clients.ModelUnavailable as error:
        if not error.deployed:
            return error_page(
                503,
                "No model is deployed yet, so there is no risk to show. It appears here once "
                "fullprocess.py (or deployment.py) has deployed one.",
            )
        return error_page(503, f"The deployed model cannot be used: {error}")
    except (PipelineError, OSError) as error:
        return error_page(503, f"The client data is not available: {describe_error(error)}")
    state().risks.record(found[0])
    return found


@bp.app_template_global()
def percent(risk: float | None) -> str:
    return risks.percent(risk)


@bp.app_template_global()
def rate(share: float | None) -> str:
    return riskhistory.rate(share)


@bp.app_template_global()
def when(stamp: str | None) -> str:
    return risks.short_when(stamp)


def list_arguments() -> tuple[str, str | None, int, str | None] | Response:
    """The list's query (q, band, n, since) from the address, or the page saying what is wrong."""
    query = request.args.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        return error_page(
            400,
            f"Search for at most {MAX_QUERY_CHARS} characters of a client id; this search has "
            f"{len(query):,}.",
        )
    band = request.args.get("band") or None
    if band is not None and band not in clients.BANDS:
        return error_page(
            400, f"The bands are {', '.join(clients.BANDS)}; the address asks for {shown(band)!r}."
        )
    raw_count = request.args.get("n")
    count = SHOWN_FIRST if raw_count is None else whole_number(raw_count, 1, MAX_SHOWN)
    if count is None:
        return error_page(
            400,
            f"The list shows from 1 to {MAX_SHOWN:,} clients; the address asks for "
            f"{shown(raw_count or '')!r}.",
        )
    since = request.args.get("since") or None
    if since is not None:
        try:
            if not (since.isascii() and len(since) == 10):
                raise ValueError(since)
            date.fromisoformat(since)
        except ValueError:
            return error_page(
                400, f"Compare with a date as YYYY-MM-DD; the address says {shown(since)!r}."
            )
    return query, band, count, since


@bp.get("/")
def home() -> Response | str:
    asked = list_arguments()
    if isinstance(asked, Response):
        return asked
    query, band, count, since = asked
    found = current_book()
    if isinstance(found, Response):
        return found
    book, info = found
    entries, matching = book.ranked(count, query, band)
    can_show_more = matching > count and count < MAX_SHOWN
    results = {
        "entries": entries,
        "matching": matching,
        "total": len(book.ids),
        "query": query,
        "band": band,
        "more": url_for(
            "pages.home", q=query or None, band=band, n=min(count + SHOW_MORE, MAX_SHOWN)
        )
        if can_show_more
        else None,
        "at_most": MAX_SHOWN if matching > count and not can_show_more else None,
        "export": url_for("pages.export", q=query or None, band=band),
        "drivers_unavailable": book.linear is None,
    }
    if request.args.get("fragment") == "results":
        return render_template("results.html", **results)
    return render_template(
        "index.html",
        max_query=MAX_QUERY_CHARS,
        freshness=freshness(book, info),
        counts=book.band_counts(),
        bands=clients.BANDS,
        since=since,
        changes=state().risks.changes(since),
        **results,
    )


@bp.get("/export.csv")
def export() -> Response:
    """The list as filtered on the page (search, band), every matching client, as CSV."""
    asked = list_arguments()
    if isinstance(asked, Response):
        return asked
    query, band, _, _ = asked
    found = current_book()
    if isinstance(found, Response):
        return found
    book, _ = found
    entries, _ = book.ranked(len(book.ids), query, band)
    name = "clients-at-risk" + (f"-{band}" if band else "") + ".csv"
    response = current_app.response_class(
        exports.csv_text(exports.table_rows(entries)), mimetype="text/csv"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get("/model-health")
def model_health() -> Response | str:
    """The technical account: verdict, the lift of the high band, F1 over time, drift."""
    found = current_book()
    if isinstance(found, Response):
        return found
    book, info = found
    _, health, _ = history_view()
    return render_template(
        "model.html",
        section="health",
        freshness=freshness(book, info),
        details=header(book, info),
        health=health,
        lift=risks.lift_chart(state().risks.lift()),
        chart={"width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD},
    )


@bp.get("/client/<client_id:corporation>", merge_slashes=False)
def client(corporation: str) -> Response | str:
    return client_page(corporation)


@bp.get("/client")
def client_by_id() -> Response | str:
    """Any client's page, its id in the query: what links to ids a path cannot carry use."""
    given = request.args.getlist("id")
    if len(given) != 1 or not given[0].strip():
        return error_page(
            400, "Say which client: the address needs one id, as in /client?id=<client id>."
        )
    return client_page(given[0])


def client_page(corporation: str) -> Response | str:
    """One client's page: risk, drivers, values against typical ones, earlier records."""
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
            "words": explain.FEATURE_WORDS[driver["feature"]],
            "length": round(abs(driver["effect"]) / longest * DRIVER_BAR, 1),
            "raises": driver["effect"] > 0,
        }
        for driver in drivers
    ]
    records = state().risks.trend(corporation)
    rows = [*entry["earlier_rows"], entry["latest"]]
    arrived = [arrival.words() for arrival in risks.arrivals(rows, records)]
    return render_template(
        "client.html",
        freshness=freshness(book, info),
        entry=entry,
        trend=risks.trend_chart(records, book.bands),
        records=[
            {**record, "when": risks.short_when(record["recorded_at"])}
            for record in riskhistory.thin(records, riskhistory.TREND_POINTS)
        ][::-1],
        arrived=arrived,
        chart={"width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD},
        total=len(book.ids),
        bars=bars,
        bar_room=DRIVER_BAR,
        words=explain.FEATURE_WORDS,
        features=FEATURES,
        medians=dict(zip(FEATURES, book.linear.medians, strict=True)) if book.linear else {},
    )
