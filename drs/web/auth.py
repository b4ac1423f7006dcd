"""Who may ask: a bearer token for the JSON API, a signed session cookie for the page.

Both rest on $DRS_API_TOKEN; unset, the service is open. The page asks for the token
once and keeps the manager signed in with Flask's session: a cookie (HttpOnly,
SameSite=Strict) signed with a key derived from the token, so every gunicorn worker and
every restart accepts it, a new token voids every cookie, and no cookie holds the token.
Flask checks the signature's age on every request, so a copied cookie stops working
SESSION_HOURS after the manager signed in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta
from urllib.parse import quote, urljoin, urlsplit

from flask import Blueprint, Flask, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from drs.config import API_TOKEN_ENV_VAR
from drs.errors import ConfigError
from drs.web.shared import ApiError, secure, state

bp = Blueprint("auth", __name__)
bp.after_request(secure)

SESSION_COOKIE = "risk_session"
SESSION_HOURS = 12  # a working day: then the token is asked again
SIGNED_IN = "signed_in"
# Requests from a browser: signing in leads back to a page, errors are pages too.
PAGE_BLUEPRINTS = ("pages", "auth")
OPEN_ENDPOINTS = {"api.health", "auth.login", "static"}


def api_token() -> str | None:
    """$DRS_API_TOKEN, or None when unset; set but empty or not ASCII, the app refuses to start.

    An empty token would leave the API open while its operator believes it guarded.
    """
    token = os.environ.get(API_TOKEN_ENV_VAR)
    if token is None:
        return None
    if not token.strip():
        raise ConfigError(
            f"${API_TOKEN_ENV_VAR} is set but empty; give it a token, or unset it "
            "to leave the API open"
        )
    if not token.isascii() or not token.isprintable() or token != token.strip():
        raise ConfigError(f"${API_TOKEN_ENV_VAR} must be printable ASCII without spaces around it")
    return token


def session_key(token: str) -> bytes:
    """The key that signs the page's cookies: derived from token, so a cookie never holds it.

    A new token makes every cookie signed with the old one worthless.
    """
    return hmac.new(token.encode("ascii"), b"risk page session", hashlib.sha256).digest()


def configure(app: Flask, token: str | None) -> None:
    """Sign the app's session cookies with a key derived from token (no token: no sessions)."""
    app.secret_key = session_key(token) if token else None
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )


def guard() -> ResponseReturnValue | None:
    """Before every request: the API wants the bearer header, the page a signed-in session."""
    token = state().token
    if token is None or request.endpoint in OPEN_ENDPOINTS:
        return None
    if request.blueprint in PAGE_BLUEPRINTS:
        if session.get(SIGNED_IN) is True:
            return None
        return redirect(url_for("auth.login", next=_here()))
    if not bearer_token_matches(token):
        raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
    return None


def bearer_token_matches(token: str) -> bool:
    """Whether the request's Authorization header carries token as a bearer token.

    Headers arrive as latin-1 text, one character a byte; the token is ASCII, so a
    header with anything else (a no-break space too: only spaces and tabs are trimmed)
    is a wrong token, never an encoding error.
    """
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip(" \t")
    return (
        scheme.lower() == "bearer"
        and given.isascii()
        and hmac.compare_digest(given.encode("ascii"), token.encode("ascii"))
    )


def _here() -> str:
    """This request's path and query as the browser sent them, to come back to after signing in.

    The server's raw URI when it gives one: werkzeug decodes the path, so %2F and '/'
    would both come back as '/'; else the decoded path encoded again.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    if raw.startswith("/") and not raw.startswith("//"):
        return raw
    here = quote(request.script_root + request.path)
    if request.query_string:
        here += "?" + request.query_string.decode("latin-1")
    return here


def local_target(raw: str) -> str | None:
    """raw when it is a path on this site, to go back to after signing in; else None.

    Browsers drop tabs and line breaks anywhere in a URL, trim spaces and read '\\' as
    '/', so '/%09/evil.example' (a tab) leads to another host: only printable ASCII without
    spaces or backslashes is considered, then it must parse as a path with no scheme
    or host, and resolve to this host.
    """
    if not raw or "\\" in raw or any(not "!" <= char <= "~" for char in raw):
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or raw.startswith("//"):
        return None
    if urlsplit(urljoin("http://this.invalid/here", raw)).netloc != "this.invalid":
        return None
    return raw


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = local_target(request.values.get("next", "")) or url_for("pages.home")
    if state().token is None:
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", target=target, wrong=False, hours=SESSION_HOURS)
    given = request.form.get("token", "").strip(" \t")
    token = state().token or ""
    if not (given.isascii() and hmac.compare_digest(given.encode(), token.encode())):
        page = render_template("login.html", target=target, wrong=True, hours=SESSION_HOURS)
        return page, 401
    session.clear()
    session[SIGNED_IN] = True
    session.permanent = True  # expires after SESSION_HOURS, in the browser and here
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Forget the session here; a copy of its cookie expires SESSION_HOURS after issue."""
    session.clear()
    return redirect(url_for("auth.login"))
