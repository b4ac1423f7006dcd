"""Train the attrition-risk model on finaldata.csv and save trainedmodel.pkl.

The model is a scikit-learn Pipeline: a median imputer, so rows with blank feature
cells can be predicted, then the course's logistic regression. trainedmodel.json
beside it records what it was trained on, so deployment.py can refuse a mixed set.
"""

from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any

import common

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


def save_model(model: Pipeline, config: common.Config, card: dict[str, Any]) -> None:
    """Write trainedmodel.pkl, then trainedmodel.json with card and the model's SHA-256.

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


def ingested_hashes(config: common.Config, names: list[str]) -> dict[str, str]:
    """The SHA-256 each named file had when the latest ingestion took it ({} if not recorded).

    Recorded with the model, so its training files can later be told from changed ones.
    """
    import json

    with common.open_history(config) as history:
        runs = history.rows(
            "SELECT files_json FROM ingestion_runs WHERE input_folder = ? AND status = 'ok' "
            "ORDER BY id DESC LIMIT 1",
            (str(config.input_folder),),
        )
    files = json.loads(runs[0]["files_json"]) if runs else []
    hashes = {entry["name"]: entry["sha256"] for entry in files if isinstance(entry, dict)}
    return hashes if set(names) <= set(hashes) else {}


def run(config: common.Config) -> Pipeline:
    """Train on config's finaldata.csv; write trainedmodel.pkl and trainedmodel.json."""
    if not config.final_data_path.exists():
        raise common.DataError(f"{config.final_data_path}: not found; run ingestion.py first")
    record = config.ingested_record_path
    record_sha256 = common.file_sha256(record) if record.exists() else None
    trained_on = common.read_ingested_record(record) if record.exists() else []
    data = common.read_dataset(config.final_data_path)
    model = train(data)
    card = {
        "data": config.final_data_path.name,
        "data_sha256": common.file_sha256(config.final_data_path),
        "ingested_record_sha256": record_sha256,
        "trained_on": trained_on,
        "trained_on_sha256": ingested_hashes(config, trained_on),
        "rows": int(data[common.TARGET].notna().sum()),
    }
    save_model(model, config, card)
    logger.info("trained on %s", config.final_data_path)
    return model


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
