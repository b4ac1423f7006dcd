"""The checks a data run makes beside the model-drift test, each recorded or logged.

Feature drift of the new files against the deployed model's training data, and
whether testdata.csv still represents the clients (the drift checks lean on it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from drs import drift
from drs.clock import utc_now
from drs.config import FEATURES, TARGET, Config

if TYPE_CHECKING:
    import pandas as pd

    from drs.history import History
    from drs.releasefolder import Release

logger = logging.getLogger(__name__)


def measure_data_drift(
    history: History, reference: Any, current: pd.DataFrame, label: str
) -> dict[str, Any]:
    """Feature drift of the new files against the deployed model's training data; recorded."""
    frame, reference_label = reference
    measured = drift.measure(frame, reference_label, current, label)
    now = utc_now()
    for feature, found in measured["features"].items():
        history.insert(
            "data_drift",
            {
                "recorded_at": now,
                "feature": feature,
                "measure": drift.FEATURE_DRIFT_MEASURE,
                "value": found["value"],
                "threshold": found["threshold"],
                "drifted": int(found["drifted"]),
                "reference": reference_label,
                "current": label,
            },
        )
    logger.info(
        "data drift (%s, threshold %g) of %s against the %s: %s",
        drift.FEATURE_DRIFT_MEASURE,
        drift.FEATURE_DRIFT_THRESHOLD,
        label,
        reference_label,
        ", ".join(
            f"{feature} {found['value']:.3f} {'DRIFTED' if found['drifted'] else 'ok'}"
            if found["value"] is not None
            else f"{feature} unknown"
            for feature, found in measured["features"].items()
        ),
    )
    return measured


def check_test_data(config: Config, release: Release, new_rows: pd.DataFrame | None) -> str | None:
    """Whether testdata.csv still represents the clients; the reason when it does not.

    Logged as a warning with what to do; the outcome line, the report and the page say it.
    """
    if new_rows is None:
        return None
    from drs.datarules import read_dataset

    test = read_dataset(config.test_data_path)
    labelled = test[test[TARGET].notna()]
    model = release.load_model()
    chance = model.predict_proba(labelled[list(FEATURES)])[:, 1]
    on_test = drift.realised(labelled[TARGET].astype(int), chance > 0.5)
    expected = release.model_card().get("expected")
    known = expected if isinstance(expected, dict) else None
    calibration = (known or {}).get("calibration")
    estimate = drift.estimated(drift.calibrated(chance, calibration), chance > 0.5)
    reason = drift.stale_test_data(on_test, known, estimate)
    if reason is not None:
        logger.warning("%s: %s", drift.STALE_TEST_DATA, reason)
    return reason
