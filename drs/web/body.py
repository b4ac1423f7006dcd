"""A /prediction request body: read as strict JSON, then its fields and records checked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from drs.config import FEATURES, ID_COLUMN, MAX_ID_CHARS
from drs.datarules import CellError, cell_number, id_too_long, value_kind
from drs.web.shared import ApiError

BODY_FIELDS = ("dataset_path", "records", "top", "explain")


@dataclass(frozen=True)
class PredictionRequest:
    """A checked /prediction body: exactly one of dataset_path and records; top, explain."""

    dataset_path: str | None
    records: list[Any] | None
    top: int | None
    explain: bool = False


def parse_prediction_request(body: Any, max_records: int) -> PredictionRequest:
    """Check the shape of a /prediction body; raises ApiError 400 (413 for too many records)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object, found {value_kind(body)}")
    unknown = [key for key in body if key not in BODY_FIELDS]
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))}; "
            "expected 'dataset_path' or 'records', and optionally 'top' and 'explain'",
        )
    has_path, has_records = "dataset_path" in body, "records" in body
    if has_path == has_records:
        raise ApiError(
            400, "give exactly one of 'dataset_path' and 'records'" + (", not both" * has_path)
        )
    path, records, top = body.get("dataset_path"), body.get("records"), body.get("top")
    if has_path and (not isinstance(path, str) or not path.strip()):
        raise ApiError(
            400, "'dataset_path' must be a non-empty string (a path relative to the config folder)"
        )
    if has_records:
        if not isinstance(records, list) or not records:
            raise ApiError(400, "'records' must be a non-empty list of objects")
        if len(records) > max_records:
            raise ApiError(413, f"too many records ({len(records)}); at most {max_records}")
    if "top" in body and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
        raise ApiError(400, f"'top' must be a whole number >= 1, found {value_kind(top)}")
    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise ApiError(400, f"'explain' must be true or false, found {value_kind(explain)}")
    return PredictionRequest(path, records, top, explain)


def records_features(records: list[Any]) -> tuple[list[list[float]], list[str | None]]:
    """The feature rows and corporation ids of API records, checked by the data rules.

    Every record names every feature (null is a missing value, filled by the model);
    each cell is checked as a file's cell is, with the same messages; corporation is
    optional text; other keys are ignored. Plain Python: pandas would cost more than
    the model for a few records.
    """
    rows, corporations = [], []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ApiError(400, f"records[{index}]: expected an object, found {value_kind(record)}")
        missing = [column for column in FEATURES if column not in record]
        if missing:
            raise ApiError(
                400, f"records[{index}]: missing column(s) {', '.join(map(repr, missing))}"
            )
        try:
            rows.append([cell_number(column, record[column]) for column in FEATURES])
        except CellError as error:
            raise ApiError(400, f"records[{index}]: {error}") from None
        corporation = record.get(ID_COLUMN)
        if corporation is not None and not isinstance(corporation, str):
            raise ApiError(
                400,
                f"records[{index}]: column '{ID_COLUMN}' must be text or null, "
                f"found {value_kind(corporation)}",
            )
        if corporation is not None and len(corporation) > MAX_ID_CHARS:
            raise ApiError(400, f"records[{index}]: {id_too_long(len(corporation))}")
        corporations.append(corporation)
    return rows, corporations


def read_json_body() -> Any:
    """The request's JSON body; ApiError 400 for another content type or invalid JSON."""
    if not request.is_json:
        raise ApiError(400, "expected a JSON body (Content-Type: application/json)")
    data = request.get_data(cache=False)  # a Content-Length over the limit: 413 from werkzeug
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body has no Content-Length: werkzeug stops reading at the limit and
    # says nothing, so a body cut there would pass. One more byte tells. Only then: past
    # a Content-Length, werkzeug's own server would wait for the client's next request.
    if (
        request.content_length is None
        and len(data) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    announced = request.content_length
    if announced is not None and len(data) < announced:  # the client stopped sending
        raise ApiError(
            400, f"body ended after {len(data)} of the {announced} bytes of its Content-Length"
        )

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed in JSON")

    try:
        value = json.loads(data, parse_constant=no_constants)
    except RecursionError:
        raise ApiError(400, "body is not valid JSON (nested too deeply)") from None
    except ValueError as error:
        raise ApiError(400, f"body is not valid JSON ({error})") from None
    if _SURROGATE_ESCAPE.search(data) and _has_lone_surrogate(value):
        raise ApiError(
            400, "body is not valid JSON (a \\u escape names half of a surrogate pair alone)"
        )
    return value


# Only a \uD800-\uDFFF escape can put a lone surrogate into a string: raw bytes of one
# are not UTF-8, which the parser refuses. A pair of them is a valid character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in value (keys too) holds a surrogate that is not UTF-8."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
