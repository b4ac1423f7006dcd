"""ingestion.py: validation, de-duplication, the ingestion record and the run history."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import (
    run_script,
)

import ingestion
import scoring
import training
from drs import datagen, releases
from drs.config import (
    COLUMNS,
    FEATURES,
    ID_COLUMN,
    MAX_ID_CHARS,
    TARGET,
    Config,
    load_config,
)
from drs.datarules import read_table
from drs.errors import DataError
from drs.files import csv_files, read_ingested_record
from drs.history import open_history

HEADER = ",".join(COLUMNS)


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "".join(f"{line}\n" for line in (header, *rows))


@pytest.fixture
def incoming(config: Config) -> Path:
    """config's input folder, emptied of the generated files (each test writes its own)."""
    for path in config.input_folder.glob("*.csv"):
        path.unlink()
    return config.input_folder


def final_frame(config: Config) -> pd.DataFrame:
    """finaldata.csv as plain pandas reads it (independent of the product's reader)."""
    return pd.read_csv(config.final_data_path)


def history_rows(config: Config, sql: str) -> list[dict]:
    with open_history(config) as history:
        return history.rows(sql)


def test_duplicates_across_and_within_files_are_dropped(config: Config, incoming: Path) -> None:
    (incoming / "a.csv").write_text(csv_text("aaaa,1,10,5,0", "bbbb,2,20,6,1", "cccc,3,30,7,0"))
    # Two rows repeat a.csv, one repeats itself, one differs only in its target,
    # one only by an empty cell (empty equals empty, not 0).
    (incoming / "b.csv").write_text(
        csv_text(
            "bbbb,2,20,6,1",
            "cccc,3,30,7,0",
            "dddd,4,40,8,1",
            "dddd,4,40,8,1",
            "aaaa,1,10,5,1",
            "eeee,,50,9,0",
            "eeee,,50,9,0",
            "eeee,0,50,9,0",
        )
    )
    result = ingestion.run(config)
    assert result.rows_before == 11
    assert result.rows_after == 7
    frame = final_frame(config)
    assert list(frame.columns) == list(COLUMNS)
    assert frame[ID_COLUMN].tolist() == [
        "aaaa",
        "bbbb",
        "cccc",
        "dddd",
        "aaaa",
        "eeee",
        "eeee",
    ]
    assert frame[TARGET].tolist() == [0, 1, 0, 1, 1, 0, 0]
    assert frame["lastmonth_activity"].isna().tolist() == [False] * 5 + [True, False]


def test_files_are_ingested_in_the_order_they_arrived(config: Config, incoming: Path) -> None:
    """A client's newest row comes last, however the files are called."""
    (incoming / "dataset10.csv").write_text(csv_text("qqhv,5,60,800,1"))
    (incoming / "dataset2.csv").write_text(csv_text("qqhv,1,10,800,0", "aaaa,1,2,3,0"))
    (incoming / "dataset9.csv").write_text(csv_text("bbbb,1,2,3,0"))
    os.utime(incoming / "dataset2.csv", ns=(1_000_000_000, 1_000_000_000))
    os.utime(incoming / "dataset10.csv", ns=(2_000_000_000, 2_000_000_000))
    os.utime(incoming / "dataset9.csv", ns=(2_000_000_000, 2_000_000_000))  # a tie: by number
    ingestion.run(config)
    assert read_ingested_record(config.ingested_record_path) == [
        "dataset2.csv",
        "dataset9.csv",
        "dataset10.csv",
    ]
    frame = final_frame(config)
    latest = frame.drop_duplicates(subset=ID_COLUMN, keep="last")
    assert latest.set_index(ID_COLUMN).loc["qqhv", TARGET] == 1


def test_a_dangling_link_or_a_folder_named_csv_is_not_a_file_to_ingest(
    config: Config, incoming: Path
) -> None:
    (incoming / "a.csv").write_text(csv_text("aaaa,1,2,3,0"))
    (incoming / "gone.csv").symlink_to(incoming / "nowhere" / "gone.csv")
    (incoming / "folder.csv").mkdir()
    assert csv_files(incoming) == [incoming / "a.csv"]
    assert list(ingestion.run(config).ingested) == ["a.csv"]


def test_generated_overlapping_files_match_pandas_drop_duplicates(
    config: Config, incoming: Path
) -> None:
    paths = datagen.write_files(incoming, 900, files=3, seed=11, overlap=0.3, missing_rate=0.05)
    expected = (
        pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
        .drop_duplicates(ignore_index=True)
        .astype({column: "float64" for column in COLUMNS[1:]})
    )
    result = ingestion.run(config)
    assert result.rows_before == 900
    assert result.rows_after == len(expected) == 900 - 2 * 90  # the repeated rows are gone
    pd.testing.assert_frame_equal(
        final_frame(config).astype({column: "float64" for column in COLUMNS[1:]}),
        expected,
        check_dtype=False,
    )


def test_first_occurrences_equals_pandas_on_random_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    for limit in (ingestion.KEY_LIMIT, 7):  # 7 forces the renumbering of packed keys
        monkeypatch.setattr(ingestion, "KEY_LIMIT", limit)
        for _ in range(40):
            rows = int(rng.integers(1, 80))
            frame = pd.DataFrame(
                {
                    ID_COLUMN: pd.array(rng.choice(["ab", "", "null", None], rows), "str"),
                    **{c: rng.choice([0.0, -0.0, 2.5, np.nan], rows) for c in FEATURES},
                    TARGET: rng.choice([0.0, 1.0, np.nan], rows),
                }
            )
            table = pa.Table.from_pandas(frame, preserve_index=False)
            cut = int(rng.integers(0, rows + 1))
            parts = [part for part in (table.slice(0, cut), table.slice(cut)) if part.num_rows]
            expected = ~frame.duplicated().to_numpy()
            assert ingestion.first_occurrences(parts).tolist() == expected.tolist()


def test_column_order_and_extra_columns_do_not_change_finaldata(
    tmp_path: Path, config: Config, incoming: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = datagen.write_files(incoming, 200, files=2, seed=4, overlap=0.2, missing_rate=0.05)
    ingestion.run(config)
    straight = config.final_data_path.read_bytes()
    for path in paths:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["region"] = "north"
        shuffled = ["exited", "number_of_employees", "region", "corporation"]
        frame[[*shuffled, "lastyear_activity", "lastmonth_activity"]].to_csv(path, index=False)
    caplog.set_level(logging.INFO)
    ingestion.run(config)
    assert config.final_data_path.read_bytes() == straight
    assert "dataset1.csv: ignoring extra column(s) 'region'" in caplog.text


def test_utf8_bom_is_stripped(config: Config, incoming: Path) -> None:
    (incoming / "bom.csv").write_bytes(b"\xef\xbb\xbf" + csv_text("wxyz,7,70,9,1").encode())
    result = ingestion.run(config)
    assert result.ingested == {"bom.csv": 1}
    raw = config.final_data_path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    frame = final_frame(config)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.iloc[0].tolist() == ["wxyz", 7, 70, 9, 1]


def test_header_names_with_spaces_are_accepted(config: Config, incoming: Path) -> None:
    header = " corporation , lastmonth_activity,lastyear_activity ,number_of_employees,exited"
    (incoming / "spaced.csv").write_text(csv_text("wxyz,7,70,9,1", header=header))
    assert ingestion.run(config).ingested == {"spaced.csv": 1}


INVALID = {
    "missing_column.csv": (
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees\nabcd,1,2,3\n",
        "missing column(s) 'exited'",
    ),
    "empty.csv": ("", "empty file"),
    "header_only.csv": (HEADER + "\n", "no data rows (header only)"),
    "text_in_number.csv": (
        csv_text("abcd,1,2,3,0", "efgh,4,many,6,1"),
        "line 3: column 'lastyear_activity' must be a number, found 'many'",
    ),
    "binary.csv": (bytes(range(256)) * 4, "not a CSV file (binary content)"),
    "gzipped.csv": (gzip.compress(csv_text("abcd,1,2,3,0").encode()), "not a CSV file"),
    "latin1.csv": ("é,ü\n".encode("latin-1"), "line 1: not UTF-8 text"),
    "ragged.csv": (
        csv_text("abcd,1,2,3,0", "efgh,4,5"),
        "line 3: 3 field(s) where the header has 5",
    ),
    "blank_first_line.csv": (
        "\n" + csv_text("abcd,1,2,3,0"),
        "line 1 is blank; the header row must come first",
    ),
    "blank_lines_only.csv": (" \n\n", "empty file"),
    "negative.csv": (
        csv_text("abcd,1,2,3,0", "efgh,4,5,6,1", "ijkl,7,8,-5,0"),
        "line 4: column 'number_of_employees' must be a finite number >= 0, found -5",
    ),
    "target_two.csv": (
        csv_text("abcd,1,2,3,2"),
        "line 2: column 'exited' must be 0 or 1, found 2",
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_an_invalid_file_is_rejected_with_its_reason_and_the_rest_ingested(
    config: Config, incoming: Path, name: str
) -> None:
    content, reason = INVALID[name]
    datagen.write_files(incoming, 50, seed=9, prefix="good")
    path = incoming / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = ingestion.run(config)
    assert result.ingested == {"good1.csv": 50}
    assert reason in result.rejected[name]
    assert len(final_frame(config)) == result.rows_after
    (check,) = history_rows(config, f"SELECT * FROM file_checks WHERE name = '{name}'")
    assert check["verdict"] == "rejected"
    assert reason in check["reason"]
    assert check["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(
    config: Config, incoming: Path
) -> None:
    (incoming / "negative.csv").write_text(
        csv_text("abcd,1,2,3,0", "", '"ef\ngh",4,5,6,1', "ij,-1,2,3,0")
    )
    (incoming / "text.csv").write_text(csv_text('"ab\ncd",1,2,3,0', "", "ef,x,2,3,0"))
    datagen.write_files(incoming, 20, seed=9, prefix="good")
    rejected = ingestion.run(config).rejected
    assert rejected["negative.csv"].startswith("line 6: column 'lastmonth_activity'")
    assert rejected["text.csv"].startswith("line 5: column 'lastmonth_activity'")


def test_script_exits_0_and_names_every_invalid_file_with_its_reason(
    config_path: Path, config: Config, incoming: Path, tmp_path: Path
) -> None:
    datagen.write_files(incoming, 120, files=2, seed=9, overlap=0.25)
    for name, (content, _) in INVALID.items():
        (incoming / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = run_script("ingestion.py", "--config", str(config_path), cwd=elsewhere)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout.strip() == (
        f"{config.final_data_path}: 105 rows from 2 file(s); {len(INVALID)} rejected"
    )
    for name, (_, reason) in INVALID.items():
        assert f"{name}: rejected: " in run.stderr
        assert reason in run.stderr
    (run_row,) = history_rows(config, "SELECT * FROM ingestion_runs")
    assert set(json.loads(run_row["rejected_json"])) == set(INVALID)
    assert config.ingested_record_path.read_text() == "dataset1.csv\ndataset2.csv\n"


def test_a_rejected_file_is_not_read_again_until_its_content_changes(
    config: Config,
    incoming: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads: list[str] = []
    original = read_table

    def counting(path: Path, require_target: bool = True) -> pa.Table:
        reads.append(path.name)
        return original(path, require_target)

    def counting_small(data: bytes) -> dict | None:  # small files are parsed from their bytes
        reads.append(next(p.name for p in incoming.glob("*.csv") if p.read_bytes() == data))
        return original_small(data)

    original_small = ingestion.parse_small
    monkeypatch.setattr(ingestion, "read_table", counting)
    monkeypatch.setattr(ingestion, "parse_small", counting_small)
    datagen.write_files(incoming, 40, seed=9, prefix="good")
    bad = incoming / "bad.csv"
    bad.write_text(csv_text("abcd,1,2,3,7"))
    os.utime(incoming / "good1.csv", ns=(1_000_000_000, 1_000_000_000))  # arrived first
    first = ingestion.run(config)
    assert list(dict.fromkeys(reads)) == ["good1.csv", "bad.csv"]
    reads.clear()
    second = ingestion.run(config)
    assert list(dict.fromkeys(reads)) == ["good1.csv"]
    assert second.rejected == first.rejected
    assert "bad.csv: still rejected, content unchanged" in caplog.text
    reads.clear()
    bad.write_text(csv_text("abcd,1,2,3,1"))
    third = ingestion.run(config)
    assert list(dict.fromkeys(reads)) == ["good1.csv", "bad.csv"]
    assert third.rejected == {}
    assert third.ingested == {"good1.csv": 40, "bad.csv": 1}
    assert config.ingested_record_path.read_text() == "good1.csv\nbad.csv\n"


def test_the_run_is_recorded_with_counts_hashes_rejections_and_duration(
    config: Config, incoming: Path
) -> None:
    paths = datagen.write_files(incoming, 100, files=2, seed=3, overlap=0.2)
    (incoming / "broken.csv").write_text("corporation\nabcd\n")
    before = datetime.now().astimezone()
    result = ingestion.run(config)
    assert config.ingested_record_path.read_text().splitlines() == ["dataset1.csv", "dataset2.csv"]
    assert read_ingested_record(config.ingested_record_path) == [
        "dataset1.csv",
        "dataset2.csv",
    ]
    (run,) = history_rows(config, "SELECT * FROM ingestion_runs")
    assert run["status"] == "ok"
    assert run["input_folder"] == str(incoming)
    assert datetime.fromisoformat(run["started_at"]) >= before.replace(microsecond=0)
    assert 0 < run["duration_s"] < 60
    assert (
        (run["rows_before"], run["rows_after"])
        == (100, 90)
        == (
            result.rows_before,
            result.rows_after,
        )
    )
    assert json.loads(run["files_json"]) == [
        {"name": path.name, "rows": 50, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in paths
    ]
    reason = "missing column(s) 'lastmonth_activity', 'lastyear_activity', "
    assert json.loads(run["rejected_json"])["broken.csv"].startswith(reason)
    checks = history_rows(config, "SELECT name, verdict, rows FROM file_checks ORDER BY name")
    assert [tuple(check.values()) for check in checks] == [
        ("broken.csv", "rejected", None),
        ("dataset1.csv", "valid", 50),
        ("dataset2.csv", "valid", 50),
    ]


def test_nothing_valid_fails_in_one_line_and_keeps_the_previous_result(
    config_path: Path, config: Config, incoming: Path, tmp_path: Path
) -> None:
    datagen.write_files(incoming, 30, seed=9)
    ingestion.run(config)
    previous = (config.final_data_path.read_bytes(), config.ingested_record_path.read_bytes())
    (incoming / "dataset1.csv").write_text(HEADER + "\n")
    (incoming / "other.csv").write_bytes(b"\x00\x01")
    run = run_script("ingestion.py", "--config", str(config_path), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.endswith(f"{incoming}: no valid CSV file to ingest (2 found, 2 rejected)")
    assert (config.final_data_path.read_bytes(), config.ingested_record_path.read_bytes()) == (
        previous
    )
    runs = history_rows(config, "SELECT status, rows_after FROM ingestion_runs ORDER BY id")
    assert [run["status"] for run in runs] == ["ok", "failed"]


def test_an_empty_or_missing_input_folder_is_an_error(config: Config, incoming: Path) -> None:
    with pytest.raises(DataError, match=r"no valid CSV file to ingest \(0 found"):
        ingestion.run(config)
    incoming.rmdir()
    with pytest.raises(DataError, match="input folder does not exist"):
        ingestion.run(config)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a.csv\nb.csv\n", ["a.csv", "b.csv"]),
        ("a.csv\n\n  b.csv  \n", ["a.csv", "  b.csv  "]),  # names are kept verbatim
        ("['a.csv', 'b.csv']", ["a.csv", "b.csv"]),
        ('[\n  "a.csv",\n  "b.csv"\n]\n', ["a.csv", "b.csv"]),
        ("[]", []),
        ("", []),
    ],
)
def test_read_ingested_record_accepts_lines_and_the_old_list_literal(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = tmp_path / "ingestedfiles.txt"
    path.write_text(text)
    assert read_ingested_record(path) == names


@pytest.mark.parametrize(
    "text", ["['a.csv', 3]\n", "[unclosed\n", "['a.csv'] + ['b.csv']\n", "[2026-12] export.csv\n"]
)
def test_a_name_that_starts_with_a_bracket_is_a_name(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ingestedfiles.txt"
    path.write_text(text)
    assert read_ingested_record(path) == [text.removesuffix("\n")]


def test_a_client_id_over_the_longest_allowed_is_rejected_with_its_line(
    config: Config, incoming: Path
) -> None:
    """A 5,000-character id was ingested; its page then answered an HTML 414."""
    longest = "a" * MAX_ID_CHARS
    (incoming / "ok.csv").write_text(csv_text(f"{longest},1,2,3,0"))
    (incoming / "long.csv").write_text(csv_text("abcd,1,2,3,0", "", f"{'b' * 5000},1,2,3,0"))
    result = ingestion.run(config)
    assert result.ingested == {"ok.csv": 1}
    assert result.rejected["long.csv"] == (
        f"line 4: corporation is 5,000 characters long; a client id has at most "
        f"{MAX_ID_CHARS} characters"
    )


def test_a_link_in_the_input_folder_to_the_test_data_is_never_ingested(
    config: Config, incoming: Path
) -> None:
    """Test data trained on would make every test score meaningless."""
    datagen.write_files(incoming, 50, seed=9, prefix="good")
    (incoming / "sneaky.csv").symlink_to(config.test_data_path)
    (incoming / "relative.csv").symlink_to(Path("..") / "testdata" / "testdata.csv")
    result = ingestion.run(config)
    assert result.ingested == {"good1.csv": 50}
    for name in ("sneaky.csv", "relative.csv"):
        assert result.rejected[name] == (
            f"it is {config.test_data_path} (through a link), a file of the test data "
            "folder, never new data"
        )
    assert read_ingested_record(config.ingested_record_path) == ["good1.csv"]


NON_UTF8_FILES = {
    "id_only.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0"],
    "with_negative.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2,-5,0"],
    "with_ragged_row.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2"],
    "with_target_two.csv": [b"abcd,1,2,3,0", b"ab\xe9d,1,2,3,0", b"efgh,1,2,3,2"],
    "bad_byte_in_number.csv": [b"abcd,1,2,3,0", b"abcd,1,\xff2,3,0"],
}


@pytest.mark.parametrize("name", sorted(NON_UTF8_FILES))
def test_a_file_that_is_not_utf8_is_rejected_with_its_line_and_the_rest_ingested(
    config: Config, name: str
) -> None:
    lines = [HEADER.encode(), *NON_UTF8_FILES[name]]
    (config.input_folder / name).write_bytes(b"\n".join(lines) + b"\n")
    result = ingestion.run(config)
    assert result.rejected == {name: "line 3: not UTF-8 text"}
    assert sorted(result.ingested) == ["dataset1.csv", "dataset2.csv"]
    with open_history(config) as history:
        [check] = history.rows("SELECT verdict, reason FROM file_checks WHERE name = ?", (name,))
    assert check == {"verdict": "rejected", "reason": "line 3: not UTF-8 text"}


def test_a_header_only_file_without_a_final_newline_has_no_data_rows(
    config: Config,
) -> None:
    (config.input_folder / "bare.csv").write_text(HEADER)
    assert ingestion.run(config).rejected == {"bare.csv": "no data rows (header only)"}


def test_a_header_of_ten_thousand_columns_is_read_whole(config: Config) -> None:
    extra = [f"extra{n}" for n in range(10_000)]
    header = ",".join([*extra[:5000], *COLUMNS, *extra[5000:]])
    row = ",".join(["9"] * 5000 + ["wxyz", "1", "2", "3", "1"] + ["9"] * 5000)
    assert len(header) > 64 * 1024
    (config.input_folder / "wide.csv").write_text(f"{header}\n{row}\n")
    result = ingestion.run(config)
    assert result.ingested["wide.csv"] == 1
    assert "wide.csv" not in result.rejected


def test_a_file_name_starting_with_a_bracket_is_ingested_and_trained_on(
    config: Config,
) -> None:
    odd = config.input_folder / "[2026-12] export.csv"
    shutil.copy(config.input_folder / "dataset1.csv", odd)
    (config.input_folder / "dataset1.csv").unlink()
    later = (config.input_folder / "dataset2.csv").stat().st_mtime_ns + 1_000_000_000
    os.utime(odd, ns=(later, later))  # it arrived last
    assert sorted(ingestion.run(config).ingested) == ["[2026-12] export.csv", "dataset2.csv"]
    training.run(config)
    scoring.run(config)
    assert releases.run(config).ingested_files() == ["dataset2.csv", "[2026-12] export.csv"]


@pytest.mark.parametrize(
    ("name", "shown", "reason"),
    [
        (b"caf\xe9.csv", "caf\\xe9.csv", "its name is not UTF-8 text"),
        (b"two\nlines.csv", "two\\nlines.csv", "its name holds a line break"),
    ],
)
def test_a_file_whose_name_cannot_be_recorded_is_rejected_and_the_rest_ingested(
    config_path: Path, tmp_path: Path, name: bytes, shown: str, reason: str
) -> None:
    config = load_config(config_path)
    os.link(config.input_folder / "dataset1.csv", os.fsencode(config.input_folder) + b"/" + name)
    log = tmp_path / "cron.log"
    result = run_script(
        "fullprocess.py", "--config", str(config_path), "--log-file", str(log), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    last = log.read_text().splitlines()[-1]
    assert "WARNING: first model deployed: release " in last
    assert "; 1 file rejected at the last ingestion; action: Fix or remove" in last
    assert f"{shown}: rejected: {reason}" in log.read_text()
    assert releases.current_release(config.deployment_folder).ingested_files() == [
        "dataset1.csv",
        "dataset2.csv",
    ]
    again = run_script("fullprocess.py", "--config", str(config_path), cwd=tmp_path)
    assert again.stdout.startswith("WARNING: no new data;"), "the rejection is remembered"
