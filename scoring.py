"""Score a model: F1 of its predictions on a dataset.

From the command line: the trained model of output_model_path on testdata.csv,
written as one number to latestscore.txt (and to latestscore.json with the model's
SHA-256 and the data it was computed on, which deployment.py checks).
"""

from __future__ import annotations

import hashlib
import logging
import pickle

from drs.cli import build_parser, configure_logging, run_cli
from drs.clock import utc_now
from drs.config import Config, load_config
from drs.datarules import read_dataset
from drs.errors import DataError
from drs.files import atomic_write_json, file_sha256, step_lock, write_score
from drs.history import open_history
from drs.modelling import f1_of
from drs.runs import ScorePurpose

logger = logging.getLogger(__name__)


def record_score(
    config: Config,
    f1: float,
    model_sha256: str | None,
    dataset: str,
    purpose: ScorePurpose,
    dataset_sha256: str | None = None,
) -> None:
    """Add a score to the run history, with what it was computed on and by which model.

    dataset_sha256 tells scores on the same data from scores on data of the same name.
    """
    with open_history(config) as history:
        history.insert(
            "scores",
            {
                "recorded_at": utc_now(),
                "f1": f1,
                "model_sha256": model_sha256,
                "dataset": dataset,
                "purpose": purpose.value,
                "dataset_sha256": dataset_sha256,
            },
        )


def run(config: Config) -> float:
    """Score output_model_path's trained model on testdata.csv; write latestscore.txt/.json."""
    model_bytes = _read_model_bytes(config)
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    model = pickle.loads(model_bytes)
    f1 = f1_of(model, read_dataset(config.test_data_path))
    write_score(config.score_path, f1)
    data_sha256 = file_sha256(config.test_data_path)
    atomic_write_json(
        config.score_card_path,
        {
            "model_sha256": model_sha256,
            "f1": f1,
            "dataset": config.test_data_path.name,
            "dataset_sha256": data_sha256,
            "scored_at": utc_now(),
        },
    )
    record_score(
        config, f1, model_sha256, str(config.test_data_path), ScorePurpose.TEST, data_sha256
    )
    logger.info("F1 %.4f of %s on %s", f1, config.model_path, config.test_data_path)
    return f1


def _read_model_bytes(config: Config) -> bytes:
    """The trained model's bytes, read once: the hash recorded is the model scored."""
    try:
        return config.model_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{config.model_path}: not found; run training.py first") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)

    def action() -> None:
        config = load_config(args.config)
        with step_lock(config):
            print(run(config))

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
