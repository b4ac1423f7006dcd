"""Retraining that picks its data: candidates on different windows, judged on the newest rows.

After a change in the clients' behaviour, a model trained on every file ever ingested
fits neither the old pattern nor the new one. So fullprocess.py trains candidates on
windows of the data (all ingested files; this run's new files; the deployed model's
files and those since; optionally the newest N files) and judges them, and the deployed
champion, on the newest labelled rows: this run's, or, when they hold too few of a class
(batches of a dozen rows), those of the last few files. Each candidate is cross-validated
there: fitted once per fold without that fold's rows, it predicts them, so every newest
row judges it (one held-out slice of a few hundred rows is too noisy to tell windows
apart while the behaviour keeps turning). The best candidate replaces the champion when
it clearly beats it there, or, after a drift test has found the champion wrong, when the
champion does no better; it is then refit on its whole window. When a test found this
run's rows themselves changed and they are too few for folds, the older rows would
favour the model just found wrong on them: the windows are judged on this run's rows
alone, one row left out at a time, by the Brier score. When even all the data holds
too few labelled rows to judge, a drift found still retrains on all the data, as the
course does, and says it was not judged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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

# Candidates are cross-validated on the newest labelled rows: stratified folds, seeded.
JUDGE_FOLDS = 5
JUDGE_SEED = 0
# Fewest rows of each class (stayed, exited) a candidate's training rows must hold; with
# fewer, a fit says little and the candidate is not trained.
MIN_CLASS_ROWS = 10
# Fewest rows of each class the newest rows judged on must hold: each fold then leaves a
# window of only those rows at least MIN_CLASS_ROWS of each to train on.
JUDGE_CLASS_ROWS = 15
# Fewest rows of each class of this run's to judge windows on one row at a time, when a
# drift was found on them and they are too few for folds: each fit without one of them
# still holds a client of each kind, so a model of this run's rows alone is a candidate.
CHANGED_CLASS_ROWS = 2
# A window this many times larger than the rows judged one at a time is fitted once
# without all of them (see left_one_out).
ONE_FIT_SCALE = 100
# One model is better than another when its F1 on the newest rows is higher by more than
# this many standard errors of the difference (bootstrap over those rows, paired, seeded),
# or higher at all and its Brier score (the squared error of its probabilities, which
# every row informs, where only rows near the threshold move the F1) lower by more than
# this many standard errors of the paired difference: a model is not swapped on chance.
BETTER_Z = 2.0
# Without a drift found, a challenger replaces the champion only by more than this many:
# every run challenges, and a routine run should not swap models on lucky rows.
CHALLENGE_Z = 3.0
# Without a drift found, a challenger must also lift the F1 on the newest rows by at least
# this share of the champion's: a smaller gain is not worth a new release and its notice.
MATERIAL_GAIN = 0.05
BOOTSTRAP_SAMPLES = 400
ALL_DATA = "all ingested data"
NEW_FILES = "this run's new files"
SINCE_DEPLOYED = "the deployed model's files and those since"


class Candidate(NamedTuple):
    """A window of the data, its files, and how its model did on the held-out rows."""

    window: str
    files: list[str]
    rows: int
    f1: float | None  # None: not trained, see reason
    reason: str | None = None


class Judged(NamedTuple):
    """A model's predictions (and probabilities, when known) on the newest rows, and the truth."""

    predicted: np.ndarray
    truth: np.ndarray
    chance: np.ndarray | None = None

    @classmethod
    def of(cls, chance: np.ndarray, truth: np.ndarray) -> Judged:
        """A model's probabilities on the rows, its predictions the ones over 0.5."""
        return cls((chance > 0.5).astype(int), truth, chance)

    @property
    def f1(self) -> float:
        return drift.realised(self.truth, self.predicted).f1

    @property
    def brier(self) -> float:
        """The mean squared error of the probabilities (known ones only)."""
        assert self.chance is not None, "a Brier score needs the probabilities"
        return float(((self.chance - self.truth) ** 2).mean())

    def only(self, rows: np.ndarray) -> Judged:
        """The same, on the rows rows (a boolean mask) alone."""
        chance = None if self.chance is None else self.chance[rows]
        return Judged(self.predicted[rows], self.truth[rows], chance)

    def beats(self, other: Judged, by: float = BETTER_Z) -> bool:
        """Whether this F1 is higher than other's by more than `by` standard errors, or is
        higher and this Brier score lower than other's by more than `by` standard errors."""
        if _paired_difference(self.predicted, other.predicted, self.truth, by) > 0:
            return True
        if self.chance is None or other.chance is None or self.f1 <= other.f1:
            return False
        return _brier_z(self.chance, other.chance, self.truth) > by


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
    ingested: list[str],
    new_files: list[str],
    newest_files: int | None,
    deployed: list[str] | None = None,
) -> dict[str, list[str]]:
    """The candidate windows, name -> files (in the order they arrived), without repeats.

    ingested: the files of this ingestion in the order they arrived; new_files: this
    run's; deployed: the files the deployed model was trained on. The newest behaviour is
    what this run brings: files ingested before it were already judged by earlier runs,
    and mixing them in would hide a change behind them. The deployed model's window grown
    by the files since lets a model of a new behaviour gather its rows tick by tick.
    """
    new, learnt = set(new_files), set(deployed or ())  # a year is 50,000 names: no list scans
    chosen = {ALL_DATA: list(ingested), NEW_FILES: [n for n in ingested if n in new]}
    first = next((index for index, name in enumerate(ingested) if name in learnt), 0)
    chosen[SINCE_DEPLOYED] = list(ingested)[first:]
    if newest_files:
        chosen[f"newest {newest_files} file(s)"] = list(ingested)[-newest_files:]
    unique: dict[str, list[str]] = {}
    for name, files in chosen.items():
        if files and files not in unique.values():
            unique[name] = files
    return unique


def newest_rows(
    frames: dict[str, pd.DataFrame], new_files: list[str]
) -> tuple[list[str], pd.DataFrame]:
    """The newest labelled rows to judge on, and their files (in the order they arrived).

    frames: every ingested file's rows, in the order they arrived. This run's new files;
    while they hold under JUDGE_CLASS_ROWS of a class, the files before them too, newest
    first (batches of a dozen rows are judged on the last few ticks' rows).
    """
    new = set(new_files)
    files = [name for name in frames if name in new]
    earlier = [name for name in frames if name not in new]
    rows = window_rows(frames, files)
    while too_few(rows, "", JUDGE_CLASS_ROWS) and earlier:
        files.insert(0, earlier.pop())
        rows = window_rows(frames, files)
    return files, rows


def folds_of(labels: np.ndarray) -> np.ndarray:
    """Each row's fold: stratified, seeded, JUDGE_FOLDS of them (fewer for a rare class)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    count = min(JUDGE_FOLDS, int(np.bincount(labels, minlength=2).min()))
    splitter = StratifiedKFold(n_splits=count, shuffle=True, random_state=JUDGE_SEED)
    folds = np.empty(len(labels), dtype=int)
    for number, (_, held) in enumerate(splitter.split(labels.reshape(-1, 1), labels)):
        folds[held] = number
    return folds


def class_counts(frame: pd.DataFrame) -> tuple[int, int]:
    labels = frame[TARGET]
    return int((labels == 0).sum()), int((labels == 1).sum())


def too_few(frame: pd.DataFrame, what: str, least: int = MIN_CLASS_ROWS) -> str | None:
    stayed, exited = class_counts(frame)
    if min(stayed, exited) < least:
        return (
            f"{what} has {stayed} row(s) of clients who stayed and {exited} of clients who "
            f"left; at least {least} of each are needed"
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
    rng = np.random.default_rng(JUDGE_SEED)
    resampled = rng.multinomial(len(truth), counts / len(truth), size=BOOTSTRAP_SAMPLES)
    spread = float(difference(resampled).std(ddof=1))
    return float(difference(counts)) - by * spread


def _brier_z(first: np.ndarray, second: np.ndarray, truth: np.ndarray) -> float:
    """How many standard errors first's Brier score is below second's (paired, by row)."""
    import numpy as np

    gain = (second - truth) ** 2 - (first - truth) ** 2
    spread = float(gain.std(ddof=1)) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    return float(gain.mean()) / spread if spread > 0 else 0.0


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
    changed_here: bool = False,
    learnt: list[str] | None = None,
) -> Choice:
    """Cross-validate a candidate on each window, and score champion, on the newest rows.

    frames: each ingested file's rows (as read, with the target), in the order they
    arrived. The newest rows are this run's new files' labelled rows, or those of the
    last few files when they are too few (see newest_rows); their files are a window too.
    drift_found: a drift test has just found the champion wrong, so it stays only if it
    does at least as well as the best candidate (without that, a candidate must do
    clearly better). changed_here: a test found the rows of this run's new files
    behaving differently; when they are too few to judge on, see on_changed_rows.
    learnt: the files the champion was trained on (its rows among the newest favour it).
    """
    import numpy as np

    files, newest = newest_rows(frames, new_files)
    what = "this run's new data"
    new = set(new_files)
    this_run = [name for name in frames if name in new]
    this_run_alone = len(files) == len(this_run)
    if changed_here and not this_run_alone:
        changed = on_changed_rows(frames, chosen, this_run, champion)
        if changed is not None:
            return changed
    if not this_run_alone:
        what = f"the data of the newest {len(files)} file(s)"
        if files not in chosen.values():
            chosen = chosen | {f"newest {len(files)} file(s)": files}
    problem = too_few(newest, what, JUDGE_CLASS_ROWS)
    if problem is not None:
        return Choice([], None, len(newest), None, f"not judged: {problem}", judged=False)
    truth = newest[TARGET].astype(int).to_numpy()
    folds = folds_of(truth)
    fold_by_key = dict(zip(keys_of(newest), folds.tolist(), strict=True))
    candidates, judged = _judge_windows(
        frames,
        chosen,
        truth,
        lambda rows, window: out_of_fold(rows, newest, (folds, fold_by_key), window),
    )
    on_newest = Judged.of(champion.predict_proba(newest[list(FEATURES)])[:, 1], truth)
    unlearnt = None
    if not this_run_alone:
        known = set(learnt or ())
        seen = set(keys_of(window_rows(frames, [name for name in files if name in known])))
        unlearnt = np.array([key not in seen for key in keys_of(newest)], dtype=bool)
    return decide(candidates, judged, on_newest, drift_found, this_run_alone, unlearnt)


def on_changed_rows(
    frames: dict[str, pd.DataFrame],
    chosen: dict[str, list[str]],
    this_run: list[str],
    champion: Any,
) -> Choice | None:
    """Windows judged on this run's rows alone, one at a time: they changed, and are few.

    The older rows the judging would reach back to show the behaviour the deployed
    model was just found wrong on, so they would favour it and any window that holds
    them (after a flip, a model of all the data mixes the two behaviours and can flag
    nobody). So each window's model is refit without each of this run's rows in turn and
    predicts it, and the Brier score of those predictions, which every row informs,
    picks (the F1 of a dozen rows is chance); the champion stays only if its own Brier
    score on them is lower still. None when this run's rows hold under
    CHANGED_CLASS_ROWS of a class (or enough to judge in folds).
    """
    rows = window_rows(frames, this_run)
    problem = too_few(rows, "this run's new data", JUDGE_CLASS_ROWS)
    if problem is None or too_few(rows, "", CHANGED_CLASS_ROWS) is not None:
        return None
    truth = rows[TARGET].astype(int).to_numpy()
    candidates, judged = _judge_windows(
        frames, chosen, truth, lambda data, window: left_one_out(data, rows, window)
    )
    on_them = Judged.of(champion.predict_proba(rows[list(FEATURES)])[:, 1], truth)
    figures = "; ".join(f"{window} {said.brier:.4f}" for window, said in judged.items())
    how = (
        f"judged on this run's {len(rows)} rows alone, each left out in turn, by the Brier "
        f"score ({problem}; older rows show the behaviour the deployed model was just found "
        f"wrong on): {figures}; the deployed model {on_them.brier:.4f}"
    )
    # Most rows first: on a tie noise picks more data.
    ranked = sorted((c for c in candidates if c.window in judged), key=lambda c: -c.rows)
    best = min(ranked, key=lambda c: judged[c.window].brier, default=None)
    if best is None or judged[best.window].brier >= on_them.brier:
        return Choice(candidates, on_them.f1, len(rows), None, f"the deployed model stays, {how}")
    return Choice(candidates, on_them.f1, len(rows), best, f"{best.window} did best, {how}")


def left_one_out(window_data: pd.DataFrame, rows: pd.DataFrame, window: str) -> np.ndarray | str:
    """Each of rows' chance of leaving, from the window's model fitted without that row.

    out_of_fold with each row a fold of its own, and a fit needing only a client of each
    kind. A window over ONE_FIT_SCALE times larger than rows is fitted once, without all
    of them (one fold): a row more or less does not move that fit, and a year of small
    files is hundreds of thousands of rows.
    """
    import numpy as np

    one_fit = len(window_data) > ONE_FIT_SCALE * len(rows)
    folds = np.zeros(len(rows), dtype=int) if one_fit else np.arange(len(rows))
    by_key = dict(zip(keys_of(rows), folds.tolist(), strict=True))
    return out_of_fold(window_data, rows, (folds, by_key), window, least=1)


def _judge_windows(
    frames: dict[str, pd.DataFrame],
    chosen: dict[str, list[str]],
    truth: np.ndarray,
    predict: Callable[[pd.DataFrame, str], np.ndarray | str],
) -> tuple[list[Candidate], dict[str, Judged]]:
    """Each window's candidate, and how it did where it was judged (predict: its rows'
    probabilities on the judged rows, or why it was not trained)."""
    candidates, judged = [], {}
    for window, files in chosen.items():
        rows = window_rows(frames, files)
        chance = predict(rows, window)
        if isinstance(chance, str):
            candidates.append(Candidate(window, files, len(rows), None, chance))
            continue
        judged[window] = Judged.of(chance, truth)
        candidates.append(Candidate(window, files, len(rows), judged[window].f1))
    return candidates, judged


def out_of_fold(
    rows: pd.DataFrame,
    newest: pd.DataFrame,
    folds: tuple[np.ndarray, dict[tuple[str, ...], int]],
    window: str,
    least: int = MIN_CLASS_ROWS,
) -> np.ndarray | str:
    """Each newest row's chance of leaving, from a model fitted without that row's fold.

    folds: each newest row's fold, in order and by its values; rows of the window that
    are newest rows leave with their fold. Returns the probabilities, or why the window
    is not trained (a fold leaves under `least` clients of a kind).
    """
    import numpy as np
    import pandas as pd

    from drs import modelling

    folds_in_order, fold_by_key = folds
    in_fold = np.array([fold_by_key.get(key, -1) for key in keys_of(rows)], dtype=int)
    features = newest[list(FEATURES)]
    chance = np.zeros(len(newest))
    for number in range(int(folds_in_order.max()) + 1):
        # A boolean Series, not an array of nothing: an empty selection would pick columns.
        fitting = rows[pd.Series(in_fold != number, rows.index, bool)]
        problem = too_few(
            fitting, f"the window '{window}' without a fold of the newest rows", least
        )
        if problem is not None:
            return problem
        held = folds_in_order == number
        chance[held] = modelling.train(fitting).predict_proba(features[held])[:, 1]
    return chance


def keys_of(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each row's values as text: the same client row in two files has the same key."""
    return list(map(tuple, frame[list(COLUMNS)].astype(str).to_numpy()))


def decide(
    candidates: list[Candidate],
    judged: dict[str, Judged],
    champion: Judged,
    drift_found: bool = False,
    this_run_alone: bool = True,
    unlearnt: np.ndarray | None = None,
) -> Choice:
    """The candidate to deploy, if it is better than the champion on the newest rows; why.

    The best candidate (see best_candidate) replaces the champion if it is clearly better
    (by CHALLENGE_Z standard errors, and by MATERIAL_GAIN of its F1); after a drift found,
    also if the champion does no better than it (the test's evidence against the champion
    counts), or when this run's rows alone were too few to judge on (this_run_alone
    False: the newest rows reach back into files the champion may have learnt, so the
    comparison would favour it): a drift found retrains, as the course does, on the
    window that did best, unless the champion clearly beats it on the rows it did not learn
    (unlearnt, a mask of the newest rows; all of them by default), or the window's model
    finds none of the clients who left there and the champion some (a window that mixes
    two behaviours can flag nobody).
    """
    rows = len(champion.truth)
    figures = "; ".join(
        f"{c.window} {c.f1:.4f}" if c.f1 is not None else f"{c.window} not trained"
        for c in candidates
    )
    on = f"on the {rows:,} newest labelled rows (candidates out of fold)"
    best = best_candidate(candidates, judged)
    if best is None:
        return Choice(candidates, champion.f1, rows, None, f"no candidate: {figures}")
    material = judged[best.window].f1 >= champion.f1 * (1 + MATERIAL_GAIN)
    clearly = material and judged[best.window].beats(champion, CHALLENGE_Z)
    gives_way = drift_found and (
        champion.f1 < judged[best.window].f1
        or (not this_run_alone and not _holds(champion, judged[best.window], unlearnt))
    )
    if clearly or gives_way:
        how = "did better than the model found drifting"
        if clearly:
            how = "won"
        elif champion.f1 >= judged[best.window].f1:
            how = "did best of the candidates (this run's rows alone too few to judge; drift found)"
        return Choice(
            candidates,
            champion.f1,
            rows,
            best,
            f"{best.window} {how} {on}: {best.f1:.4f} against the deployed model's "
            f"{champion.f1:.4f} ({figures})",
        )
    than = "as well as" if drift_found else "clearly better than"
    return Choice(
        candidates,
        champion.f1,
        rows,
        None,
        f"the deployed model stays: no candidate did {than} its {champion.f1:.4f} {on} ({figures})",
    )


def _holds(champion: Judged, rival: Judged, unlearnt: np.ndarray | None) -> bool:
    """Whether champion stays against rival though judged on rows it may have learnt.

    It does when rival finds none of the clients who left and it finds some (that gives
    a client manager nobody to call), or when it beats rival on the rows it did not
    learn (unlearnt; all rows when unknown).
    """
    if rival.f1 == 0 < champion.f1:
        return True
    if unlearnt is not None:
        if not unlearnt.any():
            return False
        champion, rival = champion.only(unlearnt), rival.only(unlearnt)
    return champion.beats(rival)


def best_candidate(candidates: list[Candidate], judged: dict[str, Judged]) -> Candidate | None:
    """The candidate on the most rows unless another is better than it: a change in
    behaviour picks the newest data, and noise picks more data, drift found or not (on the
    few rows of small batches the highest F1 is chance, and a window of them is a worse
    model than all the data).
    """
    scored = sorted((c for c in candidates if c.f1 is not None), key=lambda c: c.rows, reverse=True)
    if not scored:
        return None
    best = scored[0]
    for candidate in scored[1:]:
        if judged[candidate.window].beats(judged[best.window]):
            best = candidate
    return best


def read_files(folder: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """Each named input file's rows, as ingestion read them (in one read: a year is 50,000)."""
    if not names:
        return {}
    return dict(zip(names, read_each([folder / name for name in names]), strict=True))
