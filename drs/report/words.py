"""How the report words what it shows: times, counts of a bounded record, expected F1."""

from __future__ import annotations

from typing import Any

from drs import releasefolder


def stamp(recorded: str | None) -> str:
    """A recorded UTC time stamp as people read it: to the second, no T or Z."""
    return recorded[:19].replace("T", " ") if recorded else "unknown"


def more(count: Any, listed: int) -> str:
    """' and N more' when a record kept `listed` names of `count` (a bounded record)."""
    return f" and {count - listed:,} more" if isinstance(count, int) and count > listed else ""


def expected_f1(release: releasefolder.Release) -> str:
    """The F1 the model card expects (cross-validated) with its spread, or 'not recorded'."""
    expected = release.model_card().get("expected") or {}
    if not isinstance(expected.get("f1"), float):
        return "not recorded"
    spread = expected.get("f1_sd", 0.0)
    return f"{expected['f1']:.4f} (spread {spread:.4f} over {expected.get('folds')} folds)"
