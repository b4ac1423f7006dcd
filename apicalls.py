"""Ask the risk API who is at risk, and save its four course answers as one JSON file.

With no choice of what to show, as the course runs it: prints the highest-risk current
clients as a table (rank, client, risk, band, main reason; of --dataset PATH's rows
instead), optionally writes that list as CSV (--csv PATH), and calls POST /prediction
on testdata.csv (or on --dataset), GET /scoring, /summarystats and /diagnostics at
--url (default: the config's api_url, http://127.0.0.1:8000). The four answers go to
apireturns.txt (or --output) in output_model_path, with /health's answer; a
/diagnostics answer still pending is waited for (bounded), never written. It prints
the system's verdict (severity, headline, next action) before the file's path.

--top N, --changes and --client ID each ask only what they show, and write nothing
but the CSV asked for: the N riskiest clients (with --csv, as a spreadsheet), what
changed since the previous scoring (or --since DATE), one client's risk, reasons and
risk over time. $DRS_API_TOKEN is sent as a bearer token when set. An unreachable API
or an error answer stops it with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from drs import exports
from drs.cli import build_parser, configure_logging, errno_text, run_cli
from drs.clock import readable, utc_now
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
    """Ask the API at base_url its four questions and /health; the answers by endpoint name.

    The dataset for /prediction is config's testdata.csv (or dataset), named relative
    to the config folder as the API expects. A pending /diagnostics answer is asked
    again until it is complete, for diagnostics_wait_s at most. Raises ApiCallError
    (one line) when the API cannot be reached, is too slow, or answers with an error.
    """
    base = base_url.rstrip("/")
    dataset = dataset or os.path.relpath(config.test_data_path, config.root)
    calls = (
        ("health", "GET", "/health", None),
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


def verdict_text(health: dict[str, Any]) -> str:
    """The system's verdict as /health gives it, in one line: severity, headline, action."""
    verdict = health.get("verdict") if isinstance(health, dict) else None
    if not isinstance(verdict, dict):
        return "System: verdict not available (see the API's log)"
    action = f" Next: {verdict['action']}" if verdict.get("action") else ""
    return f"System: {str(verdict.get('severity')).upper()}: {verdict.get('headline')}.{action}"


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
    return title, exports.table_rows(entries)


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


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The ranked rows as CSV for a spreadsheet, atomically; returns the path written."""
    atomic_write_text(path, exports.csv_text(rows))
    return path


def changes_text(answer: dict[str, Any]) -> str:
    """GET /changes as lines for a terminal: the counts, then each list."""
    until = answer.get("until")
    if not until:
        return "No scorings recorded yet: nothing to compare."
    since = answer.get("since")
    counts = answer["counts"]
    head = f"What changed since {readable(since['recorded_at'])}" if since else "The first scoring"
    lines = [
        f"{head} (scores of {readable(until['recorded_at'])}, release {until['release_id']}):",
        f"  {counts['newly_high']} newly high, {counts['left']} left "
        f"({counts['left_high']} of them flagged high), {counts['risers']} rose, "
        f"{counts['fallers']} fell, {counts['new_clients']} new.",
    ]
    width = max(
        [len("client")]
        + [
            len(_cut(printable(entry["corporation"])))
            for name in ("newly_high", "risers", "fallers", "left")
            for entry in answer[name]
        ]
    )

    def name(entry: dict[str, Any]) -> str:
        return f"{_cut(printable(entry['corporation'])):<{width}}"

    sections = (
        (
            "Newly high",
            "newly_high",
            lambda e: (
                f"{e['risk_score']:>4.0%}"
                + (f"  (was {e['before']:.0%})" if e["before"] is not None else "  (new)")
            ),
        ),
        ("Biggest rises", "risers", lambda e: f"{e['before']:>4.0%} -> {e['risk_score']:.0%}"),
        ("Biggest falls", "fallers", lambda e: f"{e['before']:>4.0%} -> {e['risk_score']:.0%}"),
        (
            "Left, with the risk we gave them",
            "left",
            lambda e: f"{e['risk_score']:>4.0%}  {e['band']}",
        ),
    )
    for title, key, shown in sections:
        entries = answer[key]
        lines.append(f"{title}:" if entries else f"{title}: none")
        lines += [f"  {name(entry)}  {shown(entry)}" for entry in entries]
    return "\n".join(lines)


def client_text(answer: dict[str, Any]) -> str:
    """GET /clients/<id> as lines for a terminal: risk, reasons with what-ifs, the trend."""
    lines = [
        f"{printable(answer['corporation'])}: {answer['risk_score']:.0%} risk of leaving, "
        f"{answer['band']}; number {answer['rank']:,} of {answer['total']:,} current clients "
        f"(release {answer['release_id']})."
    ]
    if answer.get("drivers"):
        lines.append("Why:")
        for driver in answer["drivers"]:
            line = f"  - {driver['sentence']}."
            if driver.get("risk_if_typical") is not None:
                line += f" If it were typical, the risk would be {driver['risk_if_typical']:.0%}."
            lines.append(line)
    history = answer.get("history") or []
    if history:
        lines.append("Risk over time:")
        for record in history:
            what = "left" if record["event"] == "left" else record["band"]
            lines.append(
                f"  {readable(record['recorded_at']):<18} {record['risk_score']:>4.0%}  {what}"
            )
    return "\n".join(lines)


def ask_one(
    base_url: str,
    token: str | None,
    path: str,
    params: dict[str, Any] | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
) -> Any:
    """One GET to the API: its JSON answer; ApiCallError in one line when it fails."""
    base = base_url.rstrip("/")
    with _session(token) as session:
        return _ask(session, "GET", base, path, timeout, params=params)


def write_returns(config: Config, returns: dict[str, Any], name: str = DEFAULT_OUTPUT_NAME) -> Path:
    """Write the combined answers as JSON to name in output_model_path, atomically; its path."""
    target = config.output_file(name)
    atomic_write_text(target, json.dumps(returns, indent=2) + "\n")
    return target


def build_arguments() -> argparse.ArgumentParser:
    """The command line: the course's four calls by default, or one question at a time."""
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
        metavar="N",
        help=f"only list the N highest-risk clients (default with no other choice: the "
        f"{DEFAULT_TOP} riskiest, then the four course calls; at most {MAX_TOP})",
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
    parser.add_argument(
        "--changes",
        action="store_true",
        help="only show what changed since the previous scoring: newly high, risers, fallers, "
        "clients who left",
    )
    parser.add_argument(
        "--since", metavar="DATE", help="with --changes: since the scores of DATE (YYYY-MM-DD)"
    )
    parser.add_argument(
        "--client", metavar="ID", help="only show one client: risk, reasons, risk over time"
    )
    return parser


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that do not go together (argparse exits with its usage line)."""
    if args.top is not None and not 1 <= args.top <= MAX_TOP:
        parser.error(f"--top must be from 1 to {MAX_TOP}")
    if args.changes and args.client is not None:
        parser.error("choose one of --changes and --client")
    if (args.changes or args.client is not None) and (args.top or args.dataset or args.csv):
        parser.error("--changes and --client show one thing: leave out --top, --dataset, --csv")
    if args.since and not args.changes:
        parser.error("--since goes with --changes")


def main(argv: list[str] | None = None) -> int:
    parser = build_arguments()
    args = parser.parse_args(argv)
    check_choices(parser, args)

    def action() -> None:
        config = load_config(args.config)
        token = os.environ.get(TOKEN_ENV_VAR) or None
        url = args.url or config.api_url
        if args.wait > 0:
            wait_for_api(url, args.wait)
        if args.changes:
            params = {"since": args.since} if args.since else None
            print(changes_text(ask_one(url, token, "/changes", params)))
            return
        if args.client is not None:
            print(client_text(ask_one(url, token, "/clients", {"id": args.client})))
            return
        only_the_list = args.top is not None
        if not only_the_list:
            config.output_file(args.output)  # a bad name fails before any call
        dataset = str(Path(args.dataset).resolve()) if args.dataset else None
        title, rows = at_risk(url, token, args.top or DEFAULT_TOP, dataset)
        print(risk_table(title, rows))
        if args.csv:
            logger.info("wrote %s", write_csv(Path(args.csv), rows))
        if only_the_list:
            return
        returns = call_api(url, config, token, dataset=dataset)
        print(verdict_text(returns["health"]))
        print(write_returns(config, returns, args.output))

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
