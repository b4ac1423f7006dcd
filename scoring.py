"""Score a model: F1 of its predictions on a dataset (§4).

From the command line: the trained model of output_model_path on testdata.csv,
written as one number to latestscore.txt.
"""

from __future__ import annotations

import logging
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
    config: common.Config, f1: float, model_sha256: str | None, dataset: str, purpose: str
) -> None:
    """Add a score to the run history (purpose: 'test', 'drift-check', ...)."""
    with common.open_history(config) as history:
        history.insert(
            "scores",
            {
                "recorded_at": common.utc_now(),
                "f1": f1,
                "model_sha256": model_sha256,
                "dataset": dataset,
                "purpose": purpose,
            },
        )


def run(config: common.Config) -> float:
    """Score output_model_path's trained model on testdata.csv; write latestscore.txt."""
    model = common.load_model(config.model_path)
    f1 = f1_of(model, common.read_dataset(config.test_data_path))
    common.write_score(config.score_path, f1)
    model_sha256 = common.file_sha256(config.model_path)
    record_score(config, f1, model_sha256, str(config.test_data_path), "test")
    logger.info("F1 %.4f of %s on %s", f1, config.model_path, config.test_data_path)
    return f1


def main(argv: list[str] | None = None) -> int:
    args = common.build_parser(__doc__).parse_args(argv)

    def action() -> None:
        print(run(common.load_config(args.config)))

    return common.run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
