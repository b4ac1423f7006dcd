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


def readable(stamp: Any) -> str:
    """A recorded stamp as a person reads it: '6 Dec 06:38 UTC' ('unknown' when not one)."""
    when = parse_stamp(stamp)
    return f"{when.day} {when:%b %H:%M} UTC" if when else "unknown"
