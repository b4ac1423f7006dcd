"""Score a model: F1 of its predictions on a dataset.

From the command line: the trained model of output_model_path on testdata.csv,
written as one number to latestscore.txt (and to latestscore.json with the model's
SHA-256 and the data it was computed on, which deployment.py checks).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from typing import TYPE_CHECKING, Any

import common

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def f1_of(model: Any, data: pd.DataFrame) -> float:
    """F1 of model's predictions against data's target; rows without a target are left out."""
    from sklearn.metrics import f1_score

    labelled = data[data[common.TARGET].notna()]
    if labelled.empty:
        raise common.DataError(f"no row with a value in '{common.TARGET}' to score against")
    predictions = model.predict(labelled[list(common.FEATURES)])
    truth = labelled[common.TARGET].astype(int)
    return float(f1_score(truth, predictions, zero_division=0.0))


def record_score(
    config: common.Config,
    f1: float,
    model_sha256: str | None,
    dataset: str,
    purpose: str,
    dataset_sha256: str | None = None,
) -> None:
    """Add a score to the run history (purpose: 'test', 'drift-check', ...).

    dataset_sha256 tells scores on the same data from scores on data of the same name.
    """
    with common.open_history(config) as history:
        history.insert(
            "scores",
            {
                "recorded_at": common.utc_now(),
                "f1": f1,
                "model_sha256": model_sha256,
                "dataset": dataset,
                "purpose": purpose,
                "dataset_sha256": dataset_sha256,
            },
        )


def run(config: common.Config) -> float:
    """Score output_model_path's trained model on testdata.csv; write latestscore.txt/.json."""
    model_bytes = _read_model_bytes(config)
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    model = pickle.loads(model_bytes)
    f1 = f1_of(model, common.read_dataset(config.test_data_path))
    common.write_score(config.score_path, f1)
    data_sha256 = common.file_sha256(config.test_data_path)
    common.atomic_write_json(
        config.score_card_path,
        {
            "model_sha256": model_sha256,
            "f1": f1,
            "dataset": config.test_data_path.name,
            "dataset_sha256": data_sha256,
            "scored_at": common.utc_now(),
        },
    )
    record_score(config, f1, model_sha256, str(config.test_data_path), "test", data_sha256)
    logger.info("F1 %.4f of %s on %s", f1, config.model_path, config.test_data_path)
    return f1


def _read_model_bytes(config: common.Config) -> bytes:
    """The trained model's bytes, read once: the hash recorded is the model scored."""
    try:
        return config.model_path.read_bytes()
    except FileNotFoundError:
        raise common.DataError(f"{config.model_path}: not found; run training.py first") from None


def main(argv: list[str] | None = None) -> int:
    args = common.build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = common.load_config(args.config)
        with common.step_lock(config):
            print(run(config))

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
