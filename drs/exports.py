"""The ranked client list as CSV for a spreadsheet: one format for apicalls.py and the page.

Columns: rank, corporation, risk_percent, band, main_reason, risk_score. Text that a
spreadsheet would run as a formula (a client id starting with '=', say) gets a
leading ' so it stays text.
"""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = ("rank", "corporation", "risk_percent", "band", "main_reason", "risk_score")
# A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """value as a CSV cell a spreadsheet keeps as text: a leading ' if it looks like a formula."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def table_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked client entries (as GET /clients gives them) as rows of the list."""
    return [
        {
            "rank": entry["rank"],
            "corporation": entry.get("corporation") or f"(row {entry.get('row')})",
            "risk_score": entry["risk_score"],
            "band": entry["band"],
            "main_reason": entry["drivers"][0]["sentence"] if entry.get("drivers") else "",
        }
        for entry in entries
    ]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows of the list as CSV text, a header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row["rank"],
                spreadsheet_text(row["corporation"]),
                f"{row['risk_score'] * 100:.1f}",
                row["band"],
                spreadsheet_text(row["main_reason"]),
                repr(row["risk_score"]),
            ]
        )
    return buffer.getvalue()
