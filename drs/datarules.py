"""The data rules, defined once for every path that takes data: CSV files, DataFrames, JSON."""

from __future__ import annotations

import logging
import math
import numbers
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

from drs.config import COLUMNS, FEATURES, ID_COLUMN, MAX_ID_CHARS, TARGET
from drs.errors import DataError
from drs.files import atomic_path

logger = logging.getLogger(__name__)


# DataFrames handed to the functions, and the API's JSON records. The same bad value
# gets the same verdict and the same message on each; only where it is ("line 4",
# "row 3", "records[2]") differs. Each value rule is written with operators that work
# on one number and on a numpy array alike, so the fast paths apply it whole.


def _is_feature_value(value: Any) -> Any:
    return (value >= 0) & (value < math.inf)


def _is_target_value(value: Any) -> Any:
    return (value == 0) | (value == 1)


VALUE_RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    **{feature: (_is_feature_value, "must be a finite number >= 0") for feature in FEATURES},
    TARGET: (_is_target_value, "must be 0 or 1"),
}
# Numeric text as the CSV reader parses it: decimal or exponent notation, with spaces
# around; nan and inf are numbers too (that then break the value rules). Only an empty
# cell is missing: NA, NULL and the like are text.
_NUMBER_TEXT = re.compile(
    r"[ \t]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)[ \t]*",
    re.IGNORECASE | re.ASCII,
)


class CellError(ValueError):
    """A cell breaks a data rule; the message says which column, the rule and the value."""


def rule_break(column: str, number: float) -> str:
    """The message for a number that breaks column's value rule."""
    return f"column '{column}' {VALUE_RULES[column][1]}, found {number:g}"


def cell_number(column: str, value: Any) -> float:
    """One cell of a numeric column, checked by the data rules: its number, NaN when empty.

    value is what a path holds: None or a float NaN (empty), a number, or text (a CSV
    cell, a JSON string). Raises CellError saying what is wrong.
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        if not _NUMBER_TEXT.fullmatch(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise CellError(f"column '{column}' must be a number, found {shown!r}")
        number = float(value)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CellError(f"column '{column}' must be a number, found {value_kind(value)}")
    else:
        try:
            number = float(value)
        except OverflowError:  # a whole number beyond any float
            huge: Any = value  # numbers.Real promises no comparison; a whole number has one
            number = math.inf if huge > 0 else -math.inf
        if math.isnan(number):  # a DataFrame's empty cell, not text that says nan
            return math.nan
    if not VALUE_RULES[column][0](number):
        raise CellError(rule_break(column, number))
    return number


def value_kind(value: Any) -> str:
    """What kind of value a cell holds, for messages ('a boolean', 'a list', ...)."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def first_rule_break(
    column: str, values: np.ndarray, empty: np.ndarray | None = None
) -> int | None:
    """Index of the first value of a numeric column that breaks its rule, else None.

    Empty cells pass: those marked in `empty`, or without it, NaN (as pandas has them).
    """
    import numpy as np

    is_valid, _ = VALUE_RULES[column]
    bad = ~is_valid(values) & ~(np.isnan(values) if empty is None else empty)
    return int(bad.argmax()) if bad.any() else None


def id_too_long(length: int) -> str:
    return (
        f"{ID_COLUMN} is {length:,} characters long; a client id has at most "
        f"{MAX_ID_CHARS} characters"
    )


def check_frame(frame: pd.DataFrame, source: str, require_target: bool = False) -> pd.DataFrame:
    """Check an in-memory table like a file: columns present, cells by the data rules.

    Returns the features (and the target when required) as float columns, plus
    corporation when present. Raises DataError naming source, the row and the problem.
    """
    import numpy as np
    import pandas as pd

    required = list(FEATURES) + ([TARGET] if require_target else [])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
    result = pd.DataFrame(index=frame.index)
    if ID_COLUMN in frame.columns:
        ids = frame[ID_COLUMN]
        lengths = ids.map(lambda cell: len(cell) if isinstance(cell, str) else 0)
        if len(lengths) and lengths.max() > MAX_ID_CHARS:
            bad = int(lengths.to_numpy().argmax())
            raise DataError(f"{source}: row {bad}: {id_too_long(int(lengths.iloc[bad]))}")
        result[ID_COLUMN] = ids
    for column in required:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            broken = first_rule_break(column, values)
            if broken is not None:
                raise DataError(f"{source}: row {broken}: {rule_break(column, values[broken])}")
        else:
            values = np.empty(len(series))
            for position, cell in enumerate(series.tolist()):
                try:
                    values[position] = cell_number(column, None if cell is pd.NA else cell)
                except CellError as error:
                    raise DataError(f"{source}: row {position}: {error}") from None
        result[column] = values
    return result


# Longest header line read; a longer one is refused rather than read into memory whole.
MAX_HEADER_BYTES = 64 << 20
ARROW_BLOCK_BYTES = 1 << 20
_ARROW_CONVERSION_ERROR = re.compile(r"CSV conversion error to \w+")
_ARROW_RAGGED_ROW = re.compile(r"Expected \d+ columns, got \d+")


def read_table(path: Path, require_target: bool = True) -> pa.Table:
    """Read and validate one dataset CSV as an Arrow table with the columns in order.

    Raises DataError naming the file, the problem and the line where it is known.
    The target column is optional when require_target is False (data to predict).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    name = path.name
    header, header_bytes = _read_header(path)
    required = list(COLUMNS) if require_target else list(COLUMNS[:-1])
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(map(repr, missing))}")
    duplicated = sorted({c for c in header if c in COLUMNS and header.count(c) > 1})
    if duplicated:
        raise DataError(f"{name}: column(s) {', '.join(map(repr, duplicated))} appear twice")
    extra = [column for column in header if column not in COLUMNS]
    if extra:
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        logger.info(
            "%s: ignoring extra column(s) %s%s", name, ", ".join(map(repr, extra[:10])), more
        )
    wanted = [column for column in COLUMNS if column in header]
    types = {ID_COLUMN: pa.string(), **{column: pa.float64() for column in wanted[1:]}}
    try:
        # The header as read above (stripped, BOM removed) names the columns, so a
        # header like "corporation, exited" does not lose its columns to the spaces.
        # Only an empty cell is missing (Arrow would also take NA, NULL, nan, ...).
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(
                column_names=header,
                skip_rows=1,
                block_size=max(ARROW_BLOCK_BYTES, 2 * header_bytes),
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=wanted, null_values=[""]
            ),
        )
    except pa.ArrowInvalid as error:
        raise DataError(f"{name}: {_explain_arrow_error(path, str(error))}") from None
    if table.num_rows == 0:
        raise DataError(f"{name}: no data rows (header only)")
    lengths = pc.utf8_length(table.column(ID_COLUMN)).fill_null(0).to_numpy()
    too_long = lengths > MAX_ID_CHARS
    if too_long.any():
        bad = int(too_long.argmax())
        raise DataError(f"{name}: line {_line_of_row(path, bad)}: {id_too_long(int(lengths[bad]))}")
    for column in wanted[1:]:
        chunked = table.column(column)
        values = chunked.to_numpy()
        broken = first_rule_break(column, values, chunked.is_null().to_numpy())
        if broken is not None:
            raise DataError(
                f"{name}: line {_line_of_row(path, broken)}: {rule_break(column, values[broken])}"
            )
    return table


def _line_of_row(path: Path, index: int) -> int:
    """The line where data row `index` starts, counted as Arrow does (blank lines skipped)."""
    for seen, (line, _) in enumerate(_data_rows(path)):
        if seen == index:
            return line
    return index + 2


def _data_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line where it starts, fields) of each non-blank row after the header.

    The slow way, for error messages only: Arrow's CSV errors do not say the line.
    Bytes that are not UTF-8 come through as surrogates (see _is_utf8), not as a crash.
    """
    import csv

    csv.field_size_limit(MAX_HEADER_BYTES)  # a cell may be as long as a header line
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        rows = csv.reader(handle)
        try:
            next(rows, None)
            start = rows.line_num + 1
            for row in rows:
                if row:
                    yield start, row
                start = rows.line_num + 1
        except csv.Error as error:
            raise DataError(
                f"{path.name}: line {rows.line_num}: not parseable as CSV ({error})"
            ) from None


def _is_utf8(fields: list[str]) -> bool:
    try:
        "".join(fields).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Files up to this size are parsed here, many into one Arrow table: Arrow's CSV reader
# costs about a millisecond a file however small the file, minutes for a year of them.
SMALL_FILE_BYTES = 16 * 1024


class _AskReadTable(Exception):
    """parse_small cannot be sure of a file: read_table decides."""


def parse_small(data: bytes) -> dict[str, list[Any]] | None:
    """A small file's columns (all of COLUMNS) as read_table reads them, or None to ask it.

    Only plain files take this path: UTF-8 without quotes or NUL bytes, a header with
    every column once and no other, rows with as many fields as the header, every numeric cell
    empty or a number the data rules accept (cell_number, the one definition), ids
    within their length. Anything else is left to read_table, which says what is
    wrong and where; so both paths accept the same files and read the same values.
    """
    try:
        return _parse_plain(data.decode("utf-8-sig"))
    except (_AskReadTable, CellError, UnicodeDecodeError):
        return None


def _parse_plain(text: str) -> dict[str, list[Any]]:
    import csv

    if '"' in text or "\0" in text or "\r" in text:
        raise _AskReadTable
    lines = csv.reader(text.split("\n"))
    header = [column.strip() for column in next(lines, [])]
    if sorted(header) != sorted(COLUMNS):  # extra columns: read_table says which in the log
        raise _AskReadTable
    where = {column: header.index(column) for column in COLUMNS}
    columns: dict[str, list[Any]] = {column: [] for column in COLUMNS}
    for row in lines:
        if not row:
            continue
        if len(row) != len(header):
            raise _AskReadTable
        corporation = row[where[ID_COLUMN]]
        if len(corporation) > MAX_ID_CHARS:
            raise _AskReadTable
        columns[ID_COLUMN].append(corporation)
        for column in COLUMNS[1:]:
            cell = row[where[column]]
            if cell and not cell.strip():
                raise _AskReadTable  # blank but not empty: read_table's to judge
            columns[column].append(cell_number(column, cell) if cell else None)
    if not columns[ID_COLUMN]:
        raise _AskReadTable
    return columns


def table_of(columns: dict[str, list[Any]]) -> pa.Table:
    """An Arrow table with read_table's column types from parsed columns (parse_small)."""
    import pyarrow as pa

    types = {ID_COLUMN: pa.string(), **{column: pa.float64() for column in COLUMNS[1:]}}
    return pa.table({column: pa.array(columns[column], types[column]) for column in COLUMNS})


def read_many(paths: list[Path]) -> pd.DataFrame:
    """The rows of several dataset files in order, as one DataFrame (small ones parsed fast)."""
    return _read_together(paths)[0]


def read_each(paths: list[Path]) -> list[pd.DataFrame]:
    """Each file's rows as a DataFrame of its own: slices of one read (read_many's)."""
    frame, counts = _read_together(paths)
    slices, start = [], 0
    for count in counts:
        slices.append(frame.iloc[start : start + count].reset_index(drop=True))
        start += count
    return slices


def _read_together(paths: list[Path]) -> tuple[pd.DataFrame, list[int]]:
    """The rows of paths in order as one DataFrame, and how many rows each file gave."""
    import pyarrow as pa

    tables, counts = [], []
    pending: dict[str, list[Any]] = {column: [] for column in COLUMNS}
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read(SMALL_FILE_BYTES + 1)
        parsed = parse_small(data) if len(data) <= SMALL_FILE_BYTES else None
        if parsed is not None:
            for column in COLUMNS:
                pending[column] += parsed[column]
            counts.append(len(parsed[ID_COLUMN]))
            continue
        if pending[ID_COLUMN]:
            tables.append(table_of(pending))
            pending = {column: [] for column in COLUMNS}
        table = read_table(path)
        tables.append(table)
        counts.append(table.num_rows)
    if pending[ID_COLUMN]:
        tables.append(table_of(pending))
    return pa.concat_tables(tables).to_pandas(), counts


def read_dataset(path: Path, require_target: bool = True) -> pd.DataFrame:
    """Read and validate one dataset CSV as a DataFrame: corporation, features, target."""
    return read_table(path, require_target).to_pandas()


def _read_header(path: Path) -> tuple[list[str], int]:
    """The header's column names (stripped, BOM removed) and its length in bytes."""
    import csv

    csv.field_size_limit(MAX_HEADER_BYTES)
    with open(path, "rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES + 1)
        if len(first) > MAX_HEADER_BYTES:
            raise DataError(f"{path.name}: line 1 is over {MAX_HEADER_BYTES >> 20} MiB long")
        if not first.strip():
            if any(line.strip() for line in handle):
                raise DataError(f"{path.name}: line 1 is blank; the header row must come first")
            raise DataError(f"{path.name}: empty file")
        if b"\0" in first:
            raise DataError(f"{path.name}: not a CSV file (binary content)")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{path.name}: line 1: not UTF-8 text") from None
        if not any(line.strip() for line in handle):
            raise DataError(f"{path.name}: no data rows (header only)")
    return [column.strip() for column in next(csv.reader([text]))], len(first)


def _explain_arrow_error(path: Path, message: str) -> str:
    """Arrow's CSV errors do not say the line; find the first bad row with a slow scan.

    Rows are checked in file order with the data rules, so the first problem of the
    file is the one reported, whichever Arrow met first.
    """
    header, _ = _read_header(path)
    numeric = [(i, c) for i, c in enumerate(header) if c in COLUMNS and c != ID_COLUMN]
    ragged = bool(_ARROW_RAGGED_ROW.search(message))
    for line, row in _data_rows(path):
        if not _is_utf8(row):
            return f"line {line}: not UTF-8 text"
        if ragged and len(row) != len(header):
            return f"line {line}: {len(row)} field(s) where the header has {len(header)}"
        for index, column in numeric:
            try:
                cell_number(column, row[index] if index < len(row) else "")
            except CellError as error:
                return f"line {line}: {error}"
    first_line = message.strip().splitlines()[0] if message.strip() else "unreadable"
    return f"not parseable as CSV ({first_line})"


def write_table_csv(table: pa.Table, target: Path) -> None:
    """Write an Arrow table as CSV, atomically (Arrow's writer is several times pandas')."""
    import pyarrow.csv as pa_csv

    with atomic_path(target) as tmp:
        pa_csv.write_csv(table, tmp)
