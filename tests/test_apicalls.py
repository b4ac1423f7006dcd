"""apicalls.py against a live API on loopback, and against nothing at all."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import (
    STUB_PACKAGES,
    STUB_TIMINGS,
    TOKEN,
    assert_one_line_failure,
    deploy_workspace,
    finish_background_work,
    make_app,
    make_workspace,
    run_script,
)
from helpers import stub_slow_diagnostics as stub_slow
from werkzeug.serving import make_server

import apicalls
import ingestion
import scoring
import training
from drs import releases
from drs.cli import describe_error
from drs.config import API_TOKEN_ENV_VAR, FEATURES, Config, load_config
from drs.datarules import read_dataset
from drs.web.factory import serve_on_loopback

PARTS = ("prediction", "scoring", "summarystats", "diagnostics")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return deploy_workspace(tmp_path_factory.mktemp("apicalls") / "workspace", rows=300)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def apicalls_script(
    config: Config, *args: str, token: str = "", process: bool = False
) -> subprocess.CompletedProcess[str]:
    """apicalls.py run as a user runs it; in a process of its own when a server runs here."""
    return run_script(
        "apicalls.py",
        "--config",
        str(config.path),
        *args,
        cwd=config.root.parent,
        env={API_TOKEN_ENV_VAR: token},
        timeout=60,
        process=process,
    )


def test_writes_the_four_answers(deployed: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_slow(monkeypatch)
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None
    with serve_on_loopback(make_app(deployed)) as url:
        result = apicalls_script(deployed, "--url", url)
    assert result.returncode == 0, result.stderr
    target = deployed.model_folder / apicalls.DEFAULT_OUTPUT_NAME
    *_, said, written = result.stdout.splitlines()
    assert written == str(target)
    returns = json.loads(target.read_text())
    verdict = returns["health"]["verdict"]
    assert verdict["release_id"] == release.id
    assert said == f"System: {verdict['severity'].upper()}: {verdict['headline']}." + (
        f" Next: {verdict['action']}" if verdict["action"] else ""
    )
    assert set(PARTS) <= set(returns)
    assert returns["api_url"] == url
    rows = len(read_dataset(deployed.test_data_path))
    assert len(returns["prediction"]["predictions"]) == rows
    assert len(returns["prediction"]["risk_scores"]) == rows
    assert returns["scoring"]["release_id"] == release.id
    assert set(FEATURES) <= set(returns["summarystats"]["summary"])
    diagnostics = returns["diagnostics"]
    assert set(diagnostics["missing_data"]) >= set(FEATURES)
    assert diagnostics["status"] == "complete", "a pending answer is waited for, never written"
    assert diagnostics["execution_time"] == STUB_TIMINGS
    assert diagnostics["outdated_packages"] == STUB_PACKAGES


def test_diagnostics_still_pending_after_the_wait_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = threading.Event()
    stub_slow(monkeypatch, timings=lambda: release.wait(30) and {})
    api = make_app(config)
    try:
        with serve_on_loopback(api) as url, pytest.raises(apicalls.ApiCallError) as raised:
            apicalls.call_api(url, config, diagnostics_wait_s=1.5)
    finally:
        release.set()
        finish_background_work(api, 30)
    assert "still pending after 1.5 s" in str(raised.value)
    assert not (config.model_folder / apicalls.DEFAULT_OUTPUT_NAME).exists()


def test_functions_for_fullprocess_with_a_token(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_slow(monkeypatch)
    with serve_on_loopback(make_app(deployed, TOKEN)) as url:
        returns = apicalls.call_api(url + "/", deployed, TOKEN)
        with pytest.raises(
            apicalls.ApiCallError, match=r"POST .*/prediction: HTTP 401: missing or"
        ):
            apicalls.call_api(url, deployed, "wrong-token")
    path = apicalls.write_returns(deployed, returns, "apireturns2.txt")
    assert path == deployed.model_folder / "apireturns2.txt"
    assert json.loads(path.read_text())["scoring"] == returns["scoring"]
    assert not list(deployed.model_folder.glob(".apireturns2.txt.*"))  # no temporary left


def test_token_from_the_environment(deployed: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_slow(monkeypatch)
    with serve_on_loopback(make_app(deployed, TOKEN)) as url:
        sent = apicalls_script(deployed, "--url", url, "--output", "withtoken.txt", token=TOKEN)
        missing = apicalls_script(deployed, "--url", url, "--output", "notoken.txt")
    assert sent.returncode == 0, sent.stderr
    assert (deployed.model_folder / "withtoken.txt").exists()
    assert missing.returncode == 1
    assert "HTTP 401" in missing.stderr
    assert not (deployed.model_folder / "notoken.txt").exists()


def test_closed_port_fails_fast_with_one_line(deployed: Config) -> None:
    port = closed_port()
    result = apicalls_script(deployed, "--url", f"http://127.0.0.1:{port}")
    assert_one_line_failure(
        result, f"cannot reach the API at http://127.0.0.1:{port}: Connection refused"
    )


def test_default_url_is_the_configs_api_url(tmp_path: Path) -> None:
    port = closed_port()
    path = make_workspace(tmp_path / "workspace", rows=60, api_url=f"http://127.0.0.1:{port}")
    result = apicalls_script(load_config(path))
    assert_one_line_failure(result, f"cannot reach the API at http://127.0.0.1:{port}")


def test_error_answer_is_a_one_line_failure(config: Config) -> None:
    with serve_on_loopback(make_app(config)) as url:  # nothing deployed in this workspace
        result = apicalls_script(config, "--url", url, process=True)
    assert_one_line_failure(result, f"GET {url}/clients: HTTP 503: no model deployed")


def test_bad_output_name_is_refused_before_calling(deployed: Config) -> None:
    result = apicalls_script(deployed, "--url", "http://127.0.0.1:9", "--output", "../x.txt")
    assert_one_line_failure(result, "expected a plain file name")


def test_silent_server_times_out(deployed: Config) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections in the backlog, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(apicalls.ApiCallError, match=r"no answer within 0\.2 s"):
            apicalls.call_api(url, deployed, timeout=(1.0, 0.2))


def test_an_api_that_stops_answering_while_diagnostics_are_pending_fails_in_one_line(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The polls of a pending /diagnostics fail as the first calls do: ApiCallError."""
    stub = Flask("stub")
    polls: list[str] = []

    @stub.route("/<path:path>", methods=["GET", "POST"])
    def answer(path: str) -> dict[str, Any]:
        if path != "diagnostics":
            return {"answered": path}
        polls.append(path)
        if len(polls) > 1:
            stopped.wait(60)  # no answer until the client has given up
        return {"status": "pending"}

    stopped = threading.Event()
    monkeypatch.setattr(apicalls, "DIAGNOSTICS_POLL_S", 0.01)
    timeout = r"/diagnostics: no answer within 3 s"
    try:
        with serve_on_loopback(stub) as url, pytest.raises(apicalls.ApiCallError, match=timeout):
            apicalls.call_api(url, deployed, timeout=(5.0, 3.0), diagnostics_wait_s=30)
    finally:
        stopped.set()
    assert len(polls) == 2


def test_wait_gives_up_on_a_closed_port_with_one_line(deployed: Config) -> None:
    port = closed_port()
    result = apicalls_script(deployed, "--url", f"http://127.0.0.1:{port}", "--wait", "0.6")
    assert_one_line_failure(
        result, f"no answer from http://127.0.0.1:{port}/health within 0.6 s: Connection refused"
    )


def test_wait_polls_until_a_late_server_answers(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_slow(monkeypatch)
    late = socket.socket()
    late.bind(("127.0.0.1", 0))  # the port is reserved; connections are refused until listen()
    url = f"http://127.0.0.1:{late.getsockname()[1]}"
    server = make_server("127.0.0.1", 0, make_app(deployed), threaded=True, fd=late.fileno())
    opening = threading.Timer(0.5, lambda: (late.listen(), server.serve_forever()))
    polls: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(apicalls.time, "sleep", lambda s: (polls.append(s), real_sleep(s)))
    opening.start()
    try:
        apicalls.wait_for_api(url, 20)
        returns = apicalls.call_api(url, deployed)
    finally:
        server.shutdown()
        opening.join(30)
        late.close()
    assert polls, "the first poll found nothing listening"
    assert returns["scoring"]["rows"] == len(read_dataset(deployed.test_data_path))


def test_prints_the_highest_risk_clients_and_writes_them_as_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(make_workspace(tmp_path / "workspace", 400))
    (config.input_folder / "odd.csv").write_text(
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        "=HYPERLINK(1),0,0,0,0\n+sum,0,0,1,0\n-x,0,0,2,0\n@me,0,0,3,0\n"
    )
    for step in (ingestion, training, scoring, releases):
        step.run(config)
    stub_slow(monkeypatch)
    csv_path = tmp_path / "out" / "calls.csv"
    csv_path.parent.mkdir()
    with serve_on_loopback(make_app(config)) as url:
        result = apicalls_script(config, "--url", url, "--top", "7", "--csv", str(csv_path))
        ranked = make_app(config).test_client().get("/clients?top=7").get_json()["clients"]
    assert result.returncode == 0, result.stderr
    title, header, *rows = result.stdout.splitlines()
    assert title.startswith("Highest-risk current clients: 7 of ")
    assert header.split() == ["rank", "client", "risk", "band", "main", "reason"]
    assert len(rows) == 7
    for line, entry in zip(rows, ranked, strict=True):
        assert line.split()[:4] == [
            str(entry["rank"]),
            entry["corporation"],
            f"{entry['risk_score']:.0%}",
            entry["band"],
        ]
        assert line.endswith(entry["drivers"][0]["sentence"])
    assert not (config.model_folder / apicalls.DEFAULT_OUTPUT_NAME).exists(), "--top only lists"
    with open(csv_path, newline="") as handle:
        parsed = list(csv.DictReader(handle))
    assert [int(row["rank"]) for row in parsed] == [entry["rank"] for entry in ranked]
    for row, entry in zip(parsed, ranked, strict=True):
        name = entry["corporation"]
        safe = f"'{name}" if name[0] in "=+-@" else name
        assert row["corporation"] == safe, "a cell a spreadsheet would run stays text"
        assert float(row["risk_score"]) == entry["risk_score"]
        assert row["main_reason"] == entry["drivers"][0]["sentence"]
    assert {"'=HYPERLINK(1)", "'+sum", "'-x", "'@me"} <= {row["corporation"] for row in parsed}


def test_the_table_escapes_control_characters_and_cuts_long_ids() -> None:
    rows = [
        {"rank": 1, "corporation": "\x1b[2J\x1b[31mred", "risk_score": 0.9, "band": "high"},
        {"rank": 2, "corporation": "two\nlines", "risk_score": 0.8, "band": "high"},
        {"rank": 3, "corporation": "x" * 3_000, "risk_score": 0.7, "band": "high"},
    ]
    rows = [{**row, "main_reason": "few employees"} for row in rows]
    title, header, *lines = apicalls.risk_table("Clients\x07", rows).splitlines()
    assert title == "Clients\\x07"
    assert lines[0].split()[1] == "\\x1b[2J\\x1b[31mred"
    assert lines[1].split()[1] == "two\\nlines"
    assert lines[2].split()[1] == "x" * (apicalls.ID_WIDTH - 1) + "…"
    columns = {header.index("main reason"), *(line.index("few employees") for line in lines)}
    assert len(columns) == 1, "the reasons line up"
    assert not any(char in "".join(lines) for char in "\x1b\x07")


def test_a_csv_that_cannot_be_written_is_named_as_asked() -> None:
    """Not after the temporary file it would have been written to first."""
    target = Path("/proc/calls.csv")  # a folder where no file can be made, even by root
    with pytest.raises(OSError) as raised:
        apicalls.write_csv(target, [])
    assert describe_error(raised.value).startswith(f"{target}: ")


def test_dataset_scores_a_chosen_file_instead(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_slow(monkeypatch)
    dataset = deployed.root / "sourcedata" / "dataset3.csv"
    chosen = deployed.input_folder / "chosen.csv"
    chosen.write_bytes(dataset.read_bytes())
    try:
        with serve_on_loopback(make_app(deployed)) as url:
            result = apicalls_script(deployed, "--url", url, "--dataset", str(chosen))
    finally:
        chosen.unlink()
    assert result.returncode == 0, result.stderr
    title, _, *rows, _, _ = result.stdout.splitlines()
    assert title.startswith(f"Highest-risk rows of {chosen}: {apicalls.DEFAULT_TOP} of ")
    assert len(rows) == apicalls.DEFAULT_TOP
    returns = json.loads((deployed.model_folder / apicalls.DEFAULT_OUTPUT_NAME).read_text())
    assert len(returns["prediction"]["predictions"]) == len(read_dataset(dataset))


@pytest.mark.parametrize("top", ["0", "1001", "many"])
def test_a_bad_top_is_refused(deployed: Config, top: str) -> None:
    result = apicalls_script(deployed, "--top", top)
    assert result.returncode == 2
    assert "--top" in result.stderr
