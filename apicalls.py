"""Ask the risk API who is at risk, and save its four course answers as one JSON file.

Prints the highest-risk current clients as a table (rank, client, risk, band, main
reason; --top N of them, or of --dataset PATH's rows instead), optionally writes
that list as CSV (--csv PATH), and calls POST /prediction on testdata.csv (or on
--dataset), GET /scoring, /summarystats and /diagnostics at --url (default: the
config's api_url, http://127.0.0.1:8000); $DRS_API_TOKEN is sent as a bearer token
when set. The four answers go to apireturns.txt (or --output) in output_model_path;
a /diagnostics answer still pending is waited for (bounded), never written. An
unreachable API or an error answer stops it with one line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from drs.cli import build_parser, errno_text, run_cli
from drs.clock import utc_now
from drs.config import API_TOKEN_ENV_VAR, MAX_TOP, Config, load_config
from drs.errors import PipelineError
from drs.files import atomic_write_text, printable

logger = logging.getLogger(__name__)

TOKEN_ENV_VAR = API_TOKEN_ENV_VAR
DEFAULT_OUTPUT_NAME = "apireturns.txt"
# Seconds: a dead address fails fast; a slow answer is bounded too (/diagnostics answers
# within a few seconds by design, /prediction on testdata.csv in well under one).
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
ERROR_CHARS = 300
DEFAULT_TOP = 10
# Seconds between /health polls while --wait waits for a server to come up.
POLL_S = 0.2
# How long a /diagnostics answer still pending (nothing recorded yet, a refresh under
# way: it times the scripts) is waited for, and how often it is asked again.
DIAGNOSTICS_WAIT_S = 120.0
DIAGNOSTICS_POLL_S = 1.0


class ApiCallError(PipelineError):
    pass


def call_api(
    base_url: str,
    config: Config,
    token: str | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    diagnostics_wait_s: float = DIAGNOSTICS_WAIT_S,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Ask the API at base_url its four questions; returns the answers by endpoint name.

    The dataset for /prediction is config's testdata.csv (or dataset), named relative
    to the config folder as the API expects. A pending /diagnostics answer is asked
    again until it is complete, for diagnostics_wait_s at most. Raises ApiCallError
    (one line) when the API cannot be reached, is too slow, or answers with an error.
    """
    base = base_url.rstrip("/")
    dataset = dataset or os.path.relpath(config.test_data_path, config.root)
    calls = (
        ("prediction", "POST", "/prediction", {"dataset_path": dataset}),
        ("scoring", "GET", "/scoring", None),
        ("summarystats", "GET", "/summarystats", None),
        ("diagnostics", "GET", "/diagnostics", None),
    )
    returns: dict[str, Any] = {"api_url": base, "called_at": utc_now()}
    with _session(token) as session:
        for name, method, path, body in calls:
            returns[name] = _ask(session, method, base, path, timeout, json=body)
        deadline = time.monotonic() + diagnostics_wait_s
        while returns["diagnostics"].get("status") != "complete":
            if time.monotonic() + DIAGNOSTICS_POLL_S > deadline:
                raise ApiCallError(
                    f"GET {base}/diagnostics: still pending after {diagnostics_wait_s:g} s "
                    "(the API is timing the scripts); nothing written, try again later"
                )
            time.sleep(DIAGNOSTICS_POLL_S)
            returns["diagnostics"] = _ask(session, "GET", base, "/diagnostics", timeout)
    return returns


def _session(token: str | None) -> Any:
    """A requests session that sends token as a bearer token when there is one."""
    import requests

    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def _ask(
    session: Any, method: str, base: str, path: str, timeout: tuple[float, float], **sent: Any
) -> Any:
    """One call to the API: its JSON answer; ApiCallError in one line when it fails."""
    import requests

    what = f"{method} {base}{path}"
    try:
        response = session.request(method, base + path, timeout=timeout, **sent)
    except requests.Timeout:
        raise ApiCallError(f"{what}: no answer within {timeout[1]:g} s") from None
    except requests.RequestException as error:
        raise ApiCallError(f"cannot reach the API at {base}: {_reason(error)}") from None
    answer = _answer(response, what)
    logger.info("%s: HTTP %d", what, response.status_code)
    return answer


def wait_for_api(base_url: str, seconds: float, poll_s: float = POLL_S) -> None:
    """Return once the API answers /health; for a server started moments ago (--daemon).

    Raises ApiCallError when nothing answers within seconds.
    """
    import requests

    url = base_url.rstrip("/") + "/health"
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
            return
        except requests.RequestException as error:
            if time.monotonic() + poll_s > deadline:
                raise ApiCallError(
                    f"no answer from {url} within {seconds:g} s: {_reason(error)}"
                ) from None
        time.sleep(poll_s)


def _answer(response: Any, what: str) -> Any:
    """The JSON of a successful answer; ApiCallError naming the status and the API's message."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not response.ok:
        message = payload.get("error") if isinstance(payload, dict) else None
        detail = str(message or response.reason or "error")[:ERROR_CHARS]
        raise ApiCallError(f"{what}: HTTP {response.status_code}: {detail}")
    if payload is None:
        raise ApiCallError(f"{what}: the answer is not JSON")
    return payload


def _reason(error: Exception) -> str:
    """Why a connection failed, e.g. 'Connection refused'."""
    first_line = str(error).splitlines()[0][:ERROR_CHARS] if str(error) else None
    return errno_text(error) or first_line or type(error).__name__


def at_risk(
    base_url: str,
    token: str | None,
    top: int,
    dataset: str | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
) -> tuple[str, list[dict[str, Any]]]:
    """The `top` highest-risk clients: the current ones (GET /clients), or dataset's rows.

    Returns a title saying whose risk it is, and rows of rank, corporation, risk_score,
    band and main_reason. Raises ApiCallError like call_api.
    """
    base = base_url.rstrip("/")
    with _session(token) as session:
        if dataset is None:
            answer = _ask(session, "GET", base, "/clients", timeout, params={"top": top})
            entries = answer["clients"]
            title = (
                f"Highest-risk current clients: {len(entries)} of {answer['total']:,}, "
                f"scored by release {answer['release_id']}"
            )
        else:
            body = {"dataset_path": dataset, "top": top}
            answer = _ask(session, "POST", base, "/prediction", timeout, json=body)
            entries = [{**row, "rank": n} for n, row in enumerate(answer["top"], start=1)]
            title = (
                f"Highest-risk rows of {dataset}: {len(entries)} of {len(answer['risk_scores']):,}"
            )
    rows = [
        {
            "rank": entry["rank"],
            "corporation": entry.get("corporation") or f"(row {entry.get('row')})",
            "risk_score": entry["risk_score"],
            "band": entry["band"],
            "main_reason": entry["drivers"][0]["phrase"] if entry.get("drivers") else "",
        }
        for entry in entries
    ]
    return title, rows


# Longer client ids are cut in the terminal table (the CSV keeps them whole).
ID_WIDTH = 40


def risk_table(title: str, rows: list[dict[str, Any]]) -> str:
    """The ranked clients as a plain-text table for a terminal.

    Ids are shown with control characters escaped (an id cannot move the cursor or
    recolour the terminal) and cut at ID_WIDTH characters, so one long id does not
    widen every line.
    """
    names = [_cut(printable(row["corporation"])) for row in rows]
    width = max([len("client"), *map(len, names)])
    lines = [
        printable(title),
        f"{'rank':>4}  {'client':<{width}}  {'risk':>4}  {'band':<6}  main reason",
    ]
    for row, name in zip(rows, names, strict=True):
        lines.append(
            f"{row['rank']:>4}  {name:<{width}}  {row['risk_score']:>4.0%}  "
            f"{row['band']:<6}  {row['main_reason']}"
        )
    return "\n".join(lines)


def _cut(text: str) -> str:
    return text if len(text) <= ID_WIDTH else text[: ID_WIDTH - 1] + "…"


# A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """value as a CSV cell a spreadsheet keeps as text: a leading ' if it looks like a formula."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The ranked rows as CSV for a spreadsheet, atomically; returns the path written."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "corporation", "risk_percent", "band", "main_reason", "risk_score"])
    for row in rows:
        writer.writerow(
            [
                row["rank"],
                spreadsheet_text(row["corporation"]),
                f"{row['risk_score'] * 100:.1f}",
                row["band"],
                spreadsheet_text(row["main_reason"]),
                repr(row["risk_score"]),
            ]
        )
    atomic_write_text(path, buffer.getvalue())
    return path


def write_returns(config: Config, returns: dict[str, Any], name: str = DEFAULT_OUTPUT_NAME) -> Path:
    """Write the combined answers as JSON to name in output_model_path, atomically; its path."""
    target = config.output_file(name)
    atomic_write_text(target, json.dumps(returns, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--url", help="base URL of the API (default: the config's api_url)")
    parser.add_argument(
        "--output",
        metavar="NAME",
        default=DEFAULT_OUTPUT_NAME,
        help=f"file name in output_model_path (default {DEFAULT_OUTPUT_NAME})",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the API to start answering (default 0: no waiting)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"how many of the highest-risk clients to list (default {DEFAULT_TOP}, "
        f"at most {MAX_TOP})",
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="score this data file (inside a data folder) instead of the current clients "
        "and the test data",
    )
    parser.add_argument(
        "--csv", metavar="PATH", help="also write the ranked list as CSV to PATH, for a spreadsheet"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.top <= MAX_TOP:
        parser.error(f"--top must be from 1 to {MAX_TOP}")

    def action() -> None:
        config = load_config(args.config)
        config.output_file(args.output)  # a bad name fails before any call
        token = os.environ.get(TOKEN_ENV_VAR) or None
        url = args.url or config.api_url
        dataset = str(Path(args.dataset).resolve()) if args.dataset else None
        if args.wait > 0:
            wait_for_api(url, args.wait)
        title, rows = at_risk(url, token, args.top, dataset)
        print(risk_table(title, rows))
        if args.csv:
            logger.info("wrote %s", write_csv(Path(args.csv), rows))
        returns = call_api(url, config, token, dataset=dataset)
        print(write_returns(config, returns, args.output))

    return run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
