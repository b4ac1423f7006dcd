"""What changed for client managers: risks recorded over time, /changes, what-ifs, the lift,
the export, and apicalls.py asking only what it shows (Flask test client and real scripts)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import (
    ROUND_TWO_DUMP,
    TOKEN,
    deploy,
    earlier_scoring,
    make_app,
    make_workspace,
    pdf_text,
    pipeline_run,
    recount_lift,
    run_script,
)

import apicalls
import reporting
from drs import explain, exports, releases, riskhistory
from drs.clients import ModelCache
from drs.config import API_TOKEN_ENV_VAR, FEATURES, Config, load_config
from drs.history import open_history
from drs.web import pages, risks
from drs.web.factory import serve_on_loopback


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A deployed workspace with one earlier scoring recorded before the app's own."""
    config = load_config(make_workspace(tmp_path_factory.mktemp("changes") / "ws", 600))
    deploy(config)
    earlier_scoring(config, "2026-11-20T06:00:00.000Z")
    return config


@pytest.fixture(scope="module")
def service(recorded: Config) -> Flask:
    return make_app(recorded)


@pytest.fixture
def client(service: Flask) -> Any:
    return service.test_client()


def test_the_app_records_the_book_it_serves_once(recorded: Config, client: Any) -> None:
    for _ in range(3):
        assert client.get("/clients?top=1").status_code == 200
    with open_history(recorded) as history:
        scorings = riskhistory.scorings(history)
    assert [s["release_id"] for s in scorings] == [
        "an-older-release",
        ModelCache(recorded).book().release_id,
    ]
    assert scorings[-1]["new_model"] == 1
    assert make_app(recorded).test_client().get("/").status_code == 200  # another worker
    with open_history(recorded) as history:
        assert len(riskhistory.scorings(history)) == 2


def test_changes_name_risers_newly_high_and_leavers_with_their_last_risk(
    recorded: Config, client: Any
) -> None:
    answer = client.get("/changes?top=1000").get_json()
    book = ModelCache(recorded).book()
    current = dict(zip(book.ids, map(float, book.risk), strict=True))
    assert answer["since"]["recorded_at"] == "2026-11-20T06:00:00.000Z"
    assert answer["left"] == [] and answer["counts"]["left"] == 0  # vanished is gone, not left
    risers = {entry["corporation"]: entry for entry in answer["risers"]}
    assert risers and all(current[name] == entry["risk_score"] for name, entry in risers.items())
    assert [e["change"] for e in answer["risers"]] == sorted(
        (e["change"] for e in answer["risers"]), reverse=True
    )
    assert {e["corporation"] for e in answer["newly_high"]} <= {
        name for name, risk in current.items() if risk >= 0.5
    }
    assert client.get("/changes").get_json()["risers"] == answer["risers"][:10]
    for bad in ("yesterday", "2026-13-01", "2026-1-1", "\u0662\u0660\u0662\u0666-11-20"):
        response = client.get("/changes", query_string={"since": bad})
        assert response.status_code == 400
        assert "'since' must be a date as YYYY-MM-DD" in response.get_json()["error"]
    before = client.get("/changes?since=2026-11-01").get_json()
    assert before["since"] is None and before["status"] == "ok"  # from the very first
    assert before["counts"]["new_clients"] == len(book.ids)


def test_a_client_who_left_is_listed_with_the_risk_we_gave_them(tmp_path: Path) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 300))
    deploy(config)
    book = ModelCache(config).book()
    leaver = book.ids[0]
    earlier_scoring(config, "2026-11-20T06:00:00.000Z", leaver="someone")
    with open_history(config) as history:
        riskhistory.record(history, riskhistory.scored_from_book(book), "2026-11-21T06:00:00.000Z")
    with config.input_folder.joinpath("left.csv").open("w") as handle:
        handle.write(f"corporation,{','.join(FEATURES)},exited\n{leaver},1,2,3,1\n")
    pipeline_status, _ = pipeline_run_quiet(config)
    assert pipeline_status == 0
    answer = make_app(config).test_client().get("/changes").get_json()
    assert answer["left"] == [
        {
            "corporation": leaver,
            "risk_score": float(book.risk[0]),
            "band": book.bands.of(book.risk[0]),
        }
    ]
    assert answer["counts"]["left_high"] == int(book.risk[0] >= 0.5)


def pipeline_run_quiet(config: Config) -> tuple[int, None]:
    import fullprocess

    return fullprocess.run(config), None


def test_what_if_equals_the_models_own_probability_on_the_changed_row(
    recorded: Config, client: Any
) -> None:
    import pandas as pd

    model = releases.current_release(recorded.deployment_folder).load_model()
    for corporation in ModelCache(recorded).book().ids[:25]:
        answer = client.get(f"/clients/{corporation}").get_json()
        latest = answer["latest"]
        for driver in answer["drivers"]:
            row = {name: latest[name] for name in FEATURES}
            if row[driver["feature"]] is None or row[driver["feature"]] == driver["typical"]:
                assert driver["risk_if_typical"] is None
                continue
            row[driver["feature"]] = driver["typical"]
            frame = pd.DataFrame([row], columns=list(FEATURES), dtype=float)
            expected = float(model.predict_proba(frame)[0, 1])
            assert math.isclose(driver["risk_if_typical"], expected, rel_tol=0, abs_tol=1e-9)
            assert driver["sentence"].startswith(driver["sentence"][0].upper())


def test_sentences_say_the_numbers_and_which_way() -> None:

    assert (
        explain.sentence("lastmonth_activity", 120.0, 265.0, 1.2)
        == "Activity last month 120, typical 265: much lower than typical, which raises the risk"
    )
    assert (
        explain.sentence("number_of_employees", 12.5, 10.0, -0.1)
        == "Number of employees 12.5, typical 10: higher than typical, which lowers the risk"
    )
    assert explain.sentence("lastyear_activity", None, 1000.0, 0.0) == (
        "Activity last year not known: counted as typical (1,000), so it does not move the risk"
    )


def test_a_client_answer_has_its_risk_over_time_and_when_its_rows_arrived(
    recorded: Config, client: Any
) -> None:
    name = ModelCache(recorded).book().ids[0]
    answer = client.get(f"/clients/{name}").get_json()
    assert answer["history"][0]["recorded_at"][:10] == "2026-11-20"
    assert answer["history"][-1]["risk_score"] == answer["risk_score"]
    assert answer["latest_arrived_at"] is not None
    assert "log_odds" in answer  # the model's terms stay in the API


def test_arrivals_match_rows_to_the_scorings_that_first_saw_them() -> None:
    def record(day: int, value: float) -> dict[str, Any]:
        return {
            "event": "scored",
            "recorded_at": f"2026-12-0{day}T06:00:00Z",
            "data_at": None,
            "lastmonth_activity": value,
            "lastyear_activity": 1.0,
            "number_of_employees": 1.0,
        }

    def row(value: float) -> dict[str, Any]:
        return {"lastmonth_activity": value, "lastyear_activity": 1, "number_of_employees": 1}

    found = risks.arrivals([row(7), row(8), row(9), row(10)], [record(2, 8), record(5, 10)])
    assert [arrival.words() for arrival in found] == [
        "by 2 Dec 06:00 UTC",
        "2 Dec 06:00 UTC",
        "by 5 Dec 06:00 UTC",
        "5 Dec 06:00 UTC",
    ]
    assert risks.arrivals([row(1)], [])[0].words() == "before records began"


def test_bands_filter_the_list_and_are_counted(recorded: Config, client: Any) -> None:
    book = ModelCache(recorded).book()
    counts = client.get("/clients").get_json()["band_counts"]
    assert counts == {band: sum(book.bands.of(r) == band for r in book.risk) for band in counts}
    assert sum(counts.values()) == len(book.ids)
    for band in ("high", "medium", "low"):
        answer = client.get(f"/clients?band={band}&top=1000").get_json()
        assert answer["matching"] == counts[band]
        assert {entry["band"] for entry in answer["clients"]} <= {band}
        page = client.get(f"/?band={band}&n=1000").get_data(as_text=True)
        assert page.count('<tr class="band-') == min(counts[band], 1000)
    assert client.get("/clients?band=urgent").status_code == 400
    assert client.get("/?band=urgent").status_code == 400


def test_the_export_is_the_filtered_list_as_apicalls_writes_it(
    recorded: Config, client: Any, tmp_path: Path
) -> None:
    response = client.get("/export.csv?band=medium&q=a")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    entries = client.get("/clients?band=medium&q=a&top=1000").get_json()["clients"]
    target = apicalls.write_csv(tmp_path / "same.csv", exports.table_rows(entries))
    assert response.get_data(as_text=True) == target.read_text()
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == exports.COLUMNS
    assert [row[1] for row in rows[1:]] == [entry["corporation"] for entry in entries]
    assert exports.spreadsheet_text("=HYPERLINK(1)") == "'=HYPERLINK(1)"


def test_the_export_and_model_health_need_the_token(recorded: Config) -> None:
    guarded = make_app(recorded, TOKEN).test_client()
    for path in ("/export.csv", "/model-health"):
        response = guarded.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_every_page_has_one_h1_and_the_header_speaks_plainly(recorded: Config, client: Any) -> None:
    name = ModelCache(recorded).book().ids[0]
    for path in ("/", f"/client/{name}", "/model-health", "/client/nobody", "/login"):
        page = client.get(path).get_data(as_text=True)
        assert page.count("<h1") == 1, path
    page = client.get("/").get_data(as_text=True)
    assert (
        "Risk scores updated" in page and "with a new model; not yet checked automatically" in page
    )
    assert "log-odds" not in page and "Drift" not in page
    health = client.get("/model-health").get_data(as_text=True)
    assert "<strong>Notice:</strong> no automated check yet" in health


def test_the_lift_on_model_health_and_in_the_report_equals_a_recount(tmp_path: Path) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 300))
    deploy(config)
    book = ModelCache(config).book()
    real = riskhistory.scored_from_book(book)
    flagged = [
        name for name, band in zip(real.corporations, real.bands, strict=True) if band == "high"
    ]
    with open_history(config) as history:
        riskhistory.record(history, real, "2026-11-20T06:00:00.000Z")
        leavers = set(flagged[:3]) | set(real.corporations[-2:])
        keep = [i for i, name in enumerate(real.corporations) if name not in leavers]
        later = real._replace(
            release_id="later",
            corporations=[real.corporations[i] for i in keep],
            risks=[real.risks[i] for i in keep],
            bands=[real.bands[i] for i in keep],
            rows=[real.rows[i] for i in keep],
            has_left=leavers.__contains__,
        )
        riskhistory.record(history, later, "2026-11-27T06:00:00.000Z")
        assert recount_lift(history)[0] == (len(real.corporations), len(flagged), 5, 3)
        lifts = riskhistory.lift_of(riskhistory.scorings(history))
    expected = (3 / len(flagged)) / (5 / len(real.corporations))
    assert lifts[0].lift == pytest.approx(expected)
    page = make_app(config).test_client().get("/model-health").get_data(as_text=True)
    assert f"Of the {len(flagged)} clients flagged high on 20 Nov 06:00 UTC, 3 (" in page
    assert f"flagged clients left {expected:.1f} times as often" in page
    facts = reporting.gather(config)
    assert facts.lifts[0] == lifts[0]
    text = pdf_text(reporting.write_report(config, "lift.pdf", facts))
    assert "Did the warnings come true?" in text
    assert f"flagged clients left {expected:.1f} times as often" in text
    assert f"20 Nov 06:00 UTC {len(flagged)} 3 (" in text


def test_the_pipeline_records_risks_when_the_book_changes(tmp_path: Path, capsys: Any) -> None:
    config_path = make_workspace(tmp_path / "ws", 300)
    status, _ = pipeline_run(config_path, capsys)
    assert status == 0
    status, line = pipeline_run(config_path, capsys)  # no new data: nothing recorded
    assert "no new data" in line
    config = load_config(config_path)
    with open_history(config) as history:
        scorings = riskhistory.scorings(history)
        state = history.rows("SELECT count(*) AS n FROM client_state")[0]["n"]
    assert len(scorings) == 1 and scorings[0]["clients"] == state > 0
    extra = config.input_folder / "more.csv"
    book = ModelCache(config).book()
    extra.write_text(
        f"corporation,{','.join(FEATURES)},exited\n{book.ids[-1]},0,0,0,0\n{book.ids[0]},5,6,7,1\n"
    )
    status, _ = pipeline_run(config_path, capsys)
    assert status == 0
    with open_history(config) as history:
        latest = riskhistory.scorings(history)[-1]
        left = history.rows("SELECT corporation FROM client_risks WHERE event = 'left'")
    assert latest["id"] == 2 and latest["departed"] == 1
    assert [row["corporation"] for row in left] == [book.ids[0]]


def test_a_round_two_history_is_migrated_by_the_next_run(tmp_path: Path, capsys: Any) -> None:
    config_path = make_workspace(tmp_path / "ws", 300)
    config = load_config(config_path)
    with sqlite3.connect(config.history_path) as old:
        old.executescript(ROUND_TWO_DUMP.read_text())
        runs = old.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0]
    status, _ = pipeline_run(config_path, capsys)
    assert status == 0
    with open_history(config) as history:
        assert history.rows("SELECT count(*) AS n FROM pipeline_runs")[0]["n"] == runs + 1
        assert len(riskhistory.scorings(history)) == 1
    assert make_app(config).test_client().get("/changes").get_json()["status"] == "first scoring"


@pytest.fixture(scope="module")
def site(recorded: Config) -> Iterator[str]:
    with serve_on_loopback(make_app(recorded)) as url:
        yield url


def apicalls_script(config: Config, *args: str) -> Any:
    return run_script(
        "apicalls.py",
        "--config",
        str(config.path),
        *args,
        cwd=config.root.parent,
        env={API_TOKEN_ENV_VAR: ""},
        timeout=60,
    )


def test_apicalls_top_changes_and_client_ask_only_what_they_show(
    recorded: Config, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real_ask = apicalls._ask

    def counting(session: Any, method: str, base: str, path: str, *rest: Any, **sent: Any) -> Any:
        asked.append(f"{method} {path}")
        return real_ask(session, method, base, path, *rest, **sent)

    monkeypatch.setattr(apicalls, "_ask", counting)
    returns = recorded.output_file(apicalls.DEFAULT_OUTPUT_NAME)
    returns.unlink(missing_ok=True)
    name = ModelCache(recorded).book().ids[0]
    for args, expected in (
        (["--top", "3"], ["GET /clients"]),
        (["--changes"], ["GET /changes"]),
        (["--changes", "--since", "2026-11-01"], ["GET /changes"]),
        (["--client", name], ["GET /clients"]),
    ):
        asked.clear()
        assert apicalls.main(["--config", str(recorded.path), "--url", site, *args]) == 0
        assert asked == expected, args
    assert not returns.exists(), "only the course's plain run writes apireturns.txt"


def test_apicalls_prints_changes_and_one_client_in_words(recorded: Config, site: str) -> None:
    name = ModelCache(recorded).book().ids[0]
    changes = apicalls_script(recorded, "--url", site, "--changes")
    assert changes.returncode == 0, changes.stderr
    assert changes.stdout.startswith("What changed since 20 Nov 06:00 UTC")
    assert "Biggest rises:" in changes.stdout and "Left, with the risk we gave them: none" in (
        changes.stdout
    )
    one = apicalls_script(recorded, "--url", site, "--client", name)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"{name}: ")
    assert "If it were typical, the risk would be" in one.stdout
    assert "Risk over time:\n  20 Nov 06:00 UTC" in one.stdout
    unknown = apicalls_script(recorded, "--url", site, "--client", "nobody")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
    mixed = apicalls_script(recorded, "--url", site, "--changes", "--top", "3")
    assert mixed.returncode == 2 and "--changes and --client show one thing" in mixed.stderr


def test_pages_module_keeps_log_odds_off_the_managers_pages(recorded: Config, client: Any) -> None:
    name = ModelCache(recorded).book().ids[0]
    page = client.get(f"/client/{name}").get_data(as_text=True)
    assert "log-odds" not in page and 'class="effect"' not in page
    assert "If activity" in page or "If number" in page
    assert pages.SHOWN_FIRST == 20
    shutil.rmtree(recorded.root / "nothing", ignore_errors=True)
    assert json.loads(json.dumps(client.get("/api").get_json()))["endpoints"]


def test_client_rows_past_history_days_are_pruned_with_the_next_scoring(tmp_path: Path) -> None:
    config = load_config(make_workspace(tmp_path / "ws", 300, history_days=3))
    deploy(config)
    moved = earlier_scoring(config, "2020-01-01T06:00:00.000Z", leaver="left-long-ago")
    book = ModelCache(config).book()
    with open_history(config) as history:
        riskhistory.record(history, riskhistory.scored_from_book(book), "2020-01-05T06:00:00.000Z")
        assert riskhistory.record_live(config, history) is None  # the same book: no scoring
        rows = history.rows("SELECT corporation, scoring_id, event FROM client_risks")
    assert {row["event"] for row in rows} == {"scored"}, "departures long ago are gone"
    kept = {row["corporation"]: row["scoring_id"] for row in rows}
    assert len(kept) == len(rows) == len(book.ids), "one row per client: its state then"
    assert all(kept[name] == 2 for name in moved) and kept[book.ids[-1]] in (1, 2)


@pytest.mark.parametrize(
    ("open_conditions", "checked", "expected"),
    [
        ((), True, ("ok", "checked OK")),
        ((), False, ("care", "not yet checked automatically")),
        (("alerts not delivered",), True, ("ok", "checked OK")),  # the Model health page's
        (
            ("alerts not delivered", "test data stale"),
            True,
            ("care", "treat with care: the test data no longer represents the clients"),
        ),
        (
            ("last run failed",),
            True,
            ("alarm", "do not rely on them: the last automated check failed"),
        ),
        (("a condition added later",), True, ("ok", "checked OK")),
    ],
)
def test_the_header_trusts_the_scores_as_far_as_the_open_conditions_allow(
    open_conditions: tuple[str, ...], checked: bool, expected: tuple[str, str]
) -> None:
    from drs.runs import Severity, Verdict

    verdict = Verdict(Severity.WARNING, "h", None, (), "r", "k", open=open_conditions)
    assert pages.trust(verdict, checked) == expected
