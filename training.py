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

from drs.cli import build_parser, configure_logging, run_cli
from drs.clock import utc_now
from drs.config import TARGET, Config, load_config
from drs.datarules import read_dataset
from drs.errors import DataError
from drs.files import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    read_ingested_record,
    some_names,
    step_lock,
)
from drs.history import open_history
from drs.inputs import ingested_files
from drs.modelling import expected_performance, train
from drs.runs import ScorePurpose

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)


def save_model(model: Pipeline, config: Config, card: dict[str, Any]) -> str:
    """Write trainedmodel.pkl, then trainedmodel.json with card; returns the model's SHA-256.

    Two renames: a kill between them leaves a card that names another model, which
    deployment.py refuses, never a card that vouches for the wrong model.
    """
    with atomic_path(config.model_path) as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        model_sha256 = file_sha256(tmp)
    atomic_write_json(
        config.model_card_path,
        {"model_sha256": model_sha256, "trained_at": utc_now(), **card},
    )
    return model_sha256


def ingested_hashes(config: Config) -> dict[str, str]:
    """The files of the latest ingestion, name -> SHA-256 ({} if none is recorded).

    Recorded with the model: its training files can later be told from changed ones,
    and the files that arrive after it from those it saw.
    """
    with open_history(config) as history:
        return ingested_files(history, config.input_folder)


def run(
    config: Config, data: pd.DataFrame | None = None, trained_on: list[str] | None = None
) -> Pipeline:
    """Train on config's finaldata.csv; write trainedmodel.pkl and trainedmodel.json.

    data and trained_on: train on these rows instead, the rows of those input files
    (fullprocess.py's retraining picks a window of the data).
    """
    if not config.final_data_path.exists():
        raise DataError(f"{config.final_data_path}: not found; run ingestion.py first")
    record = config.ingested_record_path
    record_sha256 = file_sha256(record) if record.exists() else None
    ingested = read_ingested_record(record) if record.exists() else []
    if data is None:
        data, trained_on = read_dataset(config.final_data_path), ingested
        source = {"data": config.final_data_path.name}
        source["data_sha256"] = file_sha256(config.final_data_path)
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
        "rows": int(data[TARGET].notna().sum()),
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
    config: Config, model_sha256: str, expected: dict[str, Any], trained_on: list[str]
) -> None:
    """The expected F1 into the run history, under a name that says what it is."""
    if expected["f1"] is None:
        return
    import scoring

    where = some_names(trained_on) or "the training data"
    label = f"{expected['folds']}-fold cross-validation on {where}"
    scoring.record_score(config, expected["f1"], model_sha256, label, ScorePurpose.EXPECTED_CV)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = load_config(args.config)
        with step_lock(config):
            run(config)
        print(config.model_path)

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
