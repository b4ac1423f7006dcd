"""Drift: has the deployed model stopped being right (model drift), have the clients changed
(feature drift)?

A model-drift test is one function from the evidence to a verdict, and one entry in
MODEL_DRIFT_TESTS; the config key drift_test names an entry. Feature drift is one
measure with one threshold. fullprocess.py decides with these, reporting.py and the
API show what they found. Importing this module is cheap (the cron tick checks the
configured test's name); numpy and scipy are imported where they are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from drs.config import FEATURES, Config, DriftTest
from drs.errors import DataError
from drs.files import file_sha256, some_names
from drs.history import History
from drs.runs import ScorePurpose

if TYPE_CHECKING:
    import pandas as pd

# z-score and interquartile-range rules of the two score-history tests.
Z_THRESHOLD = 2.0
IQR_FACTOR = 1.5
# Wasserstein-1 distance between a feature's reference and current values, divided by
# the reference's standard deviation: unit-free, so one threshold fits every feature.
FEATURE_DRIFT_MEASURE = "normalised Wasserstein distance"
FEATURE_DRIFT_THRESHOLD = 0.1
# Below this many rows the distance of two samples of one distribution can reach ~0.1.
SMALL_SAMPLE = 1_000
# A feature has drifted only when its distance is over the threshold and a permutation
# test says chance hardly makes one as large: p-value under FEATURE_DRIFT_ALPHA, out of
# PERMUTATIONS shuffles of the two samples' rows (seeded; at most PERMUTED_ROWS rows).
FEATURE_DRIFT_ALPHA = 0.01
PERMUTATIONS = 200
PERMUTED_ROWS = 10_000
# The exits test: the new clients who left against the number the model expected, in
# standard deviations of that number; alarm beyond EXITS_Z and EXITS_SHARE of it.
EXITS_Z = 3.0
EXITS_SHARE = 0.2
# Simulated label sets behind the interval of an estimated F1 (seeded).
ESTIMATE_DRAWS = 400


class DriftVerdict(NamedTuple):
    """Whether the deployed model drifted, the one-line reason a person reads, and the bound.

    bound: the F1 below which the test calls it drift, for charts (None if it has none);
    on_estimate: the verdict rests on an F1 estimated without labels (no retraining on
    it: there is nothing labelled to train on); fallback: why the named test could not
    decide and the raw test did; on_new_rows: the verdict rests on the labelled rows of
    this run's new files alone (the others weigh every ingested row, or a test score),
    so a drift found says those rows behave differently from what the model learnt.
    """

    drifted: bool
    reason: str
    bound: float | None = None
    on_estimate: bool = False
    fallback: str | None = None
    on_new_rows: bool = False


# The expected test's tolerance: this many standard errors of the difference between the
# expected F1 (the standard error of the cross-validated mean) and the F1 measured on
# the new rows (its sampling error there).
TOLERANCE_Z = 2.0


class Evidence(NamedTuple):
    """What a model-drift test may look at."""

    new_f1: float  # the deployed model's F1 on the new finaldata.csv
    deployed_f1: float  # its F1 on the test data when it was deployed (latestscore.txt)
    score_history: Sequence[float] = ()  # F1 of every model trained so far on the test data
    expected: dict[str, Any] | None = None  # the deployed model's expected performance
    batch: Measured | None = None  # its F1 on the labelled rows of the new files only
    estimated: Measured | None = None  # its estimated F1 on their rows without labels
    batch_estimated: Measured | None = None  # its estimated F1 on the labelled rows, labels aside
    trained_estimated: Measured | None = None  # its estimated F1 on its own training data


class Measured(NamedTuple):
    """An F1 on some rows, and how many rows it rests on (the positives it weighs).

    An estimated F1 also carries its sampling standard deviation and 95 % interval.
    """

    f1: float
    rows: int
    relevant: float  # (actual or expected positives + predicted positives) / 2
    positives: float | None = None  # actual (or expected) positives: F1 needs one
    sd: float | None = None
    low: float | None = None
    high: float | None = None


def expected_error(expected: dict[str, Any]) -> float:
    """The standard error of the cross-validated mean F1: the folds' spread / sqrt(folds)."""
    return expected.get("f1_sd", 0.0) / math.sqrt(max(expected.get("folds") or 1, 1))


def sampling_error(f1: float, measured: Measured) -> float:
    """The standard deviation of an F1 measured on these rows when the true F1 is f1.

    An estimate carries its own (simulated); otherwise the delta method on the
    confusion counts: with R = `relevant` cases, sqrt(f1 (1 - f1) (2 - f1) / (2 R)).
    """
    if measured.sd is not None:
        return measured.sd
    return math.sqrt(f1 * (1 - f1) * (2 - f1) / (2 * max(measured.relevant, 0.5)))


def tolerance(
    expected: dict[str, Any], measured: Measured, reference: float | None = None
) -> float:
    """How far below the expected F1 an F1 may fall by chance: TOLERANCE_Z standard errors.

    The standard error of the cross-validated mean and the sampling error of an F1 on
    the measured rows (at the reference F1, by default the expected one), added in
    quadrature: a small batch gets a wide tolerance, so it does not make the test flap,
    and a large one a narrow one, so a real loss shows.
    """
    sampling = sampling_error(expected["f1"] if reference is None else reference, measured)
    return TOLERANCE_Z * math.sqrt(expected_error(expected) ** 2 + sampling**2)


def calibrated(probabilities: Any, calibration: dict[str, Any] | None) -> Any:
    """Probabilities through the model's calibration map (as training recorded it), if any.

    The map is increasing and piecewise linear (isotonic regression of the outcomes on
    the cross-validated probabilities), stored as its corner points.
    """
    import numpy as np

    chance = np.asarray(probabilities, dtype=float)
    if not calibration or not calibration.get("points"):
        return chance
    x, y = np.asarray(calibration["points"], dtype=float).T
    return np.interp(chance, x, y)


def estimated(probabilities: Any, predicted: Any = None) -> Measured:
    """The F1 a model expects of itself on rows without labels (confidence-based, as CBPE).

    Each row counts as a positive with its (calibrated) probability: the expected
    confusion counts give an F1. Its interval comes from label sets drawn from those
    probabilities (seeded). predicted: the model's 0/1 predictions when its calibrated
    probabilities are given (default: probability over 0.5).
    """
    import numpy as np

    chance = np.asarray(probabilities, dtype=float)
    said = chance > 0.5 if predicted is None else np.asarray(predicted) == 1
    true_positives = float(chance[said].sum())
    false_positives = float((1 - chance[said]).sum())
    false_negatives = float(chance[~said].sum())
    found = 2 * true_positives + false_positives + false_negatives
    draws = np.random.default_rng(0).random((ESTIMATE_DRAWS, len(chance))) < chance
    hits = 2 * (draws & said).sum(axis=1)
    totals = draws.sum(axis=1) + said.sum()
    f1s = np.divide(hits, totals, out=np.zeros(len(totals)), where=totals > 0)
    low, high = np.quantile(f1s, [0.025, 0.975]) if len(chance) else (0.0, 0.0)
    return Measured(
        2 * true_positives / found if found else 0.0,
        len(chance),
        (float(chance.sum()) + float(said.sum())) / 2,
        float(chance.sum()),
        float(f1s.std(ddof=1)) if len(chance) else 0.0,
        float(low),
        float(high),
    )


def realised(actual: Any, predicted: Any) -> Measured:
    """The F1 of predictions against labels, with the rows and cases it rests on."""
    import numpy as np

    actual, predicted = np.asarray(actual) == 1, np.asarray(predicted) == 1
    true_positives = float(np.sum(actual & predicted))
    found = float(np.sum(actual) + np.sum(predicted))
    return Measured(
        2 * true_positives / found if found else 0.0,
        len(actual),
        found / 2,
        float(np.sum(actual)),
    )


def raw(evidence: Evidence) -> DriftVerdict:
    """Drift when the new-data F1 is below the deployed score at all (the course's test)."""
    drifted = evidence.new_f1 < evidence.deployed_f1
    verb = "<" if drifted else ">="
    return DriftVerdict(
        drifted,
        f"new-data F1 {evidence.new_f1:.4f} {verb} deployed {evidence.deployed_f1:.4f}",
        evidence.deployed_f1,
    )


def parametric(evidence: Evidence) -> DriftVerdict:
    """Drift when the new-data F1 is Z_THRESHOLD standard deviations below the history mean."""
    import statistics

    if len(evidence.score_history) < 2:
        return _too_short("parametric", evidence)
    mean = statistics.fmean(evidence.score_history)
    spread = statistics.stdev(evidence.score_history)
    bound = mean - Z_THRESHOLD * spread
    return _below(evidence.new_f1, bound, f"mean {mean:.4f} - {Z_THRESHOLD:g} sd {spread:.4f}")


def nonparametric(evidence: Evidence) -> DriftVerdict:
    """Drift when the new-data F1 is below Q1 - IQR_FACTOR * IQR of the score history."""
    import statistics

    if len(evidence.score_history) < 2:
        return _too_short("nonparametric", evidence)
    q1, _, q3 = statistics.quantiles(evidence.score_history, n=4, method="inclusive")
    bound = q1 - IQR_FACTOR * (q3 - q1)
    return _below(evidence.new_f1, bound, f"Q1 {q1:.4f} - {IQR_FACTOR:g} IQR {q3 - q1:.4f}")


def _too_short(test: str, evidence: Evidence) -> DriftVerdict:
    """The raw comparison, said so, while the history is too short to estimate a spread.

    Only a newly trained model adds a test score to the history, so this lasts until
    the second model.
    """
    verdict = raw(evidence)
    why = f"the {test} test needs 2 past test scores, the history has {len(evidence.score_history)}"
    return verdict._replace(reason=f"{verdict.reason} (raw test: {why})", fallback=why)


def _below(new_f1: float, bound: float, rule: str) -> DriftVerdict:
    drifted = new_f1 < bound
    verb = "<" if drifted else ">="
    return DriftVerdict(drifted, f"new-data F1 {new_f1:.4f} {verb} {bound:.4f} ({rule})", bound)


def expected(evidence: Evidence) -> DriftVerdict:
    """Drift when the F1 on the new files is below the expected F1 by more than the tolerance.

    Only the rows of the new files count (finaldata.csv also holds the rows the model
    was trained on). Clients who are harder to call than the training data's (a covariate
    shift: more of them near the decision boundary) lower the F1 of a model that is still
    right about each of them; the F1 the model's calibrated probabilities give on these
    very rows says how much, so the lower of the two is the expectation. Without labels
    the estimated F1 stands in; with neither, or with no expected F1 recorded for the
    model, the raw comparison decides, said so. The estimate is held to the same
    estimate on the model's training data, so what the estimate gets wrong on clients
    like those it was trained on cancels out. When no client of the new rows left, or
    the model flagged none of them, their F1 is 0 whatever: no verdict (the exits count
    still judges them).
    """
    known = evidence.expected or {}
    if known.get("f1") is None:
        return _fallback(evidence, "no expected F1 recorded for the deployed model")
    measured, what = evidence.batch, "new-data F1"
    if measured is not None and measured.positives is not None:
        flagged = round(2 * measured.relevant - measured.positives)
        if not measured.positives or not flagged:
            return DriftVerdict(False, _not_measurable(measured.rows, measured.positives, flagged))
    on_estimate = measured is None and evidence.estimated is not None
    if on_estimate:
        measured, what = evidence.estimated, "estimated F1 (no labels)"
    if measured is None:
        return _fallback(evidence, "no rows of new files to score")
    reference, said = known["f1"], f"expected {known['f1']:.4f}"
    harder = evidence.batch_estimated
    if not on_estimate and harder is not None and harder.f1 < reference:
        reference, said = harder.f1, f"{said}, {harder.f1:.4f} on these clients"
    allowed = tolerance(known, measured, reference)
    own = evidence.trained_estimated
    if on_estimate and own is not None:
        # Like with like: the same estimate on the data the model was trained on.
        reference, said = own.f1, f"{own.f1:.4f} estimated on its training data"
        allowed = TOLERANCE_Z * math.hypot(sampling_error(own.f1, measured), own.sd or 0.0)
    bound = reference - allowed
    drifted = measured.f1 < bound
    verb = "<" if drifted else ">="
    interval = (
        f" (95 % interval {measured.low:.4f}-{measured.high:.4f})"
        if on_estimate and measured.low is not None and measured.high is not None
        else ""
    )
    return DriftVerdict(
        drifted,
        f"{what} {measured.f1:.4f}{interval} {verb} {said} - tolerance "
        f"{allowed:.4f} on {measured.rows:,} rows",
        bound,
        on_estimate,
        on_new_rows=not on_estimate,
    )


def _not_measurable(rows: int, left: float, flagged: int) -> str:
    """Why an F1 says nothing here: with nobody who left, or nobody flagged, it is 0 anyway."""
    if not left:
        return (
            f"F1 not measurable: no client of the {rows:,} new rows left "
            f"(the model flagged {flagged:,} of them)"
        )
    return (
        f"F1 not measurable: the model flagged none of the {rows:,} new rows "
        f"({round(left):,} of them left); the exits count judges them"
    )


def _fallback(evidence: Evidence, why: str) -> DriftVerdict:
    verdict = raw(evidence)
    return verdict._replace(reason=f"{verdict.reason} (raw test: {why})", fallback=why)


def exits(actual: Any, probabilities: Any) -> DriftVerdict:
    """Whether as many of the new clients left as the model expected (observed against expected).

    O clients left, the model's probabilities expected E = sum p, give or take
    sqrt(sum p (1 - p)): drift when O is more than EXITS_Z of those from E and differs
    from it by more than EXITS_SHARE of E. A change of attrition rate shows here long
    before it moves an F1; a change of who the clients are, with each client's chance
    of leaving unchanged, does not.
    """
    import numpy as np

    chance = np.asarray(probabilities, dtype=float)
    observed = int(np.sum(np.asarray(actual) == 1))
    expected_exits = float(chance.sum())
    spread = math.sqrt(float(np.sum(chance * (1 - chance))))
    z = (observed - expected_exits) / spread if spread > 0 else 0.0
    drifted = abs(z) > EXITS_Z and abs(observed - expected_exits) > EXITS_SHARE * expected_exits
    rule = f"|z| {'>' if abs(z) > EXITS_Z else '<='} {EXITS_Z:g}"
    # A model sure that nobody leaves makes the spread tiny and z astronomical.
    shown = f"{z:+.1f}" if abs(z) < 100 else f"{'over +' if z > 0 else 'under -'}99"
    return DriftVerdict(
        drifted,
        f"{observed:,} of {len(chance):,} new clients left, the model expected "
        f"{expected_exits:,.1f} (z {shown}, {rule})",
        on_new_rows=True,
    )


MODEL_DRIFT_TESTS: dict[DriftTest, Callable[[Evidence], DriftVerdict]] = {
    DriftTest.RAW: raw,
    DriftTest.PARAMETRIC: parametric,
    DriftTest.NONPARAMETRIC: nonparametric,
    DriftTest.EXPECTED: expected,
}


def stale_test_data(
    on_test_data: Measured | None,
    expected_performance: dict[str, Any] | None,
    estimated_on_test_data: Measured | None = None,
) -> str | None:
    """Why the test data no longer represents the clients, or None when it still does.

    Its own labels disagree with the deployed model: the model's F1 on it is below what
    it should reach there (its expected F1, or the F1 its calibrated probabilities give
    on those rows when that is lower, as in the expected test) by more than the expected
    test's tolerance. Clients who merely look different (a covariate shift) do not make
    it stale: the model can still be right about them, and the test data still tells.
    """
    known = expected_performance or {}
    if on_test_data is None or known.get("f1") is None:
        return None
    reference, said = known["f1"], f"its expected {known['f1']:.4f}"
    if estimated_on_test_data is not None and estimated_on_test_data.f1 < reference:
        reference = estimated_on_test_data.f1
        said = f"{said}, {reference:.4f} on those clients,"
    allowed = tolerance(known, on_test_data, reference)
    if on_test_data.f1 >= reference - allowed:
        return None
    return f"the deployed model's F1 on it, {on_test_data.f1:.4f}, is below {said} - {allowed:.4f}"


STALE_TEST_DATA = "test data no longer represents the clients; drift checks against it are blind"


def model_drift(test: str, evidence: Evidence) -> DriftVerdict:
    """The verdict of the named test; pure, so each test is checked on known histories."""
    return MODEL_DRIFT_TESTS[DriftTest(test)](evidence)


def past_test_scores(history: History) -> list[float]:
    """F1 on the test data of every model trained so far, oldest first."""
    tests = history.rows("SELECT f1 FROM scores WHERE purpose = ?", (ScorePurpose.TEST.value,))
    return [row["f1"] for row in tests]


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per feature: normalised Wasserstein distance of current from reference, its p-value,
    and whether it drifted (distance over FEATURE_DRIFT_THRESHOLD, p under FEATURE_DRIFT_ALPHA).

    Empty cells are left out. With a constant reference (std 0) any difference is
    infinite drift; a feature without values on either side is unknown (value None).
    The p-value says how often shuffling the rows of both samples gives a distance at
    least as large: a small batch's distance is mostly noise, and it has to beat that.
    """
    import numpy as np
    from scipy.stats import wasserstein_distance

    drift = {}
    for feature in FEATURES:
        before = reference[feature].dropna().to_numpy(dtype=float)
        after = current[feature].dropna().to_numpy(dtype=float)
        value: float | None
        p_value: float | None = None
        if len(before) == 0 or len(after) == 0:
            value = None
        else:
            distance = float(wasserstein_distance(before, after))
            spread = float(np.std(before, ddof=1)) if len(before) > 1 else 0.0
            value = distance / spread if spread > 0 else 0.0 if distance == 0 else math.inf
            p_value = permutation_p_value(before, after) if distance > 0 else 1.0
        drift[feature] = {
            "value": value,
            "threshold": FEATURE_DRIFT_THRESHOLD,
            "p_value": p_value,
            "drifted": value is not None
            and value > FEATURE_DRIFT_THRESHOLD
            and p_value is not None
            and p_value < FEATURE_DRIFT_ALPHA,
        }
    return drift


def permutation_p_value(before: Any, after: Any) -> float:
    """P-value of the Wasserstein distance of two samples: the share of shuffles at least as far.

    All shuffles at once: on the pooled values, sorted, a shuffle is a random choice of
    which m of the N rows are `after`, and the distance is sum over the gaps g_k between
    neighbouring values of |k / n - T_k N / (n m)| g_k, T_k the `after` rows among the
    first k: one cumulative sum. Samples over PERMUTED_ROWS rows together are thinned
    first (seeded), the observed distance measured on the same rows.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if len(before) + len(after) > PERMUTED_ROWS:
        kept_after = min(len(after), PERMUTED_ROWS // 2)
        after = rng.choice(after, kept_after, replace=False)
        before = rng.choice(before, min(len(before), PERMUTED_ROWS - kept_after), replace=False)
    n, m = len(before), len(after)
    pooled = np.concatenate([before, after])
    order = np.argsort(pooled, kind="stable")
    gaps = np.diff(pooled[order]).astype(np.float32)
    observed = (order >= n)[None, :]
    shuffled = np.argsort(rng.random((PERMUTATIONS, n + m), dtype=np.float32), axis=1) < m
    seen = np.cumsum(np.vstack([observed, shuffled]), axis=1, dtype=np.int32)[:, :-1]
    share = np.arange(1, n + m, dtype=np.float32) / n
    distances = np.abs(share - seen * np.float32((n + m) / (n * m))) @ gaps
    at_least = int(np.sum(distances[1:] >= distances[0] * (1 - 1e-5)))
    return (1 + at_least) / (1 + PERMUTATIONS)


def drifted_features(drift: dict[str, dict[str, Any]]) -> list[str]:
    return [feature for feature, measured in drift.items() if measured["drifted"]]


def describe_feature_drift(drift: dict[str, dict[str, Any]]) -> str:
    """'2 of 3 features drifted (lastmonth_activity 0.153, ...)': the dataset-level answer."""
    drifted = drifted_features(drift)
    if not drifted:
        return f"no feature drifted (of {len(drift)})"
    values = ", ".join(f"{feature} {_distance(drift[feature]['value'])}" for feature in drifted)
    return f"{len(drifted)} of {len(drift)} features drifted ({values})"


def _distance(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def histograms(
    reference: pd.DataFrame, current: pd.DataFrame, bins: int = 30
) -> dict[str, dict[str, list[float]]]:
    """Per feature: shared bin edges up to the 99th percentile, and each side's densities.

    Small enough to record with a run, so a report draws what the run measured.
    """
    import numpy as np

    drawn = {}
    for feature in FEATURES:
        before = reference[feature].dropna().to_numpy(dtype=float)
        after = current[feature].dropna().to_numpy(dtype=float)
        both = np.concatenate([before, after])
        high = float(np.quantile(both, 0.99)) if both.size else 1.0
        edges = np.linspace(0.0, high or 1.0, bins + 1)
        drawn[feature] = {
            "edges": edges.tolist(),
            "reference": _density(before, edges),
            "current": _density(after, edges),
        }
    return drawn


def _density(values: Any, edges: Any) -> list[float]:
    import numpy as np

    if len(values) == 0:
        return [0.0] * (len(edges) - 1)
    counts, _ = np.histogram(values, bins=edges, density=True)
    return [float(count) for count in counts]


def measure(
    reference: pd.DataFrame, reference_label: str, current: pd.DataFrame, current_label: str
) -> dict[str, Any]:
    """Feature drift of current from reference, with what each side is: JSON, to record."""
    return {
        "measure": FEATURE_DRIFT_MEASURE,
        "threshold": FEATURE_DRIFT_THRESHOLD,
        "reference": reference_label,
        "reference_rows": len(reference),
        "current": current_label,
        "current_rows": len(current),
        "features": feature_drift(reference, current),
        "histograms": histograms(reference, current),
    }


def training_data(config: Config, release: Any) -> tuple[pd.DataFrame, str]:
    """The deployed model's training data and a label saying what it is.

    Its training files when the input folder still has them all, unchanged (their
    SHA-256 as recorded with the model); else finaldata.csv while it is still exactly
    the data the model was trained on. DataError saying why when neither is there.
    """
    from drs.datarules import read_dataset, read_many

    files = release.trained_on()
    names = f"release {release.id}, trained on {some_names(files) or 'no recorded files'}"
    card = release.model_card()
    hashes = card.get("trained_on_sha256") or {}
    present = [config.input_folder / name for name in files]
    if files and all(
        path.is_file() and file_sha256(path) == hashes.get(path.name) for path in present
    ):
        return read_many(present), f"training data of {names}"
    trained_sha256 = card.get("data_sha256")
    final = config.final_data_path
    if trained_sha256 and final.is_file() and file_sha256(final) == trained_sha256:
        return read_dataset(final), f"training data of {names} ({final.name})"
    raise DataError(
        f"the training data of {names} is no longer in {config.input_folder.name} or {final.name}"
    )
