"""Retraining that picks its data: candidates on different windows, judged on the newest rows.

After a change in the clients' behaviour, a model trained on every file ever ingested
fits neither the old pattern nor the new one. So fullprocess.py trains a candidate on
each window of the data (all ingested files; this run's new files; optionally the
newest N files), holds out the same stratified slice of this run's new labelled rows
from all of them, and scores every candidate and the deployed champion on that slice.
The best candidate replaces the champion when it clearly beats it there, or, after a
drift test has found the champion wrong, when the champion does no better; it is then
refit on its whole window. When this run brings too few labelled rows to judge, a
drift found still retrains on all the data, as the course does, and says it was not
judged.
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
# slice must hold; with fewer, an F1 says little and the choice is not judged.
MIN_CLASS_ROWS = 10
# One model is better than another when its F1 on the held-out rows is higher by more than
# this many standard errors of the difference (bootstrap over those rows, paired, seeded):
# a small held-out slice does not swap models on chance.
BETTER_Z = 2.0
# Without a drift found, a challenger replaces the champion only by more than this many:
# every run challenges, and a routine run should not swap models on a lucky slice.
CHALLENGE_Z = 3.0
BOOTSTRAP_SAMPLES = 400
ALL_DATA = "all ingested data"
NEW_FILES = "this run's new files"


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

    def beats(self, other: Judged, by: float = BETTER_Z) -> bool:
        """Whether this F1 is higher than other's by more than `by` standard errors."""
        return _paired_difference(self.predicted, other.predicted, self.truth, by) > 0


class Choice(NamedTuple):
    """What retraining found: the candidates, the champion's F1, the winner or why none.

    judged False: too few labelled rows to compare models (the reason says which).
    """

    candidates: list[Candidate]
    champion_f1: float | None
    holdout_rows: int
    winner: Candidate | None
    reason: str
    judged: bool = True

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
            "judged": self.judged,
            "reason": self.reason,
        }


def windows(
    ingested: list[str], new_files: list[str], newest_files: int | None
) -> dict[str, list[str]]:
    """The candidate windows, name -> files (in the order they arrived), without repeats.

    ingested: the files of this ingestion in the order they arrived; new_files: this
    run's. The newest behaviour is what this run brings: files ingested before it were
    already judged by earlier runs, and mixing them in would hide a change behind them.
    """
    chosen = {ALL_DATA: list(ingested), NEW_FILES: [n for n in ingested if n in new_files]}
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


def _paired_difference(
    first: np.ndarray, second: np.ndarray, truth: np.ndarray, by: float = BETTER_Z
) -> float:
    """F1(first) - F1(second) on truth, less `by` bootstrap standard errors of it.

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
    return float(difference(counts)) - by * spread


def window_rows(frames: dict[str, pd.DataFrame], files: list[str]) -> pd.DataFrame:
    """The labelled rows of files, repeats dropped as ingestion drops them (the first kept)."""
    import pandas as pd

    if not files:
        return pd.DataFrame(columns=list(COLUMNS))
    combined = pd.concat([frames[name] for name in files], ignore_index=True)
    combined = combined.drop_duplicates(subset=list(COLUMNS), keep="first")
    return combined[combined[TARGET].notna()]


def choose(
    frames: dict[str, pd.DataFrame],
    chosen: dict[str, list[str]],
    new_files: list[str],
    champion: Any,
    drift_found: bool = False,
) -> Choice:
    """Train a candidate on each window, score them and champion on this run's held-out rows.

    frames: each input file's rows (as read, with the target). The held-out rows are a
    stratified share of the labelled rows of new_files, this run's new files.
    drift_found: a drift test has just found the champion wrong, so it stays only if it
    does at least as well as the best candidate (without that, a candidate must do
    clearly better).
    """
    import pandas as pd

    from drs import modelling

    newest = window_rows(frames, [name for name in new_files if name in frames])
    problem = too_few(newest, "this run's new data")
    if problem is not None:
        return Choice([], None, 0, None, f"not judged: {problem}", judged=False)
    held_mask = holdout_mask(newest[TARGET].astype(int).to_numpy())
    held = newest[held_mask]
    problem = too_few(held, "the held-out slice of this run's new data")
    if problem is not None:
        return Choice([], None, len(held), None, f"not judged: {problem}", judged=False)
    held_keys = set(map(tuple, held[list(COLUMNS)].astype(str).to_numpy()))
    truth = held[TARGET].astype(int).to_numpy()
    features = held[list(FEATURES)]
    candidates, judged = [], {}
    for window, files in chosen.items():
        rows = window_rows(frames, files)
        keys = map(tuple, rows[list(COLUMNS)].astype(str).to_numpy())
        # A boolean Series, not a list: an empty list would select columns, not rows.
        fitting = rows[pd.Series([key not in held_keys for key in keys], rows.index, bool)]
        problem = too_few(fitting, f"the window '{window}' without the held-out rows")
        if problem is not None:
            candidates.append(Candidate(window, files, len(rows), None, problem))
            continue
        judged[window] = Judged(modelling.train(fitting).predict(features), truth)
        candidates.append(Candidate(window, files, len(rows), judged[window].f1))
    return decide(candidates, judged, Judged(champion.predict(features), truth), drift_found)


def decide(
    candidates: list[Candidate],
    judged: dict[str, Judged],
    champion: Judged,
    drift_found: bool = False,
) -> Choice:
    """The candidate to deploy, if it is better than the champion on the held-out rows; why.

    Among the candidates, the one on the most rows unless another is better than it (so
    a change in behaviour picks the newest data, and noise picks more data); after a
    drift found, the one with the highest F1 (the data has changed: the window that fits
    the new rows best). It replaces the champion if it is clearly better (by CHALLENGE_Z
    standard errors); after a drift found, also if the champion does no better than it
    (the test's evidence against the champion counts).
    """
    holdout_rows = len(champion.truth)
    figures = "; ".join(
        f"{c.window} {c.f1:.4f}" if c.f1 is not None else f"{c.window} not trained"
        for c in candidates
    )
    on = f"on {holdout_rows:,} held-out new rows"
    scored = sorted((c for c in candidates if c.f1 is not None), key=lambda c: c.rows, reverse=True)
    if not scored:
        return Choice(candidates, champion.f1, holdout_rows, None, f"no candidate: {figures}")
    best = scored[0]
    for candidate in scored[1:]:
        if judged[candidate.window].beats(judged[best.window]) or (
            drift_found and judged[candidate.window].f1 > judged[best.window].f1
        ):
            best = candidate
    clearly = judged[best.window].beats(champion, CHALLENGE_Z)
    if clearly or (drift_found and champion.f1 < judged[best.window].f1):
        how = "won" if clearly else "did better than the model found drifting"
        return Choice(
            candidates,
            champion.f1,
            holdout_rows,
            best,
            f"{best.window} {how} {on}: {best.f1:.4f} against the deployed model's "
            f"{champion.f1:.4f} ({figures})",
        )
    than = "as well as" if drift_found else "clearly better than"
    return Choice(
        candidates,
        champion.f1,
        holdout_rows,
        None,
        f"the deployed model stays: no candidate did {than} its {champion.f1:.4f} {on} ({figures})",
    )


def read_files(folder: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """Each named input file's rows, as ingestion read them (in one read: a year is 50,000)."""
    if not names:
        return {}
    return dict(zip(names, read_each([folder / name for name in names]), strict=True))
