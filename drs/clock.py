"""Time stamps as the history records them: UTC, ISO 8601, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_stamp(stamp: Any) -> datetime | None:
    """A recorded time stamp as an aware UTC datetime (no zone: UTC); None if it is not one."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
