"""Generate fabricated client data: deterministic, any size, optionally drifted.

The shipped sample data (practicedata/, sourcedata/, testdata/) was made with
`python -m drs.datagen --sample`; tests and benchmarks call `write_files`, or
`write_workspace` for a whole throw-away project layout with its config.json.
No real client data is involved anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import string
from pathlib import Path

import numpy as np
import pandas as pd

from drs.cli import configure_logging, run_cli
from drs.config import FEATURES, ID_COLUMN, PROJECT_DIR, TARGET, TEST_DATA_NAME
from drs.files import atomic_path

logger = logging.getLogger(__name__)

# Log-odds of exiting = intercept + weights . features. Before the drift, clients
# whose activity fell away leave; after it, large clients leave too (a competitor courts
# them), so a model of the first world misjudges the second.
STABLE_WORLD = (2.5, np.array([-0.025, 0.0004, -0.002]))
DRIFTED_WORLD = (0.0, np.array([-0.01, 0.0002, 0.0015]))
# The stable world turned upside down: the busy clients are the ones who leave. A model of
# either world is wrong about the other, and one fitted to both at once fits neither.
FLIPPED_WORLD = (-STABLE_WORLD[0], -STABLE_WORLD[1])

# What `--sample` writes, relative to the project folder: (folder, files, rows each, seed, drift).
SAMPLE_LAYOUT = (
    ("practicedata", 2, 5_000, 1, False),
    ("sourcedata", 2, 5_000, 3, True),
)
SAMPLE_TEST_ROWS = 2_000
SAMPLE_MISSING_RATE = 0.005
# The shipped config.json's folders, which write_workspace lays out under its root.
WORKSPACE_CONFIG = {
    "input_folder_path": "practicedata",
    "output_folder_path": "ingesteddata",
    "test_data_path": "testdata",
    "output_model_path": "practicemodels",
    "prod_deployment_path": "production_deployment",
}


def generate(
    rows: int, seed: int, drift: bool = False, missing_rate: float = 0.0, flipped: bool = False
) -> pd.DataFrame:
    """Return `rows` fabricated clients; the same arguments always give the same table.

    drift: the drifted world (larger clients, who leave too); flipped: the stable world's
    clients behaving the other way round.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    corporation = ["".join(chunk) for chunk in rng.choice(letters, size=(rows, 4))]
    scale = 1.6 if drift else 1.0
    lastyear = rng.gamma(shape=2.0, scale=1_200.0 * scale, size=rows).round()
    lastmonth = (lastyear / 12 * rng.lognormal(0.0, 0.6, size=rows)).round()
    employees = rng.gamma(shape=1.5, scale=250.0 * scale, size=rows).round()
    features = np.column_stack([lastmonth, lastyear, employees])
    intercept, weights = FLIPPED_WORLD if flipped else DRIFTED_WORLD if drift else STABLE_WORLD
    probability = 1 / (1 + np.exp(-(intercept + features @ weights)))
    exited = (rng.random(rows) < probability).astype(int)

    frame = pd.DataFrame({ID_COLUMN: corporation, TARGET: exited})
    for position, column in enumerate(FEATURES):
        values = pd.array(features[:, position].astype(np.int64), dtype="Int64")
        values[rng.random(rows) < missing_rate] = pd.NA
        frame.insert(position + 1, column, values)
    return frame


def write_files(
    folder: Path,
    rows: int,
    files: int = 1,
    seed: int = 0,
    drift: bool = False,
    overlap: float = 0.0,
    missing_rate: float = 0.0,
    prefix: str = "dataset",
    first_number: int = 1,
) -> list[Path]:
    """Write `rows` clients split over `files` CSVs named prefix<N>.csv; returns their paths.

    With overlap > 0 each file repeats that share of the previous file's rows, so
    ingestion has duplicates across files to remove.
    """
    per_file = np.full(files, rows // files)
    per_file[: rows % files] += 1
    paths, previous = [], None
    for index, count in enumerate(per_file):
        frame = generate(int(count), seed * 100_003 + index, drift, missing_rate)
        if previous is not None and overlap > 0:
            repeated = previous.head(int(count * overlap))
            frame = pd.concat([repeated, frame.iloc[len(repeated) :]], ignore_index=True)
        path = Path(folder) / f"{prefix}{first_number + index}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        paths.append(path)
        previous = frame
    return paths


def write_sample(project: Path) -> list[Path]:
    """(Re)write the shipped sample data under project; returns every path written."""
    written, number = [], 1
    for folder, files, rows, seed, drift in SAMPLE_LAYOUT:
        written += write_files(
            project / folder,
            rows * files,
            files,
            seed,
            drift,
            overlap=0.05,
            missing_rate=SAMPLE_MISSING_RATE,
            first_number=number,
        )
        number += files
    return [
        *written,
        write_test_data(project / "testdata", SAMPLE_TEST_ROWS, 2, SAMPLE_MISSING_RATE),
    ]


def write_test_data(folder: Path, rows: int, seed: int, missing_rate: float = 0.0) -> Path:
    """Write folder/testdata.csv (write_files numbers its files; the test set is one file)."""
    [numbered] = write_files(folder, rows, seed=seed, missing_rate=missing_rate, prefix="testdata")
    return numbered.replace(Path(folder) / TEST_DATA_NAME)


def write_workspace(
    root: Path, rows: int, test_rows: int, overlap: float = 0.05, **extra_config: object
) -> Path:
    """Lay out a throw-away project under root, as tests and benchmarks need; returns config.json.

    practicedata/ (2 files, rows in all, sharing `overlap` of their rows), drifted
    sourcedata/ (2 later files), testdata/testdata.csv and a config.json naming the
    shipped folders, plus extra_config.
    """
    root = Path(root)
    write_files(root / "practicedata", rows, files=2, seed=1, overlap=overlap)
    write_files(root / "sourcedata", rows, files=2, seed=3, drift=True, first_number=3)
    write_test_data(root / "testdata", test_rows, seed=2)
    config_path = root / "config.json"
    config_path.write_text(json.dumps({**WORKSPACE_CONFIG, **extra_config}, indent=2))
    return config_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder to write the files in")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in all (default 10000)")
    parser.add_argument("--files", type=int, default=1, help="how many files (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--drift", action="store_true", help="use the drifted pattern")
    parser.add_argument("--overlap", type=float, default=0.0, help="share repeated across files")
    parser.add_argument("--missing-rate", type=float, default=0.0, help="share of empty cells")
    parser.add_argument("--prefix", default="dataset", help="file name prefix")
    parser.add_argument(
        "--sample", action="store_true", help="rewrite the shipped sample data instead"
    )
    args = parser.parse_args(argv)
    if not args.sample and args.out is None:
        parser.error("give --out FOLDER, or --sample")

    def run() -> None:
        if args.sample:
            paths = write_sample(PROJECT_DIR)
        else:
            paths = write_files(
                args.out,
                args.rows,
                args.files,
                args.seed,
                args.drift,
                args.overlap,
                args.missing_rate,
                args.prefix,
            )
        for path in paths:
            print(path)

    return run_cli(run)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
