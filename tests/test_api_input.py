"""Whatever a client sends the API: paths, bodies, sizes and slow clients get a clear answer."""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from helpers import (
    BODIES,
    RECORD,
    TEST_DATASET,
    TOKEN,
    assert_error,
    deploy_workspace,
    finish_background_work,
    gunicorn,
    host_port,
    make_app,
    post,
    stub_slow_diagnostics,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drs import clients
from drs.config import Config
from drs.web import api, factory, shared

LIMIT = 20_000  # body size limit (bytes) for the tests of chunked bodies


CSV_HEADER = b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"


GOOD_ROW = b"abcd,10,120,5,0\n"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """One small deployed workspace for the module."""
    return deploy_workspace(tmp_path_factory.mktemp("hostile") / "workspace", rows=300)


@pytest.fixture(scope="module")
def client(deployed: Config) -> FlaskClient:
    return make_app(deployed).test_client()


def dataset_copy(config: Config, name: str, content: bytes | None = None) -> str:
    """Write content (default: the test data) as name in the test data folder; its dataset_path."""
    target = config.test_data_folder / name
    target.write_bytes(config.test_data_path.read_bytes() if content is None else content)
    return os.path.relpath(target, config.root)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("testdata/" + "a" * 256 + ".csv", id="name-260-chars"),
        pytest.param("testdata/" + "a" * 300, id="name-300-chars"),
        pytest.param("testdata/" + "é" * 200 + ".csv", id="name-404-utf8-bytes"),
        pytest.param("testdata/" + "a" * 256 + "/testdata.csv", id="long-folder-name"),
        pytest.param("testdata/" + "a" * 5_000, id="name-5000-chars"),
        pytest.param("testdata/" + ("b" * 99 + "/") * 50 + "x.csv", id="path-5014-chars"),
    ],
)
def test_a_path_longer_than_the_file_system_allows_is_400(client: FlaskClient, raw: str) -> None:
    """The file system refuses the name (ENAMETOOLONG): the client's mistake, said briefly."""
    response = post(client, {"dataset_path": raw})
    assert_error(response, 400, "not a usable path")
    assert len(response.get_json()["error"]) < 2 * shared.SHOWN_PATH_CHARS  # shown cut short


@pytest.mark.parametrize(
    "raw",
    [
        "testdata/" + "./" * 3_000 + "testdata.csv",
        "testdata/" + "../testdata/" * 400 + "testdata.csv",
        "testdata/" + "x/../" * 1_000 + "testdata.csv",
    ],
    ids=["dots", "up-and-down", "missing-folders"],
)
def test_a_long_path_to_a_real_dataset_is_still_served(client: FlaskClient, raw: str) -> None:
    """Only what the file system refuses is refused, not a long spelling of a good path."""
    assert len(raw) > 4_096
    response = post(client, {"dataset_path": raw})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_file_deleted_between_the_check_and_the_read_is_404(
    client: FlaskClient, deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleanup job can delete the file between resolve_dataset's check and the read."""
    raw = dataset_copy(deployed, "vanishing.csv")
    checked = api.resolve_dataset

    def check_then_delete(config: Config, given: str) -> Path:
        path = checked(config, given)
        path.unlink()  # what a cleanup job could do at that very moment
        return path

    monkeypatch.setattr(api, "resolve_dataset", check_then_delete)
    assert_error(post(client, {"dataset_path": raw}), 404, "no such file")


def test_a_folder_swapped_in_after_the_check_is_400(
    client: FlaskClient, deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder is 404 at the check; one put there after the check cannot be read: 400."""
    folder = deployed.test_data_folder / "swapped.csv"
    folder.mkdir()
    raw = os.path.relpath(folder, deployed.root)
    assert_error(post(client, {"dataset_path": raw}), 404, "no such file")  # as checked

    monkeypatch.setattr(api, "resolve_dataset", lambda config, given: folder)
    assert_error(post(client, {"dataset_path": raw}), 400, "cannot read it")


@pytest.mark.parametrize(
    ("error", "status", "fragment"),
    [
        (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)), 404, "no such file"),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), 400, "cannot read it"),
        (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), 400, "cannot read it"),
        (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), 400, "cannot read it"),
    ],
    ids=["deleted", "permission", "folder", "not-a-folder"],
)
def test_a_dataset_the_server_cannot_read_is_a_client_error(
    client: FlaskClient,
    deployed: Config,
    monkeypatch: pytest.MonkeyPatch,
    error: OSError,
    status: int,
    fragment: str,
) -> None:
    """Every OSError of the read is an answer naming the problem, never a 500."""
    raw = dataset_copy(deployed, "unreadable.csv")

    def read_dataset(path: Path) -> Any:
        raise type(error)(error.errno, error.strerror, str(path))

    monkeypatch.setattr(clients, "read_dataset", read_dataset)
    response = post(client, {"dataset_path": raw})
    assert_error(response, status, fragment)
    assert str(deployed.root) not in response.get_json()["error"]  # no server paths shown


@pytest.mark.parametrize(
    ("content", "line"),
    [
        pytest.param(CSV_HEADER + b"ab\xffcd,10,120,5,0\n", 2, id="alone"),
        pytest.param(CSV_HEADER + b"Soci\xe9t\xe9,-10,120,5,0\n", 2, id="negative-number"),
        pytest.param(CSV_HEADER + b"ab\xffcd,10,120,5,0,7\n", 2, id="extra-field"),
        pytest.param(CSV_HEADER + b"ab\xffcd,10,120\n", 2, id="missing-fields"),
        pytest.param(CSV_HEADER + b"ab\xffcd,10,120,5,2\n", 2, id="target-2"),
        pytest.param(
            CSV_HEADER + GOOD_ROW * 2 + b"ab\xffcd,-1,120,5,2\n" + b"efgh,-1,1,1,0\n",
            4,
            id="later-line-negative-and-target-2",
        ),
        pytest.param(
            CSV_HEADER + GOOD_ROW + b"ab\xffcd,10,120,5,0\n" + b"efgh,1,2\n",
            3,
            id="ragged-row-after",
        ),
        pytest.param(
            (CSV_HEADER + GOOD_ROW + b"ab\xffcd,-3,120,5,0\n").replace(b"\n", b"\r\n"),
            3,
            id="crlf-negative-number",
        ),
        pytest.param(
            CSV_HEADER.replace(b"corporation", b"corpor\xe9tion,x") + b"a,b,1,2,3,0\n",
            1,
            id="header",
        ),
    ],
)
def test_a_dataset_that_is_not_utf8_is_400_naming_the_line(
    client: FlaskClient, deployed: Config, content: bytes, line: int
) -> None:
    """The scan that finds the line of Arrow's error must survive a byte that is not UTF-8."""
    name = f"latin1-{hashlib.sha256(content).hexdigest()[:12]}.csv"
    raw = dataset_copy(deployed, name, content)
    response = post(client, {"dataset_path": raw})
    assert_error(response, 400, f"line {line}: not UTF-8 text")
    assert name in response.get_json()["error"]


ENDPOINTS = ["/health", "/prediction", "/scoring", "/summarystats", "/diagnostics"]


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])


PATH_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="?#\r\n"), max_size=20
)


PERCENT_ENCODED = st.binary(max_size=20).map(lambda raw: quote_from_bytes(raw, safe="=&/"))


PATHS = (
    st.sampled_from(ENDPOINTS)
    | st.sampled_from(ENDPOINTS).map(lambda path: path + "/")
    | st.sampled_from(ENDPOINTS).map(lambda path: "/" + path)
    | st.sampled_from(ENDPOINTS).map(lambda path: path.upper())
    | st.sampled_from(["/", "/%ff", "/%00", "/..", "/prediction/../scoring", "/static/x"])
    | PATH_TEXT.map(lambda text: "/" + text)
    | PERCENT_ENCODED.map(lambda text: "/" + text)
)


QUERIES = st.none() | st.text(max_size=30) | PERCENT_ENCODED


# What a WSGI server hands over: header bytes as latin-1 text, no line breaks.
HEADER_BYTES = st.binary(max_size=40).map(
    lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")
)


BEYOND_LATIN1 = st.text(st.characters(blacklist_characters="\r\n"), max_size=20)


AUTHORIZATIONS = (
    st.sampled_from(
        [
            f"Bearer {TOKEN}",
            f"bearer {TOKEN}",
            f"Bearer {TOKEN}\xa0",
            f"Bearer {TOKEN}\x85",
            f"Bearer {TOKEN}é",
            "Bearer \xff\xfe",
            "Bearer",
            "Bearer ",
            f"Basic {TOKEN}",
            "",
        ]
    )
    | HEADER_BYTES
    | HEADER_BYTES.map(lambda text: f"Bearer {text}")
    # Beyond latin-1: not what a conforming server hands over, but a test client can.
    | BEYOND_LATIN1
    | BEYOND_LATIN1.map(lambda text: f"Bearer {text}")
)


CONTENT_TYPES = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "application/vnd.api+json",
            "application/jsonx",
            "text/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "",
            ";;;",
            "application/json; charset=\xff",
        ]
    )
    | HEADER_BYTES
)


OTHER_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Accept",
            "Accept-Encoding",
            "Content-Encoding",
            "Cookie",
            "Expect",
            "If-None-Match",
            "Origin",
            "Range",
            "Transfer-Encoding",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
        ]
    ),
    st.sampled_from(["chunked", "gzip", "100-continue", "bytes=0-1", "*"]) | HEADER_BYTES,
    max_size=3,
)


REQUEST_BODIES = (
    st.none()
    | st.binary(max_size=200)
    | BODIES.map(lambda body: json.dumps(body).encode())
    | st.just(json.dumps({"dataset_path": TEST_DATASET, "top": 2}).encode())
)


@pytest.fixture
def fuzz_clients(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[bool, FlaskClient]]:
    """Test clients of an open and of a guarded app, with the slow diagnostics stubbed."""
    stub_slow_diagnostics(monkeypatch)
    apps = {False: make_app(deployed), True: make_app(deployed, TOKEN)}
    yield {guarded: built.test_client() for guarded, built in apps.items()}
    for built in apps.values():
        finish_background_work(built, 30)


def assert_json_error_or_success(response: Any, method: str) -> None:
    """No 5xx; every 4xx is JSON {"error": "..."} (its body empty for HEAD)."""
    status = response.status_code
    text = response.get_data(as_text=True)
    assert status < 500, text
    if 300 <= status < 400:
        assert response.headers.get("Location"), text
    if status < 400:
        return
    if response.mimetype == "text/html" and "Content-Security-Policy" in response.headers:
        return  # the page's own error page ("/?n=x"), for people (tests/test_page_server.py)
    assert response.mimetype == "application/json", text
    if method == "HEAD":
        assert response.get_data() == b""
        return
    body = response.get_json()
    assert set(body) == {"error"}, text
    assert isinstance(body["error"], str) and body["error"].strip()
    assert "Traceback" not in body["error"]


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(
    guarded=st.booleans(),
    method=METHODS,
    path=PATHS,
    query=QUERIES,
    authorization=st.none() | AUTHORIZATIONS,
    content_type=st.none() | CONTENT_TYPES,
    other=OTHER_HEADERS,
    body=REQUEST_BODIES,
)
def test_no_request_to_any_endpoint_makes_a_server_error(
    fuzz_clients: dict[bool, FlaskClient],
    guarded: bool,
    method: str,
    path: str,
    query: str | None,
    authorization: str | None,
    content_type: str | None,
    other: dict[str, str],
    body: bytes | None,
) -> None:
    """Whatever a client sends, the answer is never a 500, and every error is JSON."""
    headers = dict(other)
    if authorization is not None:
        headers["Authorization"] = authorization
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = fuzz_clients[guarded].open(
        path, method=method, query_string=query, headers=headers, data=body
    )
    assert_json_error_or_success(response, method)


def padded_body(size: int) -> bytes:
    """A valid /prediction body of exactly size bytes (one record, then spaces)."""
    head = json.dumps({"records": [RECORD]}).encode()
    assert size >= len(head)
    return head + b" " * (size - len(head))


def pieces(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """data in pieces: requests sends a generator body chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# (body size, status): just under, at, one byte over, a chunk over, far over the limit.
SIZES = [(LIMIT - 1, 200), (LIMIT, 200), (LIMIT + 1, 413), (LIMIT + 4096, 413), (100 * LIMIT, 413)]


SIZE_IDS = ["just-under", "at-the-limit", "one-byte-over", "a-chunk-over", "far-over"]


@pytest.fixture(scope="module")
def limited_app(deployed: Config) -> Flask:
    app = make_app(deployed)
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    return app


@pytest.mark.parametrize(("size", "status"), SIZES, ids=SIZE_IDS)
def test_chunked_body_over_the_limit_is_413_in_the_test_client(
    limited_app: Flask, size: int, status: int
) -> None:
    """As a server that terminates the input (gunicorn, werkzeug) hands a chunked body over."""
    response = limited_app.test_client().post(
        "/prediction",
        input_stream=io.BytesIO(padded_body(size)),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},  # Content-Length is then ignored
        environ_overrides={"wsgi.input_terminated": True},
    )
    if status == 200:
        assert response.status_code == 200, response.get_data(as_text=True)
    else:
        assert_error(response, 413, f"over the limit of {LIMIT} bytes")


@pytest.mark.parametrize(("size", "status"), SIZES, ids=SIZE_IDS)
def test_bodies_around_the_limit_through_the_development_server(
    limited_app: Flask, size: int, status: int
) -> None:
    """werkzeug's own server (app.py, fullprocess.py's temporary API): chunked and not.

    Reading one byte past a body with Content-Length there waits for the client's next
    request: a body of exactly the limit must not hang.
    """
    with factory.serve_on_loopback(limited_app) as url:
        data = padded_body(size)
        json_type = {"Content-Type": "application/json"}
        for body in (pieces(data), data):
            response = requests.post(f"{url}/prediction", data=body, headers=json_type, timeout=10)
            assert response.status_code == status, response.text


def test_chunked_bodies_around_the_limit_through_gunicorn(tmp_path: Path, deployed: Config) -> None:
    """The production server: over the limit is 413, and the client gets to read it."""
    env = {factory.MAX_BODY_ENV_VAR: str(LIMIT)}
    json_type = {"Content-Type": "application/json"}
    with gunicorn(deployed, tmp_path / "gunicorn.log", **env) as url:
        # 5 MiB: far past the 64 KiB gunicorn drains before it closes the connection.
        for size, status in [*SIZES, (5 << 20, 413)]:
            data = padded_body(size)
            response = requests.post(
                f"{url}/prediction", data=pieces(data), headers=json_type, timeout=30
            )
            assert response.status_code == status, (size, response.text)
            if status == 413:
                assert response.json() == {"error": f"request body over the limit of {LIMIT} bytes"}
        exact = requests.post(
            f"{url}/prediction", data=padded_body(LIMIT), headers=json_type, timeout=10
        )
        assert exact.status_code == 200  # with Content-Length, exactly the limit


def test_a_body_shorter_than_its_content_length_is_400_through_gunicorn(
    tmp_path: Path, deployed: Config
) -> None:
    """A client that stops sending early (here it half-closes): what came is valid JSON,
    yet not the body announced, so it is refused rather than answered."""
    request = (
        b"POST /prediction HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + padded_body(200)
    )
    with (
        gunicorn(deployed, tmp_path / "gunicorn.log") as url,
        socket.create_connection(host_port(url), timeout=10) as connection,
    ):
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 400
        assert json.loads(response.read()) == {
            "error": "body ended after 200 of the 1000 bytes of its Content-Length"
        }


SLOW_REQUEST = (
    b"POST /prediction HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    b'{"records": ['
)


def test_slow_clients_do_not_stall_the_threaded_workers(tmp_path: Path, deployed: Config) -> None:
    """Four clients stuck mid-body hold four of sixteen threads, not both workers."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(deployed, log, workers=2, worker_class="gthread", threads=8) as url:
        slow: list[socket.socket] = []
        try:
            for _ in range(4):
                connection = socket.create_connection(host_port(url), timeout=5)
                slow.append(connection)
                connection.sendall(SLOW_REQUEST)
            time.sleep(0.5)  # the workers have taken the slow requests by now
            for _ in range(4):
                # No timing: with the slow clients holding every sync worker, /health
                # would wait for gunicorn's 30 s timeout to free one; the threads answer.
                response = requests.get(f"{url}/health", timeout=20)
                assert response.status_code == 200
            for connection in slow:  # still held, not answered: they were not timed out
                connection.setblocking(False)
                with pytest.raises(BlockingIOError):
                    connection.recv(1)
            answer = requests.post(f"{url}/prediction", json={"records": [RECORD]}, timeout=20)
            assert answer.status_code == 200
        finally:
            for connection in slow:
                connection.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"corporation": "\\ud800", "lastmonth_activity": 10, '
        b'"lastyear_activity": 120, "number_of_employees": 5}], "top": 1}',
        b'{"records": [{"corporation": "x\\udfff", "lastmonth_activity": 10, '
        b'"lastyear_activity": 120, "number_of_employees": 5}]}',
        b'{"\\ud800records": []}',
        b'{"dataset_path": "testdata/\\udc80.csv"}',
    ],
)
def test_a_lone_surrogate_anywhere_in_the_body_is_400(client: FlaskClient, body: bytes) -> None:
    response = client.post("/prediction", data=body, content_type="application/json")
    assert_error(response, 400, "surrogate")


def test_a_surrogate_pair_is_one_character_and_served(client: FlaskClient) -> None:
    body = (
        b'{"records": [{"corporation": "\\ud83d\\ude00", "lastmonth_activity": 10, '
        b'"lastyear_activity": 120, "number_of_employees": 5}], "top": 1}'
    )
    response = client.post("/prediction", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["top"][0]["corporation"] == "\N{GRINNING FACE}"
