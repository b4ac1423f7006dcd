"""Current clients, their risk and why: what client managers ask the product for.

The deployed model is evaluated from its own fitted parameters (drs.linear) and its
drivers said in words (drs.explain).

Current clients are each corporation's latest row in finaldata.csv, leaving out those
whose latest row says exited = 1; they are scored once per deployed release and data
version and kept in memory (ClientBook, ModelCache).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import datarules, releasefolder
from drs.cli import describe_error
from drs.config import FEATURES, ID_COLUMN, TARGET, Config
from drs.datarules import read_table
from drs.errors import DataError, PipelineError
from drs.explain import explain
from drs.files import file_sha256
from drs.linear import LinearModel, Scorer, expit

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)


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
        risks = expit(self.linear.log_odds(changed))
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
    release: releasefolder.Release | None
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
        self._current = str(self.folder / releasefolder.CURRENT)  # read on every request
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
            raise releasefolder.DeploymentError(
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

    def _read_release(self) -> releasefolder.Release | None:
        """current_release, tried twice: a release pruned between readlink and read is gone."""
        try:
            return releasefolder.current_release(self.folder)
        except PipelineError:
            return releasefolder.current_release(self.folder)

    def model(self) -> tuple[releasefolder.Release, dict[str, Any], Scorer]:
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


def _load(release: releasefolder.Release) -> Any:
    try:
        model = release.load_model()
    except (PipelineError, OSError) as error:
        logger.error("cannot load the model of release %s: %s", release.id, describe_error(error))
        raise ModelUnavailable(
            f"the deployed model (release {release.id}) cannot be loaded; see the log", True
        ) from None
    logger.info("loaded the model of release %s", release.id)
    return model


def release_info(release: releasefolder.Release) -> dict[str, Any]:
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
