"""The page as the server builds it: links for any client id, the header, numbers, charts."""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import (
    ODD_IDS,
    add_a_year_of_scores,
    assert_error,
    deploy_workspace,
    make_app,
    odd_workspace,
)

from drs import releases
from drs.config import Config
from drs.files import csv_files, last_ingested_name, read_ingested_record
from drs.history import open_history
from drs.web import pages, shared


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return odd_workspace(tmp_path_factory.mktemp("web") / "ws")


@pytest.fixture(scope="module")
def service(deployed: Config) -> Flask:
    return make_app(deployed)


@pytest.fixture(scope="module")
def client(service: Flask) -> FlaskClient:
    return service.test_client()


def page_text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def assert_page_error(response: Any, status: int, fragment: str) -> None:
    """An error as a page: HTML with its status, the message, the page's security headers."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    assert fragment in page_text(response)
    assert response.headers.getlist("Content-Security-Policy") == [
        shared.SECURITY_HEADERS["Content-Security-Policy"]
    ]


def client_links(client: FlaskClient) -> dict[str, str]:
    """Each listed client's id -> the href of its link, as the page renders them."""
    body = client.get("/?n=1000").get_data(as_text=True)
    table = body[body.index('<table id="clients"') :]
    found = re.findall(r'<td><a href="([^"]*)">(.*?)</a></td>', table, flags=re.DOTALL)
    return {html.unescape(text): html.unescape(href) for href, text in found}


def test_the_header_counts_only_files_ingestion_would_read(
    deployed: Config, client: FlaskClient
) -> None:
    folder = deployed.input_folder
    newest = max(path.stat().st_mtime for path in csv_files(folder))
    future = time.time() + 400 * 86_400  # a year on: it would show as the newest arrival
    odd = [folder / "dangling.csv", folder / "folder.csv", folder / "bad\nname.csv"]
    odd[0].symlink_to("/nonexistent/gone.csv")
    odd[1].mkdir()
    odd[2].write_text("corporation\n")
    for path in odd[1:]:
        os.utime(path, (future, future))
    try:
        for path in ("/", "/client/lead", "/client?id=..", "/?fragment=results"):
            response = client.get(path)
            assert response.status_code == 200, path
        shown = pages._when(pages._stamp(newest))
        assert f"newest input file arrived {shown}" in page_text(client.get("/model-health"))
    finally:
        odd[0].unlink()
        odd[1].rmdir()
        odd[2].unlink()


def test_the_newest_file_comes_from_the_ingestion_record_not_a_listing(
    deployed: Config, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 50,000 input files a listing took most of every request; one stat does now."""
    newest = read_ingested_record(deployed.ingested_record_path)[-1]
    arrived = (deployed.input_folder / newest).stat().st_mtime

    def no_listing(*args: object) -> None:
        raise AssertionError("the page listed the input folder")

    assert client.get("/").status_code == 200  # templates and the book loaded
    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(Path, "glob", no_listing)
    shown = pages._when(pages._stamp(arrived))
    assert f"newest input file arrived {shown}" in page_text(client.get("/model-health"))


def test_a_long_ingestion_record_is_read_from_its_end(tmp_path: Path) -> None:
    record = tmp_path / "ingestedfiles.txt"
    names = [f"update{number:06d}.csv" for number in range(50_000)]
    record.write_text("".join(f"{name}\n" for name in names) + "\n")
    assert last_ingested_name(record) == names[-1]
    record.write_text(repr(names[:3]))  # the older format, a Python list
    assert last_ingested_name(record) == names[2]


def test_a_newest_file_that_is_gone_or_no_record_has_no_newest_file(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=100)  # its files are removed
    newest = read_ingested_record(config.ingested_record_path)[-1]
    (config.input_folder / newest).unlink()
    assert pages.newest_arrival(config) is None
    config.ingested_record_path.unlink()
    assert pages.newest_arrival(config) is None
    assert pages._stamp(1e20) is None


def test_every_listed_client_is_reached_by_its_link(client: FlaskClient) -> None:
    links = client_links(client)
    assert set(ODD_IDS) <= set(links)
    for name, href in links.items():
        response = client.get(href)
        assert response.status_code == 200, (name, href)
        body = response.get_data(as_text=True)
        assert f'<h1 class="client-name">{html.escape(name)}</h1>' in body, (name, href)
    assert links["lead"] == "/client/lead", "plain ids keep their plain address"
    for name in ("..", ".", "ü/../x", "/lead", "line\nbreak", "back\\slash", "%2e%2e"):
        assert links[name].startswith("/client?id="), name


@pytest.mark.parametrize("name", ODD_IDS)
def test_the_api_answers_any_id_for_that_client(client: FlaskClient, name: str) -> None:
    by_query = client.get("/clients", query_string={"id": name})
    assert by_query.status_code == 200, by_query.get_data(as_text=True)
    assert by_query.get_json()["corporation"] == name
    by_path = client.get("/clients/" + quote(name, safe=""))
    assert by_path.status_code == 200, by_path.get_data(as_text=True)
    assert by_path.get_json()["corporation"] == name


def test_an_encoded_slash_is_never_merged_into_another_client(client: FlaskClient) -> None:
    for path, name in (
        ("/clients/%2Flead", "/lead"),
        ("/clients/a%2F%2Fb", "a//b"),
        ("/clients/a%2F", "a/"),
        ("/clients/line%0Abreak", "line\nbreak"),
        ("/clients/%C3%BC%2F..%2Fx", "ü/../x"),
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.get_json()["corporation"] == name
    page = client.get("/client/%2Flead")
    assert page.status_code == 200
    assert '<h1 class="client-name">/lead</h1>' in page.get_data(as_text=True)


def test_asking_by_id_wrongly_is_a_clear_400(client: FlaskClient) -> None:
    assert_error(client.get("/clients?id=lead&top=3"), 400, "give 'id' (one client) or 'top'")
    assert_error(client.get("/clients?id=lead&q=a"), 400, "not both")
    assert_error(client.get("/clients?id=+"), 400, "'id' must be a client's corporation id")
    assert_error(client.get("/clients?id=a&id=b"), 400, "give one 'id', found 2")
    assert_error(client.get("/clients?id=nobody"), 404, "no client 'nobody'")
    assert_page_error(client.get("/client"), 400, "Say which client")
    assert_page_error(client.get("/client?id=nobody"), 404, "no client 'nobody'")
    index = client.get("/api").get_json()["endpoints"]
    assert {e["path"] for e in index} >= {"/clients?id=<corporation>", "/client?id=<corporation>"}


NOT_PLAIN_DIGITS = ["5_0", "+5", "\u0665", "\uff15", "\u00b2", " 5", "5 ", "0x5", "5.0", "-0"]


@pytest.mark.parametrize("raw", NOT_PLAIN_DIGITS)
def test_only_plain_digits_are_a_number(client: FlaskClient, raw: str) -> None:
    assert_error(
        client.get("/clients", query_string={"top": raw}),
        400,
        f"'top' must be a whole number from 1 to 1000, found {raw!r}",
    )
    assert_page_error(
        client.get("/", query_string={"n": raw}), 400, "The list shows from 1 to 1,000 clients"
    )


def test_plain_digits_still_count(client: FlaskClient) -> None:
    assert len(client.get("/clients?top=0005").get_json()["clients"]) == 5
    assert client.get("/?n=7").get_data(as_text=True).count('<tr class="band-') == 7
    assert_page_error(client.get("/?n=1001"), 400, "asks for '1001'")
    assert_page_error(client.get("/?n=" + "9" * 5000), 400, "The list shows from 1")


def test_show_more_only_when_it_shows_more(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "MAX_SHOWN", 30)
    first = client.get("/").get_data(as_text=True)
    assert 'href="/?n=30"' in first, "the last step stops at the most"
    at_most = page_text(client.get("/?n=30"))
    assert 'id="more"' not in at_most
    assert "Showing the 30 riskiest, the most this page lists" in at_most
    assert "or download the list as CSV" in at_most and 'id="export"' in at_most
    few = page_text(client.get("/?q=lead"))
    assert 'id="more"' not in few and "the most this page lists" not in few


def test_a_long_search_is_refused_alike_by_the_page_and_the_api(client: FlaskClient) -> None:
    longest = "x" * shared.MAX_QUERY_CHARS
    assert client.get("/clients", query_string={"q": longest}).status_code == 200
    assert client.get("/", query_string={"q": longest}).status_code == 200
    too_long = longest + "x"
    assert_error(client.get("/clients", query_string={"q": too_long}), 400, "at most 100")
    for fragment in (None, "results"):
        assert_page_error(
            client.get("/", query_string={"q": too_long, "fragment": fragment}),
            400,
            "Search for at most 100 characters of a client id; this search has 101.",
        )
    assert pages.MAX_QUERY_CHARS is shared.MAX_QUERY_CHARS and pages.state is shared.state


def test_answers_and_dumps_fall_back_alike_for_numbers_beyond_64_bits(service: Flask) -> None:
    value = {"big": 2**70, "nan": float("nan"), "array": np.array([1.5, np.nan]), "n": np.int64(3)}
    expected = {"big": 2**70, "nan": None, "array": [1.5, None], "n": 3}
    with service.app_context():
        response = service.json.response(value)
        assert response.mimetype == "application/json"
        assert json.loads(response.get_data()) == expected
        assert response.get_data(as_text=True) == service.json.dumps(value)
        assert json.loads(service.json.dumps({"small": 1.25})) == {"small": 1.25}


def test_the_header_names_the_release_that_scored_the_list(
    deployed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One look at the deployment per page: one landing meanwhile cannot mix two releases."""
    service = make_app(deployed)
    models = service.extensions["risk"].models
    real_model = models.model
    release, info, scorer = real_model()
    later = {**info, "release_id": "19990101T000000000000Z", "deployed_at": "1999-01-01T00:00Z"}
    looks: list[str] = []

    def model() -> Any:
        looks.append("look")
        return real_model() if len(looks) == 1 else (release, later, scorer)

    monkeypatch.setattr(models, "model", model)
    page = page_text(service.test_client().get("/model-health"))
    assert f"release {release.id}, deployed {pages._when(info['deployed_at'])}" in page
    assert "1999" not in page
    assert len(looks) == 1


def test_error_pages_carry_the_security_headers_once(client: FlaskClient) -> None:
    for path, status in (("/client/nobody", 404), ("/?n=0", 400), ("/client", 400)):
        assert_page_error(client.get(path), status, "")


def test_the_health_chart_marks_only_models_going_live(tmp_path: Path) -> None:
    """A staged model changed nothing for clients, and a rollback is no new deployment."""
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = releases.current_release(config.deployment_folder)
    assert release is not None
    for action in ("stage", "promote", "rollback"):
        releases.record(config, release, releases.Action(action), releases.By.HAND)
    page = make_app(config).test_client().get("/model-health").get_data(as_text=True)
    assert page.count('<line class="deployment"') == 2, "the first deployment and the promotion"


def test_a_year_of_history_draws_a_bounded_chart(tmp_path: Path) -> None:
    """50,000 runs made the page 28 MB with 200,000 chart shapes; now a point per week."""
    config = deploy_workspace(tmp_path / "workspace", rows=200)
    add_a_year_of_scores(config, every_minutes=20, f1=lambda minutes: 0.6)
    with open_history(config) as history, history.transaction():
        history.execute_many(
            "INSERT INTO deployments (recorded_at, release_id, action, model_sha256) "
            "VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), 'r', 'deploy', 'm')",
            ((f"-{hours} hours",) for hours in range(0, 365 * 24, 3)),
        )
    page = make_app(config).test_client().get("/model-health")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert len(page.data) < 300_000
    shapes = body.count("<circle") + body.count('<rect class="check"')
    assert 50 < shapes <= 2 * 60
    assert body.count('<line class="deployment"') <= 60
