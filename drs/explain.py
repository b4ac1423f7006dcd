"""Drivers in a manager's words: each feature's value against the typical one, and its effect."""

from __future__ import annotations

import logging
import math
from typing import Any

from drs.config import FEATURES

logger = logging.getLogger(__name__)


# The feature names as a person says them.
FEATURE_WORDS = {
    "lastmonth_activity": "activity last month",
    "lastyear_activity": "activity last year",
    "number_of_employees": "number of employees",
}


# A value at most this share of the typical one is "far below", at least its inverse "far above".
FAR = 0.5


def explain(values: Any, effects: Any, medians: Any) -> list[dict[str, Any]]:
    """One client's drivers (feature, value, typical value, effect, phrase), largest first."""
    drivers: list[dict[str, Any]] = []
    for feature, value, effect, typical in zip(FEATURES, values, effects, medians, strict=True):
        known = not math.isnan(value)
        drivers.append(
            {
                "feature": feature,
                "value": float(value) if known else None,
                "typical": float(typical),
                "effect": float(effect),
                "phrase": phrase(
                    feature, float(value) if known else None, float(typical), float(effect)
                ),
                "sentence": sentence(
                    feature, float(value) if known else None, float(typical), float(effect)
                ),
            }
        )
    drivers.sort(key=lambda driver: -abs(driver["effect"]))
    return drivers


def phrase(feature: str, value: float | None, typical: float, effect: float) -> str:
    """What a manager can say on the phone: 'activity last year far below typical (raises risk)'."""
    words = FEATURE_WORDS.get(feature, feature.replace("_", " "))
    if value is None:
        return f"{words} not known (counted as typical)"
    if value == typical:
        where = "typical"
    elif typical > 0 and value <= typical * FAR:
        where = "far below typical"
    elif typical > 0 and value >= typical / FAR:
        where = "far above typical"
    else:
        where = "below typical" if value < typical else "above typical"
    if effect > 0:
        return f"{words} {where} (raises risk)"
    if effect < 0:
        return f"{words} {where} (lowers risk)"
    return f"{words} {where}"


def comparison(value: float, typical: float) -> str:
    """Where value stands against the typical one, in words ('much lower than typical')."""
    if value == typical:
        return "typical"
    if typical > 0 and value <= typical * FAR:
        return "much lower than typical"
    if typical > 0 and value >= typical / FAR:
        return "much higher than typical"
    return "lower than typical" if value < typical else "higher than typical"


def figure(value: float) -> str:
    """A feature value as a manager reads it: 1,234 or 12.5."""
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.1f}"


def sentence(feature: str, value: float | None, typical: float, effect: float) -> str:
    """A driver with the numbers a manager knows.

    'Activity last month 120, typical 265: much lower than typical, which raises the risk'.
    """
    words = FEATURE_WORDS.get(feature, feature.replace("_", " "))
    words = words[:1].upper() + words[1:]
    if value is None:
        return (
            f"{words} not known: counted as typical ({figure(typical)}), "
            "so it does not move the risk"
        )
    where = comparison(value, typical)
    if effect == 0 or where == "typical":
        return f"{words} {figure(value)}, typical {figure(typical)}: it does not move the risk"
    way = "raises" if effect > 0 else "lowers"
    return f"{words} {figure(value)}, typical {figure(typical)}: {where}, which {way} the risk"
