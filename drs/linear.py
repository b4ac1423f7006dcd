"""The deployed model as arrays: its exact risk and per-feature effects in plain arithmetic.

The model is a median imputer, optional per-feature affine steps (scalers) and a
logistic regression, so its log-odds split exactly into one effect per feature,
coef * (value - training median), around the log-odds of a typical client. A model of
another shape is evaluated by itself (Scorer), and its drivers are said to be unavailable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drs.config import FEATURES
from drs.explain import explain

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)


DRIVERS_UNAVAILABLE = (
    "the deployed model is not a logistic regression after median imputation, so its "
    "drivers cannot be computed exactly"
)


def _affine(step: Any) -> tuple[Callable[[Any], Any], Any, Any] | None:
    """A fitted scaler as (its own transform, multiplier, offset): x' = x * m + b, else None.

    The transform repeats the scaler's arithmetic, so predictions equal the pipeline's;
    the multiplier and offset fold it into the coefficients for the drivers.
    """
    import numpy as np
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean else np.zeros(step.n_features_in_)
        scale = step.scale_ if step.with_std else np.ones(step.n_features_in_)
        return (lambda x: (x - mean) / scale), 1 / scale, -mean / scale
    if isinstance(step, RobustScaler):
        center = step.center_ if step.with_centering else np.zeros(step.n_features_in_)
        scale = step.scale_ if step.with_scaling else np.ones(step.n_features_in_)
        return (lambda x: (x - center) / scale), 1 / scale, -center / scale
    if isinstance(step, MinMaxScaler) and not step.clip:
        return (lambda x: x * step.scale_ + step.min_), step.scale_, step.min_
    if isinstance(step, MaxAbsScaler):
        return (lambda x: x / step.scale_), 1 / step.scale_, np.zeros(step.n_features_in_)
    return None


@dataclass(frozen=True)
class LinearModel:
    """A fitted imputer -> scalers -> logistic regression pipeline as arrays.

    medians fill missing values; transforms are the scalers' own arithmetic; coef and
    intercept are the regression's. coef_folded and intercept_folded are the same
    model over the raw (imputed) features, for exact drivers.
    """

    medians: np.ndarray
    transforms: tuple[Callable[[Any], Any], ...]
    coef: np.ndarray
    intercept: float
    coef_folded: np.ndarray
    intercept_folded: float
    median_floats: tuple[float, ...]  # the medians and coef as Python floats, for one row
    coef_floats: tuple[float, ...]

    @classmethod
    def of(cls, model: Any) -> LinearModel | None:
        """The arrays of model, or None when it has another shape."""
        import numpy as np
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        if not isinstance(model, Pipeline) or len(model.steps) < 2:
            return None
        imputer, *scalers, classifier = (step for _, step in model.steps)
        n = len(FEATURES)
        if not (
            isinstance(imputer, SimpleImputer)
            and imputer.strategy == "median"
            and _is_nan(imputer.missing_values)  # what filled() treats as missing
            and not imputer.add_indicator
            and getattr(imputer, "statistics_", np.empty(0)).shape == (n,)
            and not np.isnan(imputer.statistics_).any()
            and isinstance(classifier, LogisticRegression)
            and list(classifier.classes_) == [0, 1]
            and classifier.coef_.shape == (1, n)
        ):
            return None
        affine = [fitted for fitted in map(_affine, scalers) if fitted is not None]
        if len(affine) < len(scalers):
            return None
        multiplier, offset = np.ones(n), np.zeros(n)
        for _, m, b in affine:  # x -> x*m1 + b1 -> (x*m1 + b1)*m2 + b2 ...
            multiplier, offset = multiplier * m, offset * m + b
        coef = classifier.coef_[0].astype(float)
        intercept = float(classifier.intercept_[0])
        return cls(
            medians=imputer.statistics_.astype(float),
            transforms=tuple(transform for transform, _, _ in affine),
            coef=coef,
            intercept=intercept,
            coef_folded=coef * multiplier,
            intercept_folded=intercept + float(offset @ coef),
            median_floats=tuple(float(median) for median in imputer.statistics_),
            coef_floats=tuple(float(value) for value in coef),
        )

    def filled(self, features: np.ndarray) -> np.ndarray:
        """features with each missing value replaced by its training median."""
        import numpy as np

        return np.where(np.isnan(features), self.medians, features)

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """The model's log-odds of exiting for rows of raw features (NaN = missing)."""
        transformed = self.filled(features)
        for transform in self.transforms:
            transformed = transform(transformed)
        # Feature by feature, not a matrix product: the sum's order, and so its last bit,
        # is then the same whatever the array's memory layout or length.
        log_odds = transformed[:, 0] * self.coef[0]
        for column in range(1, len(self.coef)):
            log_odds = log_odds + transformed[:, column] * self.coef[column]
        return log_odds + self.intercept

    @property
    def typical_log_odds(self) -> float:
        """The log-odds of a client whose every feature is at its training median."""
        return self.intercept_folded + float(self.coef_folded @ self.medians)

    def effects(self, features: np.ndarray) -> np.ndarray:
        """Per row and feature: coef * (value - training median), in log-odds.

        A missing value is filled with the median, so its effect is 0; the effects of a
        row add up to its log-odds minus typical_log_odds.
        """
        return self.coef_folded * (self.filled(features) - self.medians)


class Scorer:
    """The deployed model's predictions and risk, from arrays; its drivers when it is linear."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.linear = LinearModel.of(model)

    def predict_one(self, values: list[float]) -> tuple[int, float]:
        """(0/1 prediction, probability of exiting) of one row of raw features (NaN: missing).

        Plain Python floats for the model without scalers: for one row, numpy's
        per-call cost is larger than the arithmetic.
        """
        linear = self.linear
        if linear is None or linear.transforms:
            import numpy as np

            predictions, risk = self.predict(np.array([values], dtype=float))
            return int(predictions[0]), float(risk[0])
        # The same operations in the same order as log_odds().
        first, *rest = (
            (median if math.isnan(value) else value) * coef
            for value, median, coef in zip(
                values, linear.median_floats, linear.coef_floats, strict=True
            )
        )
        log_odds = first
        for term in rest:
            log_odds += term
        log_odds += linear.intercept
        return int(log_odds > 0), float(expit(log_odds))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(0/1 predictions, probabilities of exiting) for rows of raw features.

        The linear path equals the pipeline's predict and predict_proba: a row is
        predicted to exit when its log-odds are above 0, as LogisticRegression decides.
        """
        import numpy as np

        if self.linear is not None:
            log_odds = self.linear.log_odds(features)
            return (log_odds > 0).astype(int), expit(log_odds)
        import pandas as pd

        frame = pd.DataFrame(features, columns=list(FEATURES))
        probabilities = self.model.predict_proba(frame)
        classes = np.asarray(self.model.classes_)
        positive = int(np.flatnonzero(classes == 1)[0])
        return classes[probabilities.argmax(axis=1)].astype(int), probabilities[:, positive]

    def drivers(self, features: np.ndarray) -> list[list[dict[str, Any]]] | None:
        """Each row's drivers, largest effect first; None when the model is not linear."""
        if self.linear is None:
            return None
        effects = self.linear.effects(features)
        medians = self.linear.medians
        return [
            explain(row, effect, medians) for row, effect in zip(features, effects, strict=True)
        ]


def expit(log_odds: Any) -> Any:
    """The logistic function, one number or many: the same bits for a number either way."""
    from scipy.special import expit as logistic

    return logistic(log_odds)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
