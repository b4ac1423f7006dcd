"""The client managers' page, in a real browser: Playwright driving the system's Chromium.

Chromium comes from the distribution (`apt-get install chromium`; .ci/run installs it
when missing): browser downloads are not possible here, so Playwright is told where
the executable is (bench/browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ODD_IDS,
    TOKEN,
    deploy,
    earlier_scoring,
    make_app,
    make_workspace,
    odd_workspace,
)

import browser as browsers
from drs.config import Config, load_config
from drs.history import open_history
from drs.web import auth, factory, pages

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not browsers.CHROMIUM.exists():
        pytest.skip(f"{browsers.CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = browsers.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Config:
    config = load_config(make_workspace(tmp_path_factory.mktemp("pages") / "ws", 600))
    deploy(config)
    return config


@pytest.fixture(scope="module")
def site(workspace: Config) -> Iterator[str]:
    with factory.serve_on_loopback(make_app(workspace)) as url:
        yield url


class Visit:
    """A browser page that remembers console errors and every URL it asked for."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requested: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requested.append(request.url))

    def close(self) -> None:
        self.context.close()

    def ids(self) -> list[str]:
        return self.page.locator("#clients tbody tr td:nth-child(2) a").all_inner_texts()


@pytest.fixture
def visit(browser: Any) -> Iterator[Visit]:
    opened = Visit(browser)
    yield opened
    opened.close()


def api_top(site_url: str, workspace: Config, **query: str) -> dict[str, Any]:
    client = make_app(workspace).test_client()
    return client.get("/clients", query_string=query).get_json()


def test_the_page_lists_the_same_top_clients_as_the_api(
    visit: Visit, site: str, workspace: Config
) -> None:
    response = visit.page.goto(site)
    assert response.status == 200
    expected = api_top(site, workspace)["clients"]
    assert visit.ids() == [entry["corporation"] for entry in expected]
    risks = visit.page.locator("#clients tbody .percent").all_inner_texts()
    assert risks == [f"{entry['risk_score'] * 100:.0f}%" for entry in expected]
    reasons = visit.page.locator("#clients tbody .reason").all_inner_texts()
    assert reasons == [entry["drivers"][0]["sentence"] for entry in expected]
    assert visit.page.locator("#freshness").inner_text().endswith("not yet checked automatically.")
    visit.page.click("#more")
    assert len(visit.ids()) == pages.SHOWN_FIRST + pages.SHOW_MORE
    assert visit.errors == []
    assert all(url.startswith(site) for url in visit.requested), "nothing from another host"


def test_search_narrows_the_table_as_you_type(visit: Visit, site: str, workspace: Config) -> None:
    visit.page.goto(site)
    wanted = visit.ids()[3][:2]
    visit.page.fill("#q", wanted)
    visit.page.wait_for_function(
        "w => [...document.querySelectorAll('#clients tbody tr td:nth-child(2) a')]"
        ".every(a => a.textContent.toLowerCase().includes(w))",
        arg=wanted,
    )
    expected = api_top(site, workspace, q=wanted)["clients"]
    assert visit.ids() == [entry["corporation"] for entry in expected]
    assert f"q={wanted}" in visit.page.url
    assert visit.errors == []


def test_the_list_and_the_search_work_without_javascript(
    browser: Any, site: str, workspace: Config
) -> None:
    without = Visit(browser, java_script_enabled=False)
    try:
        without.page.goto(site)
        wanted = without.ids()[0][:2]
        without.page.fill("#q", wanted)
        without.page.press("#q", "Enter")
        without.page.wait_for_url(re.compile(r"\?q="))
        expected = api_top(site, workspace, q=wanted)["clients"]
        assert without.ids() == [entry["corporation"] for entry in expected]
        without.page.click("#clients tbody tr:first-child a")
        assert without.page.locator("h1").inner_text() == expected[0]["corporation"]
    finally:
        without.close()


def test_a_click_opens_the_client_page_with_its_drivers(
    visit: Visit, site: str, workspace: Config
) -> None:
    visit.page.goto(site)
    first = visit.ids()[0]
    visit.page.click("#clients tbody tr:first-child a")
    visit.page.wait_for_url(f"**/client/{first}")
    assert visit.page.locator("h1").inner_text() == first
    answer = make_app(workspace).test_client().get(f"/clients/{first}").get_json()
    sentences = visit.page.locator(".drivers .sentence").all_inner_texts()
    assert sentences == [f"{driver['sentence']}." for driver in answer["drivers"]]
    assert visit.page.locator(".drivers svg rect").count() == 3
    assert "log-odds" not in visit.page.inner_text("main")
    assert f"{answer['risk_score'] * 100:.0f}%" in visit.page.locator(".verdict").inner_text()
    assert visit.errors == []


@pytest.fixture(scope="module")
def odd_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A site whose clients include ids a URL path mangles: '..', '/lead', 'line\\nbreak', ..."""
    config = odd_workspace(tmp_path_factory.mktemp("odd") / "ws", 200)
    with factory.serve_on_loopback(make_app(config)) as url:
        yield url


def test_a_click_on_any_client_id_opens_that_clients_page(visit: Visit, odd_site: str) -> None:
    for name in ODD_IDS:
        visit.page.goto(f"{odd_site}/?n=1000")
        links = visit.page.locator("#clients tbody tr td:nth-child(2) a")
        texts = links.evaluate_all("links => links.map(a => a.textContent)")
        links.nth(texts.index(name)).click()
        visit.page.wait_for_load_state()
        heading = visit.page.locator("h1.client-name")
        assert heading.count() == 1, f"{name!r} opened {visit.page.url}, no client's page"
        assert heading.text_content() == name, f"{name!r} opened {visit.page.url}"
    assert visit.errors == []


def test_an_unknown_client_is_a_clear_page(visit: Visit, site: str) -> None:
    response = visit.page.goto(f"{site}/client/nobody-at-all")
    assert response.status == 404
    assert "no client 'nobody-at-all' in the ingested data" in visit.page.inner_text("main")


def test_with_no_deployment_the_page_says_so(browser: Any, tmp_path: Path) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 200))
    visit = Visit(browser)
    try:
        with factory.serve_on_loopback(make_app(config)) as url:
            response = visit.page.goto(url, wait_until="networkidle")
            assert response.status == 503
            assert "No model is deployed yet" in visit.page.inner_text("main")
        assert [e for e in visit.errors if "503" not in e] == []
    finally:
        visit.close()


def test_the_token_is_asked_once_and_kept_in_a_strict_httponly_cookie(
    browser: Any, workspace: Config
) -> None:
    visit = Visit(browser)
    try:
        with factory.serve_on_loopback(make_app(workspace, TOKEN)) as url:
            visit.page.goto(f"{url}/client/zzzz")
            assert "/login" in visit.page.url
            visit.page.fill("#token", "not-the-token")
            visit.page.click("button[type=submit]")
            assert "That token is not the right one." in visit.page.inner_text("main")
            visit.page.fill("#token", TOKEN)
            visit.page.click("button[type=submit]")
            visit.page.wait_for_url("**/client/zzzz")
            [cookie] = visit.context.cookies()
            assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
                auth.SESSION_COOKIE,
                True,
                "Strict",
            )
            assert TOKEN not in cookie["value"]
            visit.page.goto(url)
            assert len(visit.ids()) == pages.SHOWN_FIRST, "asked once: the cookie is enough"
            api = visit.context.request.get(f"{url}/clients")
            assert api.status == 401, "the JSON API keeps its bearer header"
    finally:
        visit.close()


@pytest.mark.parametrize(
    "path", ["/", "/client/{first}", "/?q=a", "/?band=high", "/model-health", "/login"]
)
def test_a_phone_sees_the_page_without_sideways_scrolling(
    browser: Any, site: str, workspace: Config, path: str
) -> None:
    first = api_top(site, workspace)["clients"][0]["corporation"]
    phone = Visit(browser, viewport=PHONE, is_mobile=True)
    try:
        phone.page.goto(site + path.format(first=first))
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path}: {width} px wide"
        assert phone.errors == []
    finally:
        phone.close()


def test_pages_allow_nothing_from_other_hosts(workspace: Config) -> None:
    client = make_app(workspace).test_client()
    for path in ("/", "/client/nobody"):
        policy = client.get(path).headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
    fragment = client.get("/?q=a&fragment=results").get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="results"')


def test_the_page_says_when_the_test_data_is_stale(workspace: Config) -> None:
    import json

    summary = {
        "outcome": "redeployed",
        "model_drift": {"drifted": True, "reason": "new-data F1 0.3 < expected 0.7"},
        "test_data_stale": "the deployed model's F1 on it, 0.49, is below its expected 0.58",
    }
    with open_history(workspace) as history:
        history.execute(
            "INSERT INTO pipeline_runs (started_at, finished_at, outcome, detail_json) "
            "VALUES ('x', '2026-12-01T10:00:00.000Z', 'redeployed', ?)",
            (json.dumps(summary),),
        )
    try:
        page = make_app(workspace).test_client().get("/").get_data(as_text=True)
        health = make_app(workspace).test_client().get("/model-health").get_data(as_text=True)
    finally:
        with open_history(workspace) as history:
            history.execute("DELETE FROM pipeline_runs WHERE started_at = 'x'")
    assert "treat with care: the test data no longer represents the clients." in page
    assert "<strong>Warning:</strong> the test data no longer represents the clients" in health
    assert "test data no longer represents the clients; drift checks against it are blind" in health


# What changed, in the managers' words: at desktop and phone width.

DESKTOP = {"width": 1366, "height": 768}
SCREENS = {"desktop": {"viewport": DESKTOP}, "phone": {"viewport": PHONE, "is_mobile": True}}


@pytest.fixture(scope="module")
def history_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Config]]:
    """A site whose history holds an earlier scoring: risks moved, one client since left."""
    config = load_config(make_workspace(tmp_path_factory.mktemp("history") / "ws", 600))
    deploy(config)
    earlier_scoring(config, "2026-11-20T06:00:00.000Z")
    with factory.serve_on_loopback(make_app(config)) as url:
        yield url, config


@pytest.fixture(params=list(SCREENS))
def screen(request: pytest.FixtureRequest, browser: Any) -> Iterator[Visit]:
    opened = Visit(browser, **SCREENS[request.param])
    yield opened
    assert (
        opened.page.evaluate("document.documentElement.scrollWidth")
        <= (SCREENS[request.param]["viewport"]["width"])
    ), "no sideways scrolling"
    assert opened.errors == []
    opened.close()


def api(config: Config, path: str) -> Any:
    return make_app(config).test_client().get(path).get_json()


def test_band_counts_and_the_band_filter(screen: Visit, history_site: tuple[str, Config]) -> None:
    url, config = history_site
    screen.page.goto(url)
    assert screen.page.locator("h1").inner_text() == "Clients at risk"
    counts = api(config, "/clients")["band_counts"]
    shown = screen.page.locator(".band-count").all_inner_texts()
    assert [text.split() for text in shown] == [
        *([band, f"{count:,}"] for band, count in counts.items()),
        ["all", f"{sum(counts.values()):,}"],
    ]
    bands = screen.page.locator("#clients tbody .band")
    assert all(bands.nth(i).is_visible() for i in range(bands.count())), "the band in words"
    screen.page.click(".band-count.band-medium")
    screen.page.wait_for_url(re.compile(r"band=medium"))
    assert set(bands.all_inner_texts()) == {"medium"}
    expected = api(config, "/clients?band=medium")["clients"]
    assert screen.ids() == [entry["corporation"] for entry in expected]
    screen.page.select_option("#band-filter", "low")  # the script sends the form
    screen.page.wait_for_url(re.compile(r"band=low"))
    assert set(bands.all_inner_texts()) == {"low"}
    assert f"{counts['low']:,} of" in screen.page.locator("#summary").inner_text()


def test_the_band_filter_works_without_javascript(
    browser: Any, history_site: tuple[str, Config]
) -> None:
    url, config = history_site
    without = Visit(browser, java_script_enabled=False)
    try:
        without.page.goto(url)
        without.page.select_option("#band-filter", "high")
        without.page.click("form.search button[type=submit]")
        without.page.wait_for_url(re.compile(r"band=high"))
        expected = api(config, "/clients?band=high")["clients"]
        assert without.ids() == [entry["corporation"] for entry in expected]
        without.page.fill("#since", "2026-11-19")
        without.page.click("form.since button[type=submit]")
        without.page.wait_for_url(re.compile(r"since=2026-11-19"))
        assert "band=high" in without.page.url, "the filter is kept"
        heading = without.page.locator("#changes-title").inner_text()
        assert heading == "What changed in the first scoring"
    finally:
        without.close()


def test_a_clients_trend_and_what_ifs(screen: Visit, history_site: tuple[str, Config]) -> None:
    url, config = history_site
    screen.page.goto(url)
    first = screen.ids()[0]
    screen.page.click("#clients tbody tr:first-child a")
    screen.page.wait_for_url(f"**/client/{first}")
    answer = api(config, f"/clients/{first}")
    assert screen.page.locator("h1").inner_text() == first
    assert screen.page.locator("svg.trend circle.risk").count() == len(answer["history"]) == 2
    dates = screen.page.locator("#risk-records tbody tr td:first-child").all_inner_texts()
    assert dates[-1] == "20 Nov 06:00 UTC"
    what_ifs = screen.page.locator(".what-if").all_inner_texts()
    expected = [
        f"{d['risk_if_typical'] * 100:.0f}%"
        for d in answer["drivers"]
        if d["risk_if_typical"] is not None
    ]
    assert [re.search(r"would be (\d+%)", text).group(1) for text in what_ifs] == expected
    assert all(text.startswith("If ") for text in what_ifs)


def test_the_changes_section_lists_what_the_api_says(
    screen: Visit, history_site: tuple[str, Config]
) -> None:
    url, config = history_site
    screen.page.goto(url + "/#changes")
    answer = api(config, "/changes")
    assert (
        screen.page.locator("#changes-title").inner_text() == "What changed since 20 Nov 06:00 UTC"
    )
    risers = screen.page.locator("#risers li a").all_inner_texts()
    assert risers == [entry["corporation"] for entry in answer["risers"]]
    newly = screen.page.locator("#newly-high li a").all_inner_texts()
    assert newly == [entry["corporation"] for entry in answer["newly_high"]]
    summary = screen.page.locator("#changes-summary").inner_text()
    assert f"{answer['counts']['risers']} rose" in summary
    screen.page.locator("#risers li a").first.click()
    screen.page.wait_for_load_state()
    assert screen.page.locator("h1").inner_text() == risers[0]


def test_the_export_downloads_the_list_as_filtered(
    screen: Visit, history_site: tuple[str, Config], tmp_path: Path
) -> None:
    url, config = history_site
    screen.page.goto(url + "/?band=medium&q=a")
    with screen.page.expect_download() as download:
        screen.page.click("#export")
    saved = tmp_path / "list.csv"
    download.value.save_as(saved)
    expected = make_app(config).test_client().get("/export.csv?band=medium&q=a")
    assert saved.read_bytes() == expected.get_data()
    lines = saved.read_text().splitlines()
    assert lines[0] == "rank,corporation,risk_percent,band,main_reason,risk_score"
    assert len(lines) - 1 == api(config, "/clients?band=medium&q=a")["matching"]


def test_model_health_is_one_click_away(screen: Visit, history_site: tuple[str, Config]) -> None:
    url, _ = history_site
    screen.page.goto(url)
    screen.page.click("nav >> text=Model health")
    screen.page.wait_for_url("**/model-health")
    assert screen.page.locator("h1").inner_text() == "Model health"
    assert screen.page.locator("#verdict").inner_text().startswith("Notice: no automated check yet")
    assert screen.page.locator("#lift-title").inner_text() == "Did the warnings come true?"


@pytest.mark.parametrize("size", list(SCREENS))
def test_signing_in_at_every_width(browser: Any, workspace: Config, size: str) -> None:
    visit = Visit(browser, **SCREENS[size])
    try:
        with factory.serve_on_loopback(make_app(workspace, TOKEN)) as url:
            visit.page.goto(f"{url}/model-health")
            assert "/login" in visit.page.url
            assert visit.page.locator("h1").inner_text() == "Sign in"
            visit.page.fill("#token", TOKEN)
            visit.page.click("button[type=submit]")
            visit.page.wait_for_url("**/model-health")
            assert visit.page.locator("h1").inner_text() == "Model health"
            width = visit.page.evaluate("document.documentElement.scrollWidth")
            assert width <= SCREENS[size]["viewport"]["width"]
    finally:
        visit.close()
