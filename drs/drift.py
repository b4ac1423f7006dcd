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

from drs.config import FEATURES, Config
from drs.errors import ConfigError, DataError
from drs.files import file_sha256, some_names
from drs.history import History

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


class DriftVerdict(NamedTuple):
    """Whether the deployed model drifted, the one-line reason a person reads, and the bound.

    bound: the F1 below which the test calls it drift, for charts (None if it has none).
    """

    drifted: bool
    reason: str
    bound: float | None = None


# The expected test's tolerance: this many standard errors of the F1 measured on the
# new data, the cross-validation's spread and the batch's own sampling error together.
TOLERANCE_Z = 2.0


class Evidence(NamedTuple):
    """What a model-drift test may look at."""

    new_f1: float  # the deployed model's F1 on the new finaldata.csv
    deployed_f1: float  # its F1 on the test data when it was deployed (latestscore.txt)
    score_history: Sequence[float] = ()  # F1 of every model trained so far on the test data
    expected: dict[str, Any] | None = None  # the deployed model's expected performance
    batch: Measured | None = None  # its F1 on the labelled rows of the new files only
    estimated: Measured | None = None  # its estimated F1 on their rows without labels


class Measured(NamedTuple):
    """An F1 on some rows, and how many rows it rests on (the positives it weighs)."""

    f1: float
    rows: int
    relevant: float  # (actual or expected positives + predicted positives) / 2
    positives: float | None = None  # actual (or expected) positives: F1 needs one


def tolerance(expected: dict[str, Any], measured: Measured) -> float:
    """How far below the expected F1 an F1 may fall by chance: TOLERANCE_Z standard errors.

    The cross-validation's spread (f1_sd) and the sampling error of an F1 measured
    on `relevant` cases, sqrt(F1 (1 - F1) / relevant), added in quadrature: a small
    batch gets a wide tolerance, so it does not make the test flap.
    """
    f1 = expected["f1"]
    sampling = f1 * (1 - f1) / max(measured.relevant, 1.0)
    return TOLERANCE_Z * math.sqrt(expected.get("f1_sd", 0.0) ** 2 + sampling)


def estimated(probabilities: Any) -> Measured:
    """The F1 a model expects of itself on rows without labels (confidence-based, as CBPE).

    Each row counts as a positive with its predicted probability: the expected
    confusion counts give an F1. It is right when the probabilities are calibrated.
    """
    import numpy as np

    chance = np.asarray(probabilities, dtype=float)
    predicted = chance > 0.5
    true_positives = float(chance[predicted].sum())
    false_positives = float((1 - chance[predicted]).sum())
    false_negatives = float(chance[~predicted].sum())
    found = 2 * true_positives + false_positives + false_negatives
    return Measured(
        2 * true_positives / found if found else 0.0,
        len(chance),
        (float(chance.sum()) + float(predicted.sum())) / 2,
        float(chance.sum()),
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
    """The raw comparison, said so, while the history is too short to estimate a spread."""
    verdict = raw(evidence)
    return verdict._replace(reason=f"{verdict.reason} ({test} test needs 2+ past scores)")


def _below(new_f1: float, bound: float, rule: str) -> DriftVerdict:
    drifted = new_f1 < bound
    verb = "<" if drifted else ">="
    return DriftVerdict(drifted, f"new-data F1 {new_f1:.4f} {verb} {bound:.4f} ({rule})", bound)


def expected(evidence: Evidence) -> DriftVerdict:
    """Drift when the F1 on the new files is below the expected F1 by more than the tolerance.

    Only the rows of the new files count (finaldata.csv also holds the rows the model
    was trained on). Without labels the estimated F1 stands in; with neither, or with
    no expected F1 recorded for the model, the raw comparison decides, said so. When no
    client of the new rows left, their F1 is 0 whatever the model does: no verdict.
    """
    known = evidence.expected or {}
    if known.get("f1") is None:
        verdict = raw(evidence)
        return verdict._replace(reason=f"{verdict.reason} (no expected F1 recorded: raw test)")
    measured, what = evidence.batch, "new-data F1"
    if measured is not None and measured.positives == 0:
        flagged = round(2 * measured.relevant)
        return DriftVerdict(
            False,
            f"F1 not measurable: no client of the {measured.rows:,} new rows left "
            f"(the model flagged {flagged:,} of them)",
        )
    if measured is None:
        measured, what = evidence.estimated, "estimated F1 (no labels)"
    if measured is None:
        verdict = raw(evidence)
        return verdict._replace(reason=f"{verdict.reason} (no rows of new files to score)")
    allowed = tolerance(known, measured)
    bound = known["f1"] - allowed
    drifted = measured.f1 < bound
    verb = "<" if drifted else ">="
    return DriftVerdict(
        drifted,
        f"{what} {measured.f1:.4f} {verb} expected {known['f1']:.4f} - tolerance "
        f"{allowed:.4f} on {measured.rows:,} rows",
        bound,
    )


MODEL_DRIFT_TESTS: dict[str, Callable[[Evidence], DriftVerdict]] = {
    "raw": raw,
    "parametric": parametric,
    "nonparametric": nonparametric,
    "expected": expected,
}


def stale_test_data(
    test_drift: dict[str, dict[str, Any]] | None,
    on_test_data: Measured | None,
    expected_performance: dict[str, Any] | None,
) -> str | None:
    """Why the test data no longer represents the clients, or None when it still does.

    Its features drifted from the newest batch's, or the deployed model scores on it
    below its own expected F1 by more than the expected test's tolerance.
    """
    reasons = []
    if test_drift and drifted_features(test_drift):
        reasons.append(f"against the newest data {describe_feature_drift(test_drift)}")
    known = expected_performance or {}
    if on_test_data is not None and known.get("f1") is not None:
        allowed = tolerance(known, on_test_data)
        if on_test_data.f1 < known["f1"] - allowed:
            reasons.append(
                f"the deployed model's F1 on it, {on_test_data.f1:.4f}, is below its "
                f"expected {known['f1']:.4f} - {allowed:.4f}"
            )
    return "; ".join(reasons) or None


STALE_TEST_DATA = "test data no longer represents the clients; drift checks against it are blind"
STALE_TEST_ACTION = (
    "Replace testdata.csv with a labelled sample of recent clients, and use the "
    "drift_test 'expected', which measures the model on the new files instead."
)


def check_test_name(config: Config) -> None:
    """The configured drift_test names a test of MODEL_DRIFT_TESTS; ConfigError if not."""
    if config.drift_test not in MODEL_DRIFT_TESTS:
        raise ConfigError(
            f"{config.path}: key 'drift_test' must be one of {', '.join(MODEL_DRIFT_TESTS)}"
            f" (found {config.drift_test!r})"
        )


def model_drift(test: str, evidence: Evidence) -> DriftVerdict:
    """The verdict of the named test; pure, so each test is checked on known histories."""
    return MODEL_DRIFT_TESTS[test](evidence)


def past_test_scores(history: History) -> list[float]:
    """F1 on the test data of every model trained so far, oldest first."""
    return [row["f1"] for row in history.rows("SELECT f1 FROM scores WHERE purpose = 'test'")]


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per feature: normalised Wasserstein distance of current from reference, and whether > 0.1.

    Empty cells are left out. With a constant reference (std 0) any difference is
    infinite drift; a feature without values on either side is unknown (value None).
    """
    import numpy as np
    from scipy.stats import wasserstein_distance

    drift = {}
    for feature in FEATURES:
        before = reference[feature].dropna().to_numpy(dtype=float)
        after = current[feature].dropna().to_numpy(dtype=float)
        value: float | None
        if len(before) == 0 or len(after) == 0:
            value = None
        else:
            distance = float(wasserstein_distance(before, after))
            spread = float(np.std(before, ddof=1)) if len(before) > 1 else 0.0
            value = distance / spread if spread > 0 else 0.0 if distance == 0 else math.inf
        drift[feature] = {
            "value": value,
            "threshold": FEATURE_DRIFT_THRESHOLD,
            "drifted": value is not None and value > FEATURE_DRIFT_THRESHOLD,
        }
    return drift


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


class Verdict(NamedTuple):
    """The answer a reader wants first: a status, what happened, and what to do."""

    status: str
    story: str
    action: str


# Outcomes of pipeline runs that say something of the model (a catch-up only reports).
MODEL_OUTCOMES = (
    "redeployed",
    "first model deployed",
    "retrained and staged",
    "kept the deployed model",
    "failed",
)


def finished_runs(history: History, newest: int | None = None) -> list[dict[str, Any]]:
    """The summaries of every finished fullprocess.py run (or of the newest), oldest first."""
    import json

    runs = []
    for row in history.rows(
        "SELECT finished_at, detail_json FROM (SELECT id, finished_at, detail_json "
        "FROM pipeline_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT ?) ORDER BY id",
        (-1 if newest is None else newest,),
    ):
        try:
            detail = json.loads(row["detail_json"])
        except (TypeError, json.JSONDecodeError):
            continue
        if isinstance(detail, dict) and isinstance(detail.get("outcome"), str):
            runs.append({**_sound(detail), "finished_at": row["finished_at"]})
    return runs


def _sound(detail: dict[str, Any]) -> dict[str, Any]:
    """A recorded run summary with its parts of the wrong shape left out (a damaged row)."""
    shapes = dict.fromkeys(
        ("model_drift", "data_drift", "deployed", "staged", "release_before", "retraining"), dict
    )
    sound = dict(detail)
    for key, shape in shapes.items():
        if key in sound and not isinstance(sound[key], shape):
            del sound[key]
    features = (sound.get("data_drift") or {}).get("features")
    if "data_drift" in sound and not (
        isinstance(features, dict) and all(isinstance(f, dict) for f in features.values())
    ):
        del sound["data_drift"]
    return sound


def latest_model_run(finished: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest of the finished runs (oldest first) that says something of the model."""
    about = [run for run in finished if run.get("outcome", "").startswith(MODEL_OUTCOMES)]
    return about[-1] if about else None


def _what_happened(run: dict[str, Any], found: dict[str, Any]) -> str:
    """The run's drift finding and what was done about it, in a sentence or two."""
    if not found:
        return ""
    said = (
        f"Model drift {'found' if found.get('drifted') else 'not found'} ({found.get('reason')})."
    )
    retraining = run.get("retraining") or {}
    if retraining.get("reason"):
        said += f" Retraining: {retraining['reason']}."
    new = run.get("deployed") or run.get("staged") or {}
    before = (run.get("release_before") or {}).get("f1")
    if new.get("f1") is not None and isinstance(before, float):
        change = (
            f"staged: F1 on the test data {new['f1']:.4f} against the live model's {before:.4f}"
            if run.get("staged")
            else f"deployed: F1 on the test data {before:.4f} -> {new['f1']:.4f}"
        )
        said += (
            f" Release {new.get('release_id')} {change}"
            + (f", expected {new['expected_f1']:.4f}" if new.get("expected_f1") else "")
            + "."
        )
    return said


def verdict(run: dict[str, Any] | None, release_id: str) -> Verdict:
    """Status, what happened and the next action, from a run's summary (None: no run yet).

    The first rule that holds gives the verdict: a failure first, then stale test data
    (every other check is blind then), then what the run did.
    """
    if run is None:
        return Verdict(
            "no automated check yet",
            f"Release {release_id} was deployed by hand; no fullprocess.py run has checked it "
            "against new data yet.",
            "Install the cron job (README, 'Running it unattended') or run fullprocess.py.",
        )
    outcome = run.get("outcome", "")
    found = run.get("model_drift") or {}
    features = (run.get("data_drift") or {}).get("features", {})
    happened = _what_happened(run, found)
    live = "its new release is live" if run.get("exit_code") == 2 else "the model is unchanged"
    staged = outcome == "retrained and staged"
    rules = [
        (
            outcome.startswith("failed"),
            "checks failing",
            f"The last automated run failed at {run.get('step')}: {run.get('problem')}; {live}.",
            "Fix the cause named above; the next cron run retries by itself.",
        ),
        (
            bool(run.get("test_data_stale")),
            "test data stale",
            f"The {STALE_TEST_DATA}: {run.get('test_data_stale')}. {happened}",
            STALE_TEST_ACTION,
        ),
        (
            outcome in ("redeployed", "retrained and staged"),
            "drift found, retrained",
            happened,
            "Promote the staged release (deployment.py --promote) once you have checked it."
            if staged
            else "None: the new model is live. Watch the next check.",
        ),
        (
            outcome == "first model deployed",
            "first model deployed",
            "The first model was trained and deployed as release "
            f"{(run.get('deployed') or {}).get('release_id')}.",
            "None. New files in the input folder are checked automatically.",
        ),
        (
            bool(found.get("drifted")),
            "drift found, model kept",
            happened,
            "Look at the newest files: the deployed model scores worse on them, yet no model "
            "trained on them did better where it could be checked.",
        ),
        (
            bool(drifted_features(features)),
            "data drift without model drift",
            f"{describe_feature_drift(features)}, but the deployed model still scores as well "
            f"on the new data ({found.get('reason')}).",
            "None yet. If the drift persists, check that the test data still represents the "
            "clients: drift checks measured against stale test data are blind.",
        ),
        (
            True,
            "model OK",
            f"No model drift at the last check ({found.get('reason', 'no check yet')}); "
            "no feature drifted.",
            "None.",
        ),
    ]
    return next(Verdict(status, story, action) for holds, status, story, action in rules if holds)
