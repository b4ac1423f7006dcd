"""The model itself: how it is built and trained, what it is expected to score, its F1, loading it.

scikit-learn is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drs import drift
from drs.config import FEATURES, TARGET
from drs.errors import DataError, PipelineError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)


def build_model() -> Pipeline:
    """The untrained model with the settings of the original course starter.

    l1_ratio=0 is the pinned scikit-learn's spelling of an L2 penalty; the older
    penalty="l2" is deprecated there and would warn.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    regression = LogisticRegression(
        C=1.0,
        l1_ratio=0.0,
        solver="liblinear",
        tol=1e-4,
        max_iter=100,
        random_state=0,
        fit_intercept=True,
        intercept_scaling=1,
        class_weight=None,
    )
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    return Pipeline([("impute", imputer), ("classify", regression)])


def train(data: pd.DataFrame) -> Pipeline:
    """Fit a new model on data (features and target); rows without a target are left out."""
    labelled = data[data[TARGET].notna()]
    dropped = len(data) - len(labelled)
    if dropped:
        logger.info("left out %d row(s) without a value in '%s'", dropped, TARGET)
    classes = labelled[TARGET].nunique()
    if classes < 2:
        raise DataError(
            f"cannot train: '{TARGET}' needs both 0 and 1 in the data, "
            f"found {classes} class(es) in {len(labelled)} labelled row(s)"
        )
    model = build_model()
    model.fit(labelled[list(FEATURES)], labelled[TARGET].astype(int))
    return model


# Cross-validation of the expected F1: stratified folds, shuffled with a fixed seed.
CV_FOLDS = 5
CV_SEED = 0
# Equal-width bins of predicted probability in the reliability table.
RELIABILITY_BINS = 10


def expected_performance(data: pd.DataFrame) -> dict[str, Any]:
    """How well a model trained on data should do on data like it: its cross-validated F1.

    Stratified CV_FOLDS folds (fewer when a class has fewer rows), seeded: f1 is the
    mean of the folds' F1 and f1_sd their standard deviation. The out-of-fold
    probabilities give the calibration check the estimated F1 relies on: the Brier
    score and a reliability table (mean predicted against observed rate per bin), and
    the calibration map it uses.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    labelled = data[data[TARGET].notna()]
    features = labelled[list(FEATURES)]
    target = labelled[TARGET].astype(int).to_numpy()
    folds = min(CV_FOLDS, int(np.bincount(target, minlength=2).min()))
    if folds < 2:
        return {"f1": None, "reason": "too few rows of a class to cross-validate"}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=CV_SEED)
    probabilities = np.empty(len(target))
    scores = []
    for fitting, held in splitter.split(features, target):
        model = build_model().fit(features.iloc[fitting], target[fitting])
        probabilities[held] = model.predict_proba(features.iloc[held])[:, 1]
        scores.append(drift.realised(target[held], probabilities[held] > 0.5).f1)
    return {
        "f1": float(np.mean(scores)),
        "f1_sd": float(np.std(scores, ddof=1)),
        "folds": folds,
        "rows": len(target),
        "brier": float(np.mean((probabilities - target) ** 2)),
        "reliability": reliability(probabilities, target),
        "calibration": calibration(probabilities, target),
    }


def calibration(probabilities: Any, target: Any) -> dict[str, Any]:
    """The map from the model's probabilities to calibrated ones, for the estimated F1.

    Isotonic regression of the outcomes on the out-of-fold probabilities: increasing,
    piecewise linear, kept as its corner points (rounded, so the card stays small). It
    lives in the model card beside the model, never inside it: the model's predictions,
    its drivers and the fast path do not change.
    """
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        probabilities, target
    )
    points = np.round(np.column_stack([fitted.X_thresholds_, fitted.y_thresholds_]), 4)
    return {
        "method": "isotonic regression on cross-validated probabilities",
        "points": np.unique(points, axis=0).tolist(),
    }


def reliability(probabilities: Any, target: Any) -> list[dict[str, float]]:
    """Per bin of predicted probability: its rows, mean prediction and observed exit rate."""
    import numpy as np

    bins = np.minimum((probabilities * RELIABILITY_BINS).astype(int), RELIABILITY_BINS - 1)
    table = []
    for number in range(RELIABILITY_BINS):
        inside = bins == number
        if inside.any():
            table.append(
                {
                    "from": number / RELIABILITY_BINS,
                    "to": (number + 1) / RELIABILITY_BINS,
                    "rows": int(inside.sum()),
                    "predicted": float(probabilities[inside].mean()),
                    "observed": float(target[inside].mean()),
                }
            )
    return table


def f1_of(model: Any, data: pd.DataFrame) -> float:
    """F1 of model's predictions against data's target; rows without a target are left out."""
    from sklearn.metrics import f1_score

    labelled = data[data[TARGET].notna()]
    if labelled.empty:
        raise DataError(f"no row with a value in '{TARGET}' to score against")
    predictions = model.predict(labelled[list(FEATURES)])
    truth = labelled[TARGET].astype(int)
    return float(f1_score(truth, predictions, zero_division=0.0))


class ModelIntegrityError(PipelineError):
    pass


def load_model(path: Path, expected_sha256: str | None = None) -> Any:
    """Unpickle a model, refusing it first if its bytes do not match expected_sha256.

    Unpickling runs code, so a deployed model is only loaded once its hash matches
    the one recorded when it was deployed.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: model not found") from None
    if expected_sha256 is not None:
        import hashlib

        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ModelIntegrityError(
                f"{path}: SHA-256 {actual[:12]}... does not match the deployed "
                f"{expected_sha256[:12]}...; refusing to load it"
            )
    import pickle

    return pickle.loads(data)
