"""The data rules have one home: a file, a DataFrame and API records give the same verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    HEADER,
    deploy_workspace,
    make_app,
)

import ingestion
from drs.config import (
    COLUMNS,
    FEATURES,
    MAX_ID_CHARS,
    TARGET,
    Config,
)
from drs.datarules import (
    VALUE_RULES,
    CellError,
    cell_number,
    check_frame,
    parse_small,
    read_table,
    table_of,
)
from drs.errors import DataError

GOOD_ROW = {"corporation": "abcd", **dict.fromkeys(FEATURES, "1"), "exited": "0"}

# (column, the cell as CSV text, the same value as JSON text, the problem every path names)
BAD_CELLS = [
    ("number_of_employees", "-5", "-5", "must be a finite number >= 0, found -5"),
    ("number_of_employees", "-0.5", '"-0.5"', "must be a finite number >= 0, found -0.5"),
    ("lastmonth_activity", "abc", '"abc"', "must be a number, found 'abc'"),
    ("lastmonth_activity", "NA", '"NA"', "must be a number, found 'NA'"),
    ("lastmonth_activity", "N/A", '"N/A"', "must be a number, found 'N/A'"),
    ("lastyear_activity", "NULL", '"NULL"', "must be a number, found 'NULL'"),
    ("lastyear_activity", "#N/A", '"#N/A"', "must be a number, found '#N/A'"),
    ("lastyear_activity", "1_000", '"1_000"', "must be a number, found '1_000'"),
    ("lastyear_activity", "0x10", '"0x10"', "must be a number, found '0x10'"),
    ("lastyear_activity", "nan", '"nan"', "must be a finite number >= 0, found nan"),
    ("lastyear_activity", "inf", '"inf"', "must be a finite number >= 0, found inf"),
    ("lastyear_activity", "1e400", "1e400", "must be a finite number >= 0, found inf"),
    ("exited", "2", "2", "must be 0 or 1, found 2"),
    ("exited", "0.5", "0.5", "must be 0 or 1, found 0.5"),
    ("exited", "yes", '"yes"', "must be a number, found 'yes'"),
    ("exited", "NaN", '"NaN"', "must be 0 or 1, found nan"),
]
# Cells every path accepts: (column, CSV text, JSON text, the number it stands for or None).
GOOD_CELLS = [
    ("lastmonth_activity", "", "null", None),
    ("lastmonth_activity", " 7 ", '" 7 "', 7.0),
    ("lastyear_activity", "1e3", "1e3", 1000.0),
    ("lastyear_activity", "+2", '"+2"', 2.0),
    ("number_of_employees", "0", "0", 0.0),
]


def file_verdict(tmp_path: Path, column: str, text: str) -> str | float | None:
    """What reading a file whose line 3 holds text in column says: the problem or the number."""
    bad = {**GOOD_ROW, column: text}
    lines = [",".join(COLUMNS), ",".join(GOOD_ROW.values()), ",".join(bad.values())]
    path = tmp_path / "cells.csv"
    path.write_text("\n".join(lines) + "\n")
    try:
        table = read_table(path)
    except DataError as error:
        prefix = "cells.csv: line 3: "
        assert str(error).startswith(prefix), error
        return str(error).removeprefix(prefix)
    value = table.column(column)[1].as_py()
    return value


def frame_verdict(column: str, value: object) -> str | float | None:
    """What check_frame says of a DataFrame whose row 1 holds value in column."""
    frame = pd.DataFrame([GOOD_ROW, {**GOOD_ROW, column: value}])
    try:
        checked = check_frame(frame, "data", require_target=True)
    except DataError as error:
        prefix = "data: row 1: "
        assert str(error).startswith(prefix), error
        return str(error).removeprefix(prefix)
    number = checked[column].iloc[1]
    return None if pd.isna(number) else float(number)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> object:
    return make_app(deploy_workspace(tmp_path_factory.mktemp("rules") / "ws", 300)).test_client()


def api_verdict(client: object, column: str, json_text: str) -> str | None:
    """The problem /prediction names for a record whose column holds json_text, else None."""
    good = {feature: 1 for feature in FEATURES}
    bad = json.dumps(good)[:-1] + f', "{column}": {json_text}}}'  # raw JSON text
    body = f'{{"records": [{json.dumps(good)}, {bad}]}}'
    response = client.post("/prediction", data=body, content_type="application/json")
    if response.status_code == 200:
        return None
    assert response.status_code == 400, response.get_json()
    message = response.get_json()["error"]
    assert message.startswith("records[1]: "), message
    return message.removeprefix("records[1]: ")


@pytest.mark.parametrize(("column", "text", "json_text", "problem"), BAD_CELLS)
def test_a_bad_value_gets_the_same_verdict_on_every_path(
    tmp_path: Path, client: object, column: str, text: str, json_text: str, problem: str
) -> None:
    expected = f"column '{column}' {problem}"
    assert file_verdict(tmp_path, column, text) == expected
    assert frame_verdict(column, text) == expected
    parsed = json.loads(json_text)
    if not isinstance(parsed, str):  # a number in a numeric column, as pandas holds it
        assert frame_verdict(column, float(parsed)) == expected
    if column in FEATURES:  # records carry features only; other keys are ignored
        assert api_verdict(client, column, json_text) == expected


@pytest.mark.parametrize(("column", "text", "json_text", "number"), GOOD_CELLS)
def test_a_good_value_is_accepted_on_every_path(
    tmp_path: Path, client: object, column: str, text: str, json_text: str, number: float | None
) -> None:
    assert file_verdict(tmp_path, column, text) == number
    assert frame_verdict(column, text) == number
    assert api_verdict(client, column, json_text) is None


def test_one_rule_per_column_and_it_works_on_numbers_and_arrays() -> None:
    import numpy as np

    for column in (*FEATURES, TARGET):
        is_valid, _ = VALUE_RULES[column]
        values = np.array([0.0, 1.0, 2.0, -1.0, np.inf, np.nan])
        assert is_valid(values).tolist() == [bool(is_valid(float(v))) for v in values]


def test_the_docs_say_what_the_rules_do_with_nan() -> None:
    """The docs once called nan text; the reader takes it as a number that breaks a rule."""
    rules = (Path(__file__).resolve().parent.parent / "docs" / "data.md").read_text()
    assert "`nan` and `inf` are read as\n  numbers" in rules
    with pytest.raises(CellError, match="must be a finite number >= 0, found nan"):
        cell_number("lastyear_activity", "nan")


def test_a_client_id_over_the_longest_allowed_is_refused_on_every_path(
    tmp_path: Path, client: object
) -> None:
    too_long = "x" * (MAX_ID_CHARS + 1)
    expected = (
        f"corporation is {MAX_ID_CHARS + 1} characters long; a client id has at most "
        f"{MAX_ID_CHARS} characters"
    )
    assert file_verdict(tmp_path, "corporation", too_long) == expected
    assert frame_verdict("corporation", too_long) == expected
    assert api_verdict(client, "corporation", json.dumps(too_long)) == expected
    longest = "x" * MAX_ID_CHARS
    assert api_verdict(client, "corporation", json.dumps(longest)) is None
    frame = pd.DataFrame([GOOD_ROW, {**GOOD_ROW, "corporation": longest}])
    assert check_frame(frame, "data")["corporation"].iloc[1] == longest


SMALL_FILES = [
    "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
    "abcd,1,2,3,0\nefgh,,5e2, 7 ,1\n\n,0.5,+2,.5,\n",
    "\ufeffexited, corporation ,number_of_employees,lastyear_activity,lastmonth_activity\n"
    "1, spaced id ,3,2,1\n0,x,1E3,0,0",
    "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
    "ünïcödé,1,2,3,0\n",
]


@pytest.mark.parametrize("text", SMALL_FILES)
def test_small_files_parsed_fast_read_as_the_csv_reader_reads_them(
    tmp_path: Path, text: str
) -> None:
    """Ingestion parses small files itself (Arrow costs a millisecond a file): same values."""
    path = tmp_path / "small.csv"
    path.write_text(text, encoding="utf-8")
    parsed = parse_small(path.read_bytes())
    assert parsed is not None
    assert table_of(parsed).equals(read_table(path))


@pytest.mark.parametrize(
    "text",
    [
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        'abcd,1,2,3,"0"\n',  # quotes: the reader's to parse
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        "abcd,1,2,3,7\n",  # a rule broken: the reader says where
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited,x\n"
        "abcd,1,2,3,0,y\n",  # an extra column: the reader logs it
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        "abcd,1,2,3\n",  # a short row
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        "abcd,1,  ,3,0\n",  # blank but not empty
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n",
    ],
)
def test_anything_unusual_in_a_small_file_is_left_to_the_csv_reader(text: str) -> None:
    assert parse_small(text.encode()) is None


@pytest.mark.parametrize("cell_bytes", [200_000, 3_000_000])
def test_a_huge_cell_rejects_its_file_with_the_line(config: Config, cell_bytes: int) -> None:
    (config.input_folder / "huge.csv").write_text(
        f"{HEADER}\nabcd,1,2,3,0\nbig,{'1' * cell_bytes},2,3,0\nefgh,1,-2,3,0\n"
    )
    result = ingestion.run(config)
    assert result.rejected["huge.csv"] == (
        "line 3: column 'lastmonth_activity' must be a finite number >= 0, found inf"
    )
    assert sorted(result.ingested) == ["dataset1.csv", "dataset2.csv"]
