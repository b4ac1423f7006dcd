"""What a data run measures of the deployed model and the data, beside the drift tests.

The model's figures on the new rows (measured where labelled, estimated elsewhere),
feature drift of the new files against its training data, and whether testdata.csv
still represents the clients (the drift checks lean on it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import drift
from drs.clock import utc_now
from drs.config import FEATURES, TARGET, Config

if TYPE_CHECKING:
    import pandas as pd

    from drs.history import History
    from drs.releasefolder import Release

logger = logging.getLogger(__name__)


class Found(NamedTuple):
    """What the deployed model does on the new rows, each part None when no row is of its kind."""

    measured: drift.Measured | None  # on the labelled rows
    on_labelled: drift.Measured | None  # estimated there, the labels set aside
    exits: drift.DriftVerdict | None  # the exits there, against those the model expected
    estimate: drift.Measured | None  # estimated on the rows without labels

    def figures(self) -> dict[str, dict[str, Any] | None]:
        """As the run's record keeps them."""
        return {
            "new_files": self.measured._asdict() if self.measured else None,
            "estimated": self.estimate._asdict() if self.estimate else None,
            "estimated_on_labelled": self.on_labelled._asdict() if self.on_labelled else None,
        }


class Judge:
    """The deployed model's figures on some rows, its probabilities calibrated as its card says.

    expected: the card's expected performance (None when not recorded); its calibration
    map turns the model's probabilities into the ones the estimates use.
    """

    def __init__(self, model: Any, expected: dict[str, Any] | None) -> None:
        self.model = model
        self.expected = expected
        self.calibration = (expected or {}).get("calibration")

    @classmethod
    def of(cls, release: Release) -> Judge:
        """The release's model, judged as its model card says."""
        expected = release.model_card().get("expected")
        return cls(release.load_model(), expected if isinstance(expected, dict) else None)

    def probabilities(self, rows: pd.DataFrame) -> Any:
        return self.model.predict_proba(rows[list(FEATURES)])[:, 1]

    def estimated(self, probabilities: Any) -> drift.Measured:
        """The F1 the model expects of itself on rows it gave these probabilities."""
        chance = drift.calibrated(probabilities, self.calibration)
        return drift.estimated(chance, probabilities > 0.5)

    def estimate(self, rows: pd.DataFrame) -> drift.Measured:
        """The F1 the model expects of itself on rows, without their labels."""
        return self.estimated(self.probabilities(rows))

    def new_rows(self, rows: pd.DataFrame) -> Found:
        """Measured on the labelled rows, estimated on the others."""
        labelled = rows[rows[TARGET].notna()]
        unlabelled = rows[rows[TARGET].isna()]
        measured = on_labelled = exits = None
        if len(labelled):
            actual = labelled[TARGET].astype(int)
            probabilities = self.probabilities(labelled)
            measured = drift.realised(actual, probabilities > 0.5)
            on_labelled = self.estimated(probabilities)
            exits = drift.exits(actual, probabilities)
        estimate = self.estimate(unlabelled) if len(unlabelled) else None
        return Found(measured, on_labelled, exits, estimate)


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
    judge = Judge.of(release)
    chance = judge.probabilities(labelled)
    on_test = drift.realised(labelled[TARGET].astype(int), chance > 0.5)
    reason = drift.stale_test_data(on_test, judge.expected, judge.estimated(chance))
    if reason is not None:
        logger.warning("%s: %s", drift.STALE_TEST_DATA, reason)
    return reason
