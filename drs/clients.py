"""Current clients, their risk and why: what client managers ask the product for.

The deployed model is a median imputer, optional per-feature affine steps (scalers)
and a logistic regression, so it is evaluated here from its own fitted parameters as
arrays: its log-odds split exactly into one effect per feature,
coef * (value - training median), around the log-odds of a typical client. A model of
another shape is evaluated by itself, and its drivers are said to be unavailable.

Current clients are each corporation's latest row in finaldata.csv, leaving out those
whose latest row says exited = 1; they are scored once per deployed release and data
version and kept in memory (ClientBook, ModelCache).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import datarules, releases
from drs.cli import describe_error
from drs.config import FEATURES, ID_COLUMN, TARGET, Config
from drs.datarules import read_table
from drs.errors import DataError, PipelineError
from drs.files import file_sha256

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

# The feature names as a person says them.
FEATURE_WORDS = {
    "lastmonth_activity": "activity last month",
    "lastyear_activity": "activity last year",
    "number_of_employees": "number of employees",
}
# A value at most this share of the typical one is "far below", at least its inverse "far above".
FAR = 0.5
DRIVERS_UNAVAILABLE = (
    "the deployed model is not a logistic regression after median imputation, so its "
    "drivers cannot be computed exactly"
)


class ModelUnavailable(PipelineError):
    """No usable deployed model: none yet, or one that cannot be read or loaded."""

    def __init__(self, message: str, deployed: bool) -> None:
        super().__init__(message)
        self.deployed = deployed


class UnknownClient(PipelineError):
    pass


BANDS = ("high", "medium", "low")


class Bands(NamedTuple):
    """Risk thresholds: high from `high`, medium from `medium`, low below."""

    high: float = 0.5
    medium: float = 0.25

    def of(self, risk: float) -> str:
        return "high" if risk >= self.high else "medium" if risk >= self.medium else "low"


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
        return int(log_odds > 0), float(_expit(log_odds))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(0/1 predictions, probabilities of exiting) for rows of raw features.

        The linear path equals the pipeline's predict and predict_proba: a row is
        predicted to exit when its log-odds are above 0, as LogisticRegression decides.
        """
        import numpy as np

        if self.linear is not None:
            log_odds = self.linear.log_odds(features)
            return (log_odds > 0).astype(int), _expit(log_odds)
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


def _expit(log_odds: Any) -> Any:
    """The logistic function, one number or many: the same bits for a number either way."""
    from scipy.special import expit

    return expit(log_odds)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


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


class DataVersion(NamedTuple):
    """Which finaldata.csv a book was read from: its identity on disk, and when it was written."""

    key: tuple[int, ...]
    modified_at: float

    @classmethod
    def of(cls, path: Path) -> DataVersion:
        status = os.stat(path)
        key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
        return cls(key, status.st_mtime)


@dataclass(frozen=True)
class ClientBook:
    """The current clients scored by one release on one version of finaldata.csv, ranked.

    Arrays are in rank order: highest risk first, ties by corporation. Drivers are
    worked out for the clients asked about, not for all of them up front.
    """

    release_id: str
    data: DataVersion
    ids: list[str]
    ranks: dict[str, int]  # corporation -> index in rank order
    features: np.ndarray
    risk: np.ndarray
    predictions: np.ndarray
    linear: LinearModel | None
    columns: dict[str, np.ndarray]  # finaldata.csv's rows that name a corporation, file order
    sorted_ids: np.ndarray  # their corporations, sorted (stable: file order among equals)
    positions: np.ndarray  # the row behind each of sorted_ids
    bands: Bands

    @classmethod
    def build(
        cls, release_id: str, data: DataVersion, frame: pd.DataFrame, scorer: Scorer, bands: Bands
    ) -> ClientBook:
        """Rank the current clients of frame (finaldata.csv's rows) by scorer's risk."""
        import numpy as np

        named = frame[frame[ID_COLUMN].fillna("").str.strip() != ""]
        latest = named.drop_duplicates(subset=ID_COLUMN, keep="last")
        current = latest[latest[TARGET] != 1]
        features = current[list(FEATURES)].to_numpy(dtype=float)
        predictions, risk = scorer.predict(features)
        ids = current[ID_COLUMN].astype(str).to_numpy()
        order = np.lexsort((ids, -risk))
        every_id = named[ID_COLUMN].astype(str).to_numpy(dtype=object)
        positions = np.argsort(every_id, kind="stable")
        columns = {name: named[name].to_numpy() for name in named.columns}
        columns[ID_COLUMN] = every_id
        ranked = ids[order].tolist()
        return cls(
            release_id=release_id,
            data=data,
            ids=ranked,
            ranks={name: index for index, name in enumerate(ranked)},
            features=features[order],
            risk=risk[order],
            predictions=predictions[order],
            linear=scorer.linear,
            columns=columns,
            sorted_ids=every_id[positions],
            positions=positions,
            bands=bands,
        )

    @property
    def typical_log_odds(self) -> float | None:
        return self.linear.typical_log_odds if self.linear is not None else None

    def entry(self, index: int) -> dict[str, Any]:
        """The client at rank index + 1: rank, corporation, risk, band, prediction, drivers."""
        risk = float(self.risk[index])
        drivers = None
        if self.linear is not None:
            values = self.features[index]
            effects = self.linear.effects(values[None, :])[0]
            drivers = explain(values, effects, self.linear.medians)
        return {
            "rank": index + 1,
            "corporation": self.ids[index],
            "risk_score": risk,
            "band": self.bands.of(risk),
            "prediction": int(self.predictions[index]),
            "drivers": drivers,
        }

    def band_span(self, band: str) -> range:
        """The ranks (indices) of the clients in band: the risks are ranked, so one span."""
        import numpy as np

        falling = -self.risk  # rising, as searchsorted wants
        high, medium = (
            int(np.searchsorted(falling, -threshold, side="right"))
            for threshold in (self.bands.high, self.bands.medium)
        )
        spans = {"high": (0, high), "medium": (high, medium), "low": (medium, len(self.ids))}
        return range(*spans[band])

    def band_counts(self) -> dict[str, int]:
        """How many current clients each band holds, highest band first."""
        return {band: len(self.band_span(band)) for band in BANDS}

    def ranked(
        self, top: int, query: str = "", band: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The top clients whose id contains query (any case) and in band (None: any),
        highest first; and how many match."""
        indices: range | list[int] = self.band_span(band) if band else range(len(self.ids))
        wanted = query.strip().lower()
        if wanted:
            indices = [i for i in indices if wanted in self.ids[i].lower()]
        return [self.entry(i) for i in indices[:top]], len(indices)

    @property
    def row_count(self) -> int:
        """The rows of finaldata.csv that name a corporation."""
        return len(self.positions)

    def rows_of(self, corporation: str) -> list[dict[str, Any]]:
        """Every row of one corporation, in file order (the latest last), as JSON.

        Found by binary search and converted on demand: a book of a million rows keeps
        no Python object per row.
        """
        import numpy as np

        first, end = (
            int(np.searchsorted(self.sorted_ids, corporation, side=side))
            for side in ("left", "right")
        )
        rows = self.positions[first:end]
        values = {name: column[rows].tolist() for name, column in self.columns.items()}
        return [
            _row(dict(zip(values, row, strict=True))) for row in zip(*values.values(), strict=True)
        ]

    def client(self, corporation: str) -> dict[str, Any]:
        """One client: its rank and risk, its latest row, drivers, and earlier rows."""
        rows = self.rows_of(corporation)
        if not rows:
            raise UnknownClient(f"no client {corporation!r} in the ingested data")
        if corporation not in self.ranks:
            raise UnknownClient(
                f"{corporation!r} is no longer a client: its latest row says {TARGET} = 1"
            )
        index = self.ranks[corporation]
        entry = self.entry(index)
        if entry["drivers"] is not None:
            what_if = self.risks_if_typical(index)
            for driver in entry["drivers"]:
                driver["risk_if_typical"] = what_if[driver["feature"]]
        return {**entry, "latest": rows[-1], "earlier_rows": rows[:-1]}

    def risks_if_typical(self, index: int) -> dict[str, float | None]:
        """Per feature, the risk of the client at index were that feature typical (its
        training median), by the model's own arithmetic; None for a value not known or
        already typical (nothing would change)."""
        import numpy as np

        assert self.linear is not None
        values = self.features[index]
        changed = np.repeat(values[None, :], len(FEATURES), axis=0)
        np.fill_diagonal(changed, self.linear.medians)
        risks = _expit(self.linear.log_odds(changed))
        return {
            feature: None
            if np.isnan(values[j]) or values[j] == self.linear.medians[j]
            else float(risks[j])
            for j, feature in enumerate(FEATURES)
        }


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """A finaldata.csv row as JSON: NaN as null, numbers as numbers."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in record.items()
    }


class Deployed(NamedTuple):
    """What `current` pointed at when last looked: the link text, the release, its identity."""

    link: str | None
    release: releases.Release | None
    info: dict[str, Any] | None


class ModelCache:
    """The deployed release, its model and the client book, one per process.

    Each request costs one readlink; the manifest is read and the model unpickled
    (after its SHA-256 check) only when the link names another release. Release folders
    never change once made, so the link text identifies the model. The book is rebuilt
    only when the release or finaldata.csv changes.
    """

    def __init__(self, config: Config, bands: Bands | None = None) -> None:
        self.config = config
        self.folder = config.deployment_folder
        self._current = str(self.folder / releases.CURRENT)  # read on every request
        self.bands = bands or Bands(*config.risk_bands)
        self._lock = threading.Lock()
        self._deployed = Deployed("", None, None)  # "" never equals a link: first look reads
        self._scorer: tuple[str, Scorer] | None = None
        self._book: ClientBook | None = None

    def _link(self) -> str | None:
        try:
            return os.readlink(self._current)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise releases.DeploymentError(
                f"{self._current}: not a deployment link ({error.strerror})"
            ) from None

    def deployed(self) -> Deployed:
        """The release `current` points at now (release None when nothing is deployed)."""
        link = self._link()
        known = self._deployed
        if known.link == link:
            return known
        with self._lock:
            if self._deployed.link != link:
                release = self._read_release()
                self._deployed = Deployed(link, release, release_info(release) if release else None)
                if release is not None:
                    logger.info("deployment %s found in %s", release.id, self.folder)
            return self._deployed

    def _read_release(self) -> releases.Release | None:
        """current_release, tried twice: a release pruned between readlink and read is gone."""
        try:
            return releases.current_release(self.folder)
        except PipelineError:
            return releases.current_release(self.folder)

    def model(self) -> tuple[releases.Release, dict[str, Any], Scorer]:
        """The deployed release, its identity and its scorer; ModelUnavailable if none."""
        try:
            deployed = self.deployed()
        except PipelineError as error:
            logger.error("cannot read the deployment: %s", error)
            raise ModelUnavailable("the deployment cannot be read; see the log", True) from None
        release = deployed.release
        if release is None or deployed.info is None:
            raise ModelUnavailable(
                "no model deployed yet; run deployment.py or fullprocess.py first", False
            )
        loaded = self._scorer
        if loaded is None or loaded[0] != release.id:
            with self._lock:
                loaded = self._scorer
                if loaded is None or loaded[0] != release.id:
                    loaded = (release.id, Scorer(_load(release)))
                    self._scorer = loaded
        return release, deployed.info, loaded[1]

    def book(self) -> ClientBook:
        """The current clients as the deployed model scores them, rebuilt only when either changes.

        Raises ModelUnavailable, or DataError when finaldata.csv is missing or invalid.
        """
        return self.snapshot()[0]

    def snapshot(self) -> tuple[ClientBook, dict[str, Any]]:
        """The client book and the identity of the release that scored it, from one look at
        the deployment: a deployment meanwhile cannot pair one release's risks with another's
        F1. Raises as book() does.
        """
        release, info, scorer = self.model()
        path = self.config.final_data_path
        try:
            version = DataVersion.of(path)
        except FileNotFoundError:
            raise DataError(f"{path.name}: not found; run ingestion.py first") from None
        known = self._book
        if known is not None and (known.release_id, known.data.key) == (release.id, version.key):
            return known, info
        with self._lock:
            known = self._book
            if known is None or (known.release_id, known.data.key) != (release.id, version.key):
                frame = datarules.read_dataset(path)
                known = ClientBook.build(release.id, version, frame, scorer, self.bands)
                self._book = known
                logger.info("scored %d current clients with release %s", len(known.ids), release.id)
        return known, info


def _load(release: releases.Release) -> Any:
    try:
        model = release.load_model()
    except (PipelineError, OSError) as error:
        logger.error("cannot load the model of release %s: %s", release.id, describe_error(error))
        raise ModelUnavailable(
            f"the deployed model (release {release.id}) cannot be loaded; see the log", True
        ) from None
    logger.info("loaded the model of release %s", release.id)
    return model


def release_info(release: releases.Release) -> dict[str, Any]:
    """A release's identity as /health shows it; the score is read once per release."""
    try:
        score: float | None = release.score()
    except (PipelineError, OSError) as error:
        logger.warning("release %s: no readable score (%s)", release.id, error)
        score = None
    return {
        "release_id": release.id,
        "model_sha256": release.model_sha256,
        "deployed_at": release.manifest.get("deployed_at"),
        "score": score,
    }


class Dataset(NamedTuple):
    """A client dataset file read and validated: its features as an array, its ids."""

    features: np.ndarray
    ids: list[str | None]


class DatasetCache:
    """Client dataset files read and validated once per version, a few kept in memory.

    A file's version is its identity on disk (device, inode, size, modification and
    change times in nanoseconds); when that changes, the content's SHA-256 decides
    whether it really did (a file touched but not changed is not read again). The
    least recently used files go first when more than max_files or max_rows are kept.
    """

    def __init__(self, max_files: int = 8, max_rows: int = 2_000_000) -> None:
        self.max_files = max_files
        self.max_rows = max_rows
        self._lock = threading.Lock()
        # path -> (version key, SHA-256, dataset), least recently used first
        self._entries: dict[Path, tuple[tuple[int, ...], str, Dataset]] = {}

    def get(self, path: Path) -> Dataset:
        """The dataset in path; DataError when it is invalid, OSError when it cannot be read."""
        key = DataVersion.of(path).key
        with self._lock:
            known = self._entries.pop(path, None)
            if known is not None and known[0] == key:
                self._entries[path] = known
                return known[2]
        digest = file_sha256(path)
        if known is not None and known[1] == digest:
            dataset = known[2]
        else:
            dataset = read_dataset(path)
            if file_sha256(path) != digest:  # written to while it was read
                digest = ""
        with self._lock:
            self._entries[path] = (key, digest, dataset)
            self._evict()
        return dataset

    def _evict(self) -> None:
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_files
            or sum(len(entry[2].ids) for entry in self._entries.values()) > self.max_rows
        ):
            del self._entries[next(iter(self._entries))]


def read_dataset(path: Path) -> Dataset:
    """A client dataset file (target optional) as arrays, checked by the data rules."""
    import numpy as np

    table = read_table(path, require_target=False)
    features = np.column_stack([table.column(feature).to_numpy() for feature in FEATURES]).astype(
        float, copy=False
    )
    return Dataset(features, table.column(ID_COLUMN).to_pylist())
