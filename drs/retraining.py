"""Retraining that picks its data: candidates on different windows, judged on the newest rows.

After a change in the clients' behaviour, a model trained on every file ever ingested
fits neither the old pattern nor the new one. So when fullprocess.py retrains, it
trains a candidate on each window of the data (all ingested files; the files that
arrived since the deployed model was trained; optionally the newest N files), holds
out the same stratified slice of the newest labelled rows from all of them, and
scores every candidate and the deployed champion on that slice. The best candidate
replaces the champion only if it beats it there; it is then refit on its whole window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from drs import drift
from drs.config import COLUMNS, FEATURES, TARGET
from drs.datarules import read_each
from drs.files import first_names

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

# The held-out slice: this share of the newest labelled rows, stratified, seeded.
HOLDOUT_SHARE = 0.3
HOLDOUT_SEED = 0
# Fewest rows of each class (stayed, exited) a candidate's training rows or the held-out
# slice must hold; with fewer, an F1 says little and the champion stays.
MIN_CLASS_ROWS = 10
# One model is better than another when its F1 on the held-out rows is higher by more than
# this many standard errors of the difference (bootstrap over those rows, paired, seeded):
# a small held-out slice does not swap models on chance.
BETTER_Z = 2.0
BOOTSTRAP_SAMPLES = 400
ALL_DATA = "all ingested data"
SINCE_DEPLOYED = "files since the deployed model was trained"


class Candidate(NamedTuple):
    """A window of the data, its files, and how its model did on the held-out rows."""

    window: str
    files: list[str]
    rows: int
    f1: float | None  # None: not trained, see reason
    reason: str | None = None


class Judged(NamedTuple):
    """A model's predictions on the held-out rows, beside the truth."""

    predicted: np.ndarray
    truth: np.ndarray

    @property
    def f1(self) -> float:
        return drift.realised(self.truth, self.predicted).f1

    def beats(self, other: Judged) -> bool:
        """Whether this F1 is higher than other's by more than BETTER_Z standard errors."""
        return _paired_difference(self.predicted, other.predicted, self.truth) > 0


class Choice(NamedTuple):
    """What retraining found: the candidates, the champion's F1, the winner or why none."""

    candidates: list[Candidate]
    champion_f1: float | None
    holdout_rows: int
    winner: Candidate | None
    reason: str

    def summary(self) -> dict[str, Any]:
        return {
            # A window of a year of files is tens of thousands of names: a few and the count.
            "candidates": [
                {**candidate._asdict(), "files": first_names(candidate.files)}
                | {"file_count": len(candidate.files)}
                for candidate in self.candidates
            ],
            "champion_f1": self.champion_f1,
            "holdout_rows": self.holdout_rows,
            "winner": self.winner.window if self.winner else None,
            "reason": self.reason,
        }


def windows(
    ingested: dict[str, str],
    seen_by_champion: dict[str, str] | None,
    new_files: list[str],
    newest_files: int | None,
) -> dict[str, list[str]]:
    """The candidate windows, name -> files (oldest first), without repeats.

    ingested: the files of this ingestion in the order they arrived, name -> SHA-256;
    seen_by_champion: those the deployed model's training saw (None when its card does
    not say: then this run's new files are the ones since).
    """
    since = (
        [name for name, digest in ingested.items() if seen_by_champion.get(name) != digest]
        if seen_by_champion is not None
        else [name for name in ingested if name in new_files]
    )
    chosen = {ALL_DATA: list(ingested), SINCE_DEPLOYED: since}
    if newest_files:
        chosen[f"newest {newest_files} file(s)"] = list(ingested)[-newest_files:]
    unique: dict[str, list[str]] = {}
    for name, files in chosen.items():
        if files and files not in unique.values():
            unique[name] = files
    return unique


def holdout_mask(labels: np.ndarray, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """A stratified, seeded choice of share of the rows of each class."""
    import numpy as np

    rng = np.random.default_rng(HOLDOUT_SEED)
    held = np.zeros(len(labels), dtype=bool)
    for value in (0, 1):
        rows = np.flatnonzero(labels == value)
        held[rng.choice(rows, size=round(len(rows) * share), replace=False)] = True
    return held


def class_counts(frame: pd.DataFrame) -> tuple[int, int]:
    labels = frame[TARGET]
    return int((labels == 0).sum()), int((labels == 1).sum())


def too_few(frame: pd.DataFrame, what: str) -> str | None:
    stayed, exited = class_counts(frame)
    if min(stayed, exited) < MIN_CLASS_ROWS:
        return (
            f"{what} has {stayed} row(s) of clients who stayed and {exited} of clients who "
            f"left; at least {MIN_CLASS_ROWS} of each are needed"
        )
    return None


def _paired_difference(first: np.ndarray, second: np.ndarray, truth: np.ndarray) -> float:
    """F1(first) - F1(second) on truth, less BETTER_Z bootstrap standard errors of it.

    A row is one of eight kinds (each model's prediction, the truth), and both F1s
    depend only on how many rows of each kind there are: a bootstrap resample is a
    multinomial draw of those counts, as cheap for a million rows as for a hundred.
    """
    import numpy as np

    kinds = np.arange(8)
    said_first, said_second, actual = (kinds >> 2) & 1, (kinds >> 1) & 1, kinds & 1

    def f1s(counts: np.ndarray, said: np.ndarray) -> np.ndarray:
        found = counts @ said + counts @ actual
        hits = 2 * (counts @ (said & actual))
        return np.divide(hits, found, out=np.zeros(found.shape), where=found > 0)

    def difference(counts: np.ndarray) -> np.ndarray:
        return f1s(counts, said_first) - f1s(counts, said_second)

    first, second, truth = ((np.asarray(a) == 1).astype(int) for a in (first, second, truth))
    counts = np.bincount(first * 4 + second * 2 + truth, minlength=8)
    rng = np.random.default_rng(HOLDOUT_SEED)
    resampled = rng.multinomial(len(truth), counts / len(truth), size=BOOTSTRAP_SAMPLES)
    spread = float(difference(resampled).std(ddof=1))
    return float(difference(counts)) - BETTER_Z * spread


def window_rows(frames: dict[str, pd.DataFrame], files: list[str]) -> pd.DataFrame:
    """The labelled rows of files, repeats dropped as ingestion drops them (the first kept)."""
    import pandas as pd

    combined = pd.concat([frames[name] for name in files], ignore_index=True)
    combined = combined.drop_duplicates(subset=list(COLUMNS), keep="first")
    return combined[combined[TARGET].notna()]


def choose(frames: dict[str, pd.DataFrame], chosen: dict[str, list[str]], champion: Any) -> Choice:
    """Train a candidate on each window, score them and champion on the held-out newest rows.

    frames: each input file's rows (as read, with the target). The newest rows are
    those of the window of files since the deployed model was trained.
    """
    from drs import modelling

    newest = window_rows(frames, chosen.get(SINCE_DEPLOYED) or next(iter(chosen.values())))
    problem = too_few(newest, "the newest data")
    if problem is not None:
        return Choice([], None, 0, None, f"no retraining: {problem}")
    held_mask = holdout_mask(newest[TARGET].astype(int).to_numpy())
    held = newest[held_mask]
    problem = too_few(held, "the held-out slice of the newest data")
    if problem is not None:
        return Choice([], None, len(held), None, f"no retraining: {problem}")
    held_keys = set(map(tuple, held[list(COLUMNS)].astype(str).to_numpy()))
    truth = held[TARGET].astype(int).to_numpy()
    features = held[list(FEATURES)]
    candidates, judged = [], {}
    for window, files in chosen.items():
        rows = window_rows(frames, files)
        keys = map(tuple, rows[list(COLUMNS)].astype(str).to_numpy())
        fitting = rows[[key not in held_keys for key in keys]]
        problem = too_few(fitting, f"the window '{window}' without the held-out rows")
        if problem is not None:
            candidates.append(Candidate(window, files, len(rows), None, problem))
            continue
        judged[window] = Judged(modelling.train(fitting).predict(features), truth)
        candidates.append(Candidate(window, files, len(rows), judged[window].f1))
    return decide(candidates, judged, Judged(champion.predict(features), truth))


def decide(candidates: list[Candidate], judged: dict[str, Judged], champion: Judged) -> Choice:
    """The candidate to deploy, if it is better than the champion on the held-out rows; why.

    Among the candidates, the one on the most rows unless another is better than it (so
    a change in behaviour picks the newest data, and noise picks more data); it replaces
    the champion only if it is better than the champion.
    """
    holdout_rows = len(champion.truth)
    figures = "; ".join(
        f"{c.window} {c.f1:.4f}" if c.f1 is not None else f"{c.window} not trained"
        for c in candidates
    )
    on = f"on {holdout_rows:,} held-out newest rows"
    scored = sorted((c for c in candidates if c.f1 is not None), key=lambda c: c.rows, reverse=True)
    if not scored:
        return Choice(candidates, champion.f1, holdout_rows, None, f"no candidate: {figures}")
    best = scored[0]
    for candidate in scored[1:]:
        if judged[candidate.window].beats(judged[best.window]):
            best = candidate
    if judged[best.window].beats(champion):
        return Choice(
            candidates,
            champion.f1,
            holdout_rows,
            best,
            f"{best.window} won {on}: {best.f1:.4f} against the deployed model's "
            f"{champion.f1:.4f} ({figures})",
        )
    return Choice(
        candidates,
        champion.f1,
        holdout_rows,
        None,
        f"the deployed model stays: no candidate did clearly better than its {champion.f1:.4f} "
        f"{on} ({figures})",
    )


def read_files(folder: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """Each named input file's rows, as ingestion read them (in one read: a year is 50,000)."""
    if not names:
        return {}
    return dict(zip(names, read_each([folder / name for name in names]), strict=True))
