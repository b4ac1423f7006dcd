"""Who may ask: the API's bearer token and the page's signed-in session."""

from __future__ import annotations

import html
import http.client
import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from helpers import (
    TOKEN,
    assert_error,
    gunicorn,
    gunicorn_refusal,
    host_port,
    make_app,
    odd_workspace,
)

from drs.config import API_TOKEN_ENV_VAR, Config
from drs.errors import ConfigError
from drs.web import auth, factory

HOSTILE_TARGETS = [
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    " //evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "//evil.example",
    "///evil.example",
    "https://evil.example/",
    "http:/evil.example",
    "javascript:alert(1)",
    "/\x00/evil.example",
    "/\x7f/evil.example",
    "/\u3000/evil.example",
    "evil.example",
    "",
]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A deployed workspace whose clients include ids a URL path mangles ("lead", "/lead")."""
    return odd_workspace(tmp_path_factory.mktemp("auth") / "ws")


@pytest.fixture(scope="module")
def client(deployed: Config) -> FlaskClient:
    return make_app(deployed).test_client()


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_login_never_redirects_to_another_host(
    deployed: Config, client: FlaskClient, target: str
) -> None:
    open_redirect = client.get("/login", query_string={"next": target})
    assert open_redirect.status_code == 302
    assert open_redirect.headers["Location"] == "/"
    guarded = make_app(deployed, TOKEN).test_client()
    form = guarded.get("/login", query_string={"next": target})
    assert 'name="next" value="/"' in form.get_data(as_text=True)
    signed_in = guarded.post("/login", data={"token": TOKEN, "next": target})
    assert signed_in.headers["Location"] == "/"


@pytest.mark.parametrize(
    "target", ["/", "/?q=ab&n=70", "/client/lead", "/client?id=..%2F..", "/%09/evil.example"]
)
def test_login_goes_back_to_a_page_of_this_site(client: FlaskClient, target: str) -> None:
    assert client.get("/login", query_string={"next": target}).headers["Location"] == target


def test_signing_in_comes_back_to_the_very_client_asked_for(deployed: Config) -> None:
    guarded = make_app(deployed, TOKEN).test_client()
    asked = "/client?id=" + quote("ü/../x", safe="")
    to_login = guarded.get(asked)
    assert to_login.status_code == 302 and "/login?next=" in to_login.headers["Location"]
    form = guarded.get(to_login.headers["Location"]).get_data(as_text=True)
    [target] = re.findall(r'name="next" value="([^"]*)"', form)
    signed_in = guarded.post("/login", data={"token": TOKEN, "next": html.unescape(target)})
    assert signed_in.headers["Location"] == asked
    page = guarded.get(asked)
    assert page.status_code == 200
    assert '<h1 class="client-name">ü/../x</h1>' in page.get_data(as_text=True)


def signed_in(deployed: Config, cookie: str) -> bool:
    guarded = make_app(deployed, TOKEN).test_client()
    guarded.set_cookie(auth.SESSION_COOKIE, cookie)
    return guarded.get("/client/lead").status_code == 200


def session_cookie(
    deployed: Config, token: str, issued: float, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A session cookie of a signed-in manager, signed with token's key at time issued."""
    service = make_app(deployed, token)
    serializer = service.session_interface.get_signing_serializer(service)  # type: ignore[attr-defined]
    with monkeypatch.context() as frozen:
        frozen.setattr("itsdangerous.timed.time.time", lambda: issued)
        return serializer.dumps({auth.SIGNED_IN: True, "_permanent": True})


def test_the_page_session_is_signed_and_expires_on_the_server(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarded = make_app(deployed, TOKEN).test_client()
    response = guarded.post("/login", data={"token": TOKEN, "next": "/"})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Expires=" in cookie
    value = re.match(rf"{auth.SESSION_COOKIE}=([^;]*)", cookie)
    assert value is not None and TOKEN not in value.group(1)
    assert signed_in(deployed, value.group(1))

    now = time.time()
    assert signed_in(deployed, session_cookie(deployed, TOKEN, now - 11.9 * 3600, monkeypatch))
    assert not signed_in(
        deployed, session_cookie(deployed, TOKEN, now - 12 * 3600 - 1, monkeypatch)
    )
    assert not signed_in(deployed, session_cookie(deployed, "other-token", now, monkeypatch))
    forged = value.group(1).rsplit(".", 2)
    forged[1] = session_cookie(deployed, TOKEN, now + 3600, monkeypatch).rsplit(".", 2)[1]
    assert not signed_in(deployed, ".".join(forged)), "the time is signed"
    for junk in ("", ".", "1.", "١٢٣.abc", "9" * 40 + ".x", "é.é", "e30.x.y"):
        assert not signed_in(deployed, junk)


def test_every_worker_accepts_the_cookie_another_signed(deployed: Config) -> None:
    """Two apps (two gunicorn workers, or a restart) with the same token share sessions."""
    first = make_app(deployed, TOKEN).test_client()
    response = first.post("/login", data={"token": TOKEN, "next": "/"})
    value = re.match(rf"{auth.SESSION_COOKIE}=([^;]*)", response.headers["Set-Cookie"])
    assert value is not None
    assert signed_in(deployed, value.group(1))


def test_signing_out_forgets_the_session(deployed: Config) -> None:
    guarded = make_app(deployed, TOKEN).test_client()
    guarded.post("/login", data={"token": TOKEN, "next": "/"})
    assert guarded.get("/client/lead").status_code == 200
    assert guarded.post("/logout").status_code == 302
    assert guarded.get("/client/lead").status_code == 302


BAD_TOKENS = [
    pytest.param("", "set but empty", id="empty"),
    pytest.param("   ", "set but empty", id="spaces"),
    pytest.param("\t\n", "set but empty", id="whitespace"),
    pytest.param("tokén-0123", "printable ASCII", id="non-ascii"),
    pytest.param("tok\udcffen", "printable ASCII", id="not-utf8-byte"),
    pytest.param(f" {TOKEN}", "printable ASCII", id="leading-space"),
    pytest.param(f"{TOKEN}\x7f", "printable ASCII", id="control-character"),
]


@pytest.mark.parametrize(("token", "fragment"), BAD_TOKENS)
def test_a_bad_token_stops_the_app_from_being_built(
    deployed: Config, monkeypatch: pytest.MonkeyPatch, token: str, fragment: str
) -> None:
    """An empty token would leave the API open; a non-ASCII one could never match."""
    monkeypatch.setenv(API_TOKEN_ENV_VAR, token)
    with pytest.raises(ConfigError, match=fragment) as refused:
        factory.create_app(deployed)
    assert token.strip() == "" or token.strip() not in str(refused.value)  # not echoed


@pytest.mark.parametrize(
    ("token", "fragment"), [BAD_TOKENS[0], BAD_TOKENS[1], BAD_TOKENS[3], BAD_TOKENS[4]]
)
def test_gunicorn_refuses_to_start_with_a_bad_token(
    tmp_path: Path, deployed: Config, token: str, fragment: str
) -> None:
    """The operator learns it at start, from the log, not from 401s or an open API."""
    log = tmp_path / "gunicorn.log"
    status = gunicorn_refusal(deployed, log, **{API_TOKEN_ENV_VAR: token})
    text = log.read_bytes().decode("utf-8", "replace")
    assert status is not None, f"gunicorn served with a bad token: {text}"
    assert status != 0
    assert f"${API_TOKEN_ENV_VAR}" in text and fragment in text


NON_ASCII_AUTHORIZATIONS = [
    b"Bearer \xff\xfe",
    b"Bearer \xc3\xa9",
    b"Bearer " + TOKEN.encode() + b"\xc3\xa9",
    b"Bearer " + TOKEN.encode() + b"\xa0",  # a latin-1 no-break space
    b"Bearer " + TOKEN.encode() + b"\x85",  # a latin-1 next-line
    b"Bearer \xa0" + TOKEN.encode(),
    b"B\xe9arer " + TOKEN.encode(),
    b"\xff\xfe " + TOKEN.encode(),
]


@pytest.mark.parametrize("raw", NON_ASCII_AUTHORIZATIONS)
def test_a_non_ascii_authorization_is_401_in_the_test_client(deployed: Config, raw: bytes) -> None:
    """Headers come as latin-1 text from a WSGI server: each byte one character."""
    client = make_app(deployed, TOKEN).test_client()
    response = client.get("/scoring", headers={"Authorization": raw.decode("latin-1")})
    assert_error(response, 401, "Authorization: Bearer")
    assert client.get("/scoring", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("text", ["Bearer €", f"Bearer {TOKEN}\u2028", "Bearer \udcff"])
def test_authorization_beyond_latin1_is_401_not_500(deployed: Config, text: str) -> None:
    """Not what a conforming server hands over, but the test client (and others) can."""
    response = (
        make_app(deployed, TOKEN).test_client().get("/scoring", headers={"Authorization": text})
    )
    assert_error(response, 401, "Authorization: Bearer")


def raw_get(url: str, path: str, authorization: bytes) -> tuple[int, bytes]:
    """GET path with the Authorization header sent as the bytes given; status and body."""
    connection = http.client.HTTPConnection(*host_port(url), timeout=60)
    try:
        connection.putrequest("GET", path)
        connection.putheader("Authorization", authorization)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_non_ascii_authorization_bytes_through_gunicorn_are_401(
    tmp_path: Path, deployed: Config
) -> None:
    """Raw bytes as a client sends them, decoded by gunicorn itself."""
    env = {API_TOKEN_ENV_VAR: TOKEN}
    with gunicorn(deployed, tmp_path / "gunicorn.log", **env) as url:
        for raw in NON_ASCII_AUTHORIZATIONS:
            status, body = raw_get(url, "/scoring", raw)
            assert status == 401, (raw, body)
            assert set(json.loads(body)) == {"error"}
            assert raw_get(url, "/health", raw)[0] == 200  # /health needs no token
        status, body = raw_get(url, "/scoring", f"Bearer {TOKEN}".encode())
        assert status == 200, body
        assert json.loads(body)["rows"] > 0
