"""reporting.py: drift numbers, confusion counts against scikit-learn, the PNG, the PDF's
text read back, missing pieces said on the page, and the command line."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_failure, run_script
from pypdf import PdfReader
from scipy.stats import wasserstein_distance
from sklearn.metrics import confusion_matrix
from test_diagnostics import deploy_workspace

import common
import deployment
import reporting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STUB_PACKAGES = [
    {
        "name": "flask",
        "required": "3.1.3",
        "installed": "3.1.3",
        "latest": "9.9.9",
        "outdated": True,
        "reason": None,
    },
    {
        "name": "pandas",
        "required": "3.1.1",
        "installed": "3.1.1",
        "latest": None,
        "outdated": None,
        "reason": "package index unreachable: stubbed for the test",
    },
]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> common.Config:
    return deploy_workspace(tmp_path_factory.mktemp("reporting") / "workspace")


def pdf_text(path: Path) -> str:
    """The text of every page, with runs of white space (wrapped lines too) as one space."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split())


def test_drift_of_identical_data_is_zero() -> None:
    data = pd.DataFrame({feature: [1.0, 5.0, 9.0, 2.0] for feature in common.FEATURES})
    drift = reporting.feature_drift(data, data.copy())
    assert set(drift) == set(common.FEATURES)
    for measured in drift.values():
        assert measured == {"value": 0.0, "threshold": 0.1, "drifted": False}


def test_drift_is_the_wasserstein_distance_over_the_reference_std() -> None:
    rng = np.random.default_rng(0)
    before = rng.normal(100, 10, 500)
    after = rng.normal(105, 10, 400)  # a shift of half a standard deviation
    reference = pd.DataFrame({feature: before for feature in common.FEATURES})
    current = pd.DataFrame({feature: after for feature in common.FEATURES})

    measured = reporting.feature_drift(reference, current)["lastyear_activity"]

    expected = wasserstein_distance(before, after) / np.std(before, ddof=1)
    assert measured["value"] == pytest.approx(expected)
    assert measured["value"] == pytest.approx(0.5, abs=0.12)
    assert measured["drifted"] is True


@pytest.mark.parametrize(
    ("reference", "current", "value", "drifted"),
    [
        ([0.0, 10.0, 20.0, 30.0], [0.0, 10.0, 20.0, 30.0], 0.0, False),
        (
            [0.0, 10.0, 20.0, 30.0],
            [0.5, 10.5, 20.5, 30.5],
            0.5 / np.std([0, 10, 20, 30], ddof=1),
            False,
        ),
        (
            [0.0, 10.0, 20.0, 30.0],
            [3.0, 13.0, 23.0, 33.0],
            3.0 / np.std([0, 10, 20, 30], ddof=1),
            True,
        ),
        ([0.0, 10.0, None, 30.0], [0.0, 10.0, 30.0, None], 0.0, False),  # blanks left out
        ([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], 0.0, False),  # constant, unchanged
        ([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 6.0], math.inf, True),  # constant, changed
        ([None, None, None, None], [1.0, 2.0, 3.0, 4.0], None, False),  # nothing to compare
    ],
)
def test_drift_edge_cases(
    reference: list[float | None], current: list[float | None], value: float | None, drifted: bool
) -> None:
    before = pd.DataFrame({f: reference for f in common.FEATURES}, dtype="float64")
    after = pd.DataFrame({f: current for f in common.FEATURES}, dtype="float64")
    measured = reporting.feature_drift(before, after)["number_of_employees"]
    assert measured["drifted"] is drifted
    if value is None:
        assert measured["value"] is None
    else:
        assert measured["value"] == pytest.approx(value)


def test_confusion_counts_match_scikit_learn(deployed: common.Config) -> None:
    data = pd.read_csv(deployed.test_data_path)
    with open(deployed.deployment_folder / "current" / common.MODEL_NAME, "rb") as handle:
        model = pickle.load(handle)
    expected = confusion_matrix(
        data[common.TARGET], model.predict(data[list(common.FEATURES)]), labels=[0, 1]
    )

    matrix, labels = reporting.confusion_counts(deployed)

    assert labels == [0, 1]
    assert matrix.tolist() == expected.tolist()
    assert int(matrix.sum()) == len(data)


def test_confusion_matrix_png_is_written_atomically_with_the_chosen_name(
    deployed: common.Config,
) -> None:
    default = reporting.confusion_matrix_plot(deployed)
    chosen = reporting.confusion_matrix_plot(deployed, "confusionmatrix2.png")
    assert default == deployed.model_folder / "confusionmatrix.png"
    assert chosen == deployed.model_folder / "confusionmatrix2.png"
    for path in (default, chosen):
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        assert path.stat().st_size > 10_000  # a real picture, not an empty canvas
    assert not list(deployed.model_folder.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["../escape.png", "sub/dir.png", "", ".."])
def test_output_names_must_be_plain_file_names(deployed: common.Config, name: str) -> None:
    with pytest.raises(common.PipelineError, match="file name, not a path"):
        reporting.confusion_matrix_plot(deployed, name)


def test_report_has_every_section_with_its_numbers(deployed: common.Config) -> None:
    release = deployment.current_release(deployed.deployment_folder)
    assert release is not None

    path = reporting.write_report(
        deployed,
        "report.pdf",
        timings={"ingestion": 0.125, "training": 0.75},
        packages=STUB_PACKAGES,
    )

    assert path == deployed.model_folder / "report.pdf"
    reader = PdfReader(path)
    assert len(reader.pages) >= 3
    assert release.id in reader.metadata.title
    text = pdf_text(path)
    for section in reporting.SECTIONS:
        assert section in text, section
    assert release.id in text
    assert release.model_sha256 in text
    assert release.manifest["deployed_at"] in text
    assert f"{release.score():.4f}" in text
    matrix, _ = reporting.confusion_counts(deployed)
    for count in matrix.ravel():
        assert f"{int(count):,}" in text
    assert "normalised Wasserstein distance" in text
    assert "exceeds 0.1" in text
    summary = pd.read_csv(deployed.final_data_path)
    assert f"{summary['lastyear_activity'].mean():,.2f}" in text
    for name in release.ingested_files():
        assert name in text
    assert "0.12" in text and "0.75" in text  # the timings given
    assert "9.9.9" in text and "OUTDATED" in text
    assert "stubbed for the test" in text
    assert not list(deployed.model_folder.glob(".*.tmp"))


def test_a_single_score_makes_a_readable_time_axis(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=200)
    with common.open_history(config) as history:
        history.execute("DELETE FROM deployments")
        history.execute("DELETE FROM scores WHERE id > (SELECT MIN(id) FROM scores)")
    assert len(reporting.score_history(config)) == 1
    # Warnings are errors here (pyproject.toml): matplotlib warns on a zero-length date axis.
    path = reporting.write_report(config, "single.pdf")
    assert "1 score(s) from the run history" in pdf_text(path)


def test_report_says_what_is_missing_instead_of_failing(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    for path in config.history_path.parent.glob(config.history_path.name + "*"):
        path.unlink()
    config.final_data_path.unlink()

    text = pdf_text(reporting.write_report(config, "bare.pdf"))

    for section in reporting.SECTIONS:
        assert section in text, section
    assert "No F1 score has been recorded" in text
    assert "not found; run ingestion.py first" in text
    assert "No ingestion run is recorded" in text
    assert "not timed yet" in text
    assert "not checked" in text  # package versions: no network from the report


def test_report_compares_new_input_files_with_the_training_files(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    release = deployment.current_release(config.deployment_folder)
    assert release is not None
    for path in sorted((config.root / "sourcedata").glob("*.csv")):
        (config.input_folder / path.name).write_bytes(path.read_bytes())
    (config.input_folder / "broken.csv").write_text("not a dataset\n")

    data = reporting.drift_data(config, release)

    assert "dataset1.csv, dataset2.csv" in data.reference_label
    assert "dataset3.csv, dataset4.csv" in data.current_label
    assert len(data.reference) == 300
    assert len(data.current) == 300
    drift = reporting.feature_drift(data.reference, data.current)
    assert any(measured["drifted"] for measured in drift.values())  # sourcedata is drifted


def test_command_line_writes_the_chosen_files_from_another_folder(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = run_script(
        "reporting.py",
        "--config",
        str(config.path),
        "--name",
        "cm9.png",
        "--pdf",
        "r9.pdf",
        cwd=elsewhere,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(config.model_folder / "cm9.png"),
        str(config.model_folder / "r9.pdf"),
    ]
    assert (config.model_folder / "cm9.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "Confusion matrix" in pdf_text(config.model_folder / "r9.pdf")
    assert not (config.model_folder / "confusionmatrix.png").exists()
    assert list(elsewhere.iterdir()) == []


def test_command_line_with_nothing_deployed_fails_in_one_line(
    config_path: Path, tmp_path: Path
) -> None:
    done = run_script("reporting.py", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(done, "no model deployed yet")
