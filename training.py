"""Train the attrition-risk model on finaldata.csv and save trainedmodel.pkl.

The model is a scikit-learn Pipeline: a median imputer, so rows with blank feature
cells can be predicted, then the course's logistic regression. trainedmodel.json
beside it records what it was trained on, so deployment.py can refuse a mixed set,
and how well it is expected to do: its F1 cross-validated on its own training data
(stratified, seeded) and how well calibrated its probabilities are there.
"""

from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any

import common
import drift

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
    labelled = data[data[common.TARGET].notna()]
    dropped = len(data) - len(labelled)
    if dropped:
        logger.info("left out %d row(s) without a value in '%s'", dropped, common.TARGET)
    classes = labelled[common.TARGET].nunique()
    if classes < 2:
        raise common.DataError(
            f"cannot train: '{common.TARGET}' needs both 0 and 1 in the data, "
            f"found {classes} class(es) in {len(labelled)} labelled row(s)"
        )
    model = build_model()
    model.fit(labelled[list(common.FEATURES)], labelled[common.TARGET].astype(int))
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
    score and a reliability table (mean predicted against observed rate per bin).
    """
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    labelled = data[data[common.TARGET].notna()]
    features = labelled[list(common.FEATURES)]
    target = labelled[common.TARGET].astype(int).to_numpy()
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


def save_model(model: Pipeline, config: common.Config, card: dict[str, Any]) -> str:
    """Write trainedmodel.pkl, then trainedmodel.json with card; returns the model's SHA-256.

    Two renames: a kill between them leaves a card that names another model, which
    deployment.py refuses, never a card that vouches for the wrong model.
    """
    with common.atomic_path(config.model_path) as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        model_sha256 = common.file_sha256(tmp)
    common.atomic_write_json(
        config.model_card_path,
        {"model_sha256": model_sha256, "trained_at": common.utc_now(), **card},
    )
    return model_sha256


def ingested_hashes(config: common.Config) -> dict[str, str]:
    """The files of the latest ingestion, name -> SHA-256 ({} if none is recorded).

    Recorded with the model: its training files can later be told from changed ones,
    and the files that arrive after it from those it saw.
    """
    import json

    with common.open_history(config) as history:
        runs = history.rows(
            "SELECT files_json FROM ingestion_runs WHERE input_folder = ? AND status = 'ok' "
            "ORDER BY id DESC LIMIT 1",
            (str(config.input_folder),),
        )
    files = json.loads(runs[0]["files_json"]) if runs else []
    return {entry["name"]: entry["sha256"] for entry in files if isinstance(entry, dict)}


def run(
    config: common.Config, data: pd.DataFrame | None = None, trained_on: list[str] | None = None
) -> Pipeline:
    """Train on config's finaldata.csv; write trainedmodel.pkl and trainedmodel.json.

    data and trained_on: train on these rows instead, the rows of those input files
    (fullprocess.py's retraining picks a window of the data).
    """
    if not config.final_data_path.exists():
        raise common.DataError(f"{config.final_data_path}: not found; run ingestion.py first")
    record = config.ingested_record_path
    record_sha256 = common.file_sha256(record) if record.exists() else None
    ingested = common.read_ingested_record(record) if record.exists() else []
    if data is None:
        data, trained_on = common.read_dataset(config.final_data_path), ingested
        source = {"data": config.final_data_path.name}
        source["data_sha256"] = common.file_sha256(config.final_data_path)
    else:
        source = {"data": f"input files {', '.join(trained_on or [])}"}
    model = train(data)
    expected = expected_performance(data)
    seen = ingested_hashes(config)
    card = {
        **source,
        "ingested_record_sha256": record_sha256,
        "trained_on": trained_on,
        "trained_on_sha256": {name: seen[name] for name in trained_on or [] if name in seen},
        "ingested_when_trained": seen,
        "rows": int(data[common.TARGET].notna().sum()),
        "expected": expected,
    }
    model_sha256 = save_model(model, config, card)
    record_expected(config, model_sha256, expected, trained_on or [])
    logger.info(
        "trained on %s; expected F1 %s",
        source["data"],
        "unknown" if expected["f1"] is None else f"{expected['f1']:.4f} (cross-validated)",
    )
    return model


def record_expected(
    config: common.Config, model_sha256: str, expected: dict[str, Any], trained_on: list[str]
) -> None:
    """The expected F1 into the run history, under a name that says what it is."""
    if expected["f1"] is None:
        return
    import scoring

    where = ", ".join(trained_on) or "the training data"
    label = f"{expected['folds']}-fold cross-validation on {where}"
    scoring.record_score(config, expected["f1"], model_sha256, label, "expected-cv")


def main(argv: list[str] | None = None) -> int:
    args = common.build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = common.load_config(args.config)
        with common.step_lock(config):
            run(config)
        print(config.model_path)

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
