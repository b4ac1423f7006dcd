"""Call the risk API's four endpoints and save their answers as one JSON file.

POST /prediction on testdata.csv, GET /scoring, /summarystats and /diagnostics at
--url (default: the config's api_url, http://127.0.0.1:8000); $DRS_API_TOKEN is sent
as a bearer token when set. The combined answer goes to apireturns.txt (or --output)
in output_model_path; a /diagnostics answer still pending is waited for (bounded),
never written. An unreachable API or an error answer stops it with one line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import common

logger = logging.getLogger(__name__)

TOKEN_ENV_VAR = common.API_TOKEN_ENV_VAR
DEFAULT_OUTPUT_NAME = "apireturns.txt"
# Seconds: a dead address fails fast; a slow answer is bounded too (/diagnostics answers
# within a few seconds by design, /prediction on testdata.csv in well under one).
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
ERROR_CHARS = 300
# Seconds between /health polls while --wait waits for a server to come up.
POLL_S = 0.2
# How long a /diagnostics answer still pending (nothing recorded yet, a refresh under
# way: it times the scripts) is waited for, and how often it is asked again.
DIAGNOSTICS_WAIT_S = 120.0
DIAGNOSTICS_POLL_S = 1.0


class ApiCallError(common.PipelineError):
    pass


def call_api(
    base_url: str,
    config: common.Config,
    token: str | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    diagnostics_wait_s: float = DIAGNOSTICS_WAIT_S,
) -> dict[str, Any]:
    """Ask the API at base_url its four questions; returns the answers by endpoint name.

    The dataset for /prediction is config's testdata.csv, named relative to the config
    folder as the API expects. A pending /diagnostics answer is asked again until it
    is complete, for diagnostics_wait_s at most. Raises ApiCallError (one line) when
    the API cannot be reached, is too slow, or answers with an error.
    """
    import requests

    base = base_url.rstrip("/")
    dataset = os.path.relpath(config.test_data_path, config.root)
    calls = (
        ("prediction", "POST", "/prediction", {"dataset_path": dataset}),
        ("scoring", "GET", "/scoring", None),
        ("summarystats", "GET", "/summarystats", None),
        ("diagnostics", "GET", "/diagnostics", None),
    )
    returns: dict[str, Any] = {"api_url": base, "called_at": common.utc_now()}
    with requests.Session() as session:
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        for name, method, path, body in calls:
            try:
                response = session.request(method, base + path, json=body, timeout=timeout)
            except requests.Timeout:
                raise ApiCallError(
                    f"{method} {base}{path}: no answer within {timeout[1]:g} s"
                ) from None
            except requests.RequestException as error:
                raise ApiCallError(f"cannot reach the API at {base}: {_reason(error)}") from None
            returns[name] = _answer(response, f"{method} {base}{path}")
            logger.info("%s %s%s: HTTP %d", method, base, path, response.status_code)
        deadline = time.monotonic() + diagnostics_wait_s
        while returns["diagnostics"].get("status") != "complete":
            if time.monotonic() + DIAGNOSTICS_POLL_S > deadline:
                raise ApiCallError(
                    f"GET {base}/diagnostics: still pending after {diagnostics_wait_s:g} s "
                    "(the API is timing the scripts); nothing written, try again later"
                )
            time.sleep(DIAGNOSTICS_POLL_S)
            response = session.get(f"{base}/diagnostics", timeout=timeout)
            returns["diagnostics"] = _answer(response, f"GET {base}/diagnostics")
    return returns


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
    return common.errno_text(error) or first_line or type(error).__name__


def write_returns(
    config: common.Config, returns: dict[str, Any], name: str = DEFAULT_OUTPUT_NAME
) -> Path:
    """Write the combined answers as JSON to name in output_model_path, atomically; its path."""
    target = config.output_file(name)
    common.atomic_write_text(target, json.dumps(returns, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__)
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
    args = parser.parse_args(argv)

    def action() -> None:
        config = common.load_config(args.config)
        config.output_file(args.output)  # a bad name fails before any call
        token = os.environ.get(TOKEN_ENV_VAR) or None
        url = args.url or config.api_url
        if args.wait > 0:
            wait_for_api(url, args.wait)
        returns = call_api(url, config, token)
        print(write_returns(config, returns, args.output))

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
