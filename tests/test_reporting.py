"""reporting.py: drift numbers, confusion counts against scikit-learn, the PNG, the PDF's
text read back, missing pieces said on the page, and the command line."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    add_a_year_of_scores,
    assert_one_line_failure,
    deploy_workspace,
    pdf_text,
    run_script,
)
from pypdf import PdfReader
from sklearn.metrics import confusion_matrix

import reporting
from drs import releases
from drs.config import FEATURES, MODEL_NAME, TARGET, Config
from drs.errors import PipelineError
from drs.history import open_history
from drs.report.charts import draw_f1
from drs.report.facts import SCORE_ROWS_SHOWN

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
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return deploy_workspace(tmp_path_factory.mktemp("reporting") / "workspace", rows=400)


def test_confusion_counts_match_scikit_learn(deployed: Config) -> None:
    data = pd.read_csv(deployed.test_data_path)
    with open(deployed.deployment_folder / "current" / MODEL_NAME, "rb") as handle:
        model = pickle.load(handle)
    expected = confusion_matrix(data[TARGET], model.predict(data[list(FEATURES)]), labels=[0, 1])

    matrix, labels = reporting.confusion_counts(deployed)

    assert labels == [0, 1]
    assert matrix.tolist() == expected.tolist()
    assert int(matrix.sum()) == len(data)


def test_confusion_matrix_png_is_written_atomically_with_the_chosen_name(
    deployed: Config,
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
def test_output_names_must_be_plain_file_names(deployed: Config, name: str) -> None:
    with pytest.raises(PipelineError, match="file name, not a path"):
        reporting.confusion_matrix_plot(deployed, name)


def test_report_has_every_section_with_its_numbers(deployed: Config) -> None:
    release = releases.current_release(deployed.deployment_folder)
    assert release is not None

    path = reporting.write_report(
        deployed,
        "report.pdf",
        timings={"ingestion.py": 0.125, "training.py": 0.75},
        packages=STUB_PACKAGES,
    )

    assert path == deployed.model_folder / "report.pdf"
    reader = PdfReader(path)
    assert len(reader.pages) >= 3
    assert release.id in reader.metadata.title
    text = pdf_text(path)
    for section in reporting.SECTIONS[1:]:  # the first is the verdict, titled by its status
        assert section.title in text, section.title
    assert text.index("Attrition-risk model: NOTICE no automated check yet") == 0
    appendix = text[text.index("Appendix: model and deployment identity") :]
    for identity in (release.id, release.model_sha256, release.manifest["deployed_at"]):
        assert identity in appendix
    assert f"{release.score():.4f}" in text
    matrix, _ = reporting.confusion_counts(deployed)
    for count in matrix.ravel():
        assert f"{int(count):,}" in text
    assert "No input file is newer than the deployed model's training data" in text
    assert "testdata.csv (no input file" not in text, "drift is never measured on the test data"
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
    with open_history(config) as history:
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

    for section in reporting.SECTIONS[1:]:  # the first is the verdict, titled by its status
        assert section.title in text, section.title
    assert "No F1 score has been recorded" in text
    assert "not found; run ingestion.py first" in text
    assert "No ingestion run is recorded" in text
    assert "not timed yet" in text
    assert "Latest versions not checked yet" in text  # no network from the report


def test_report_compares_new_input_files_with_the_training_files(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=300)
    for path in sorted((config.root / "sourcedata").glob("*.csv")):
        (config.input_folder / path.name).write_bytes(path.read_bytes())
    (config.input_folder / "broken.csv").write_text("not a dataset\n")

    story = reporting.gather(config).data_drift

    assert isinstance(story, dict), story
    assert "training data of release" in story["reference"]
    assert "dataset1.csv, dataset2.csv" in story["reference"]
    assert story["current"] == "new files dataset3.csv, dataset4.csv"
    assert (story["reference_rows"], story["current_rows"]) == (300, 300)
    assert any(found["drifted"] for found in story["features"].values())  # sourcedata drifted
    text = pdf_text(reporting.write_report(config, "drift.pdf"))
    assert "features drifted" in text
    assert "Reference: training data of release" in text
    assert "Current: new files dataset3.csv, dataset4.csv" in text


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


def test_the_f1_chart_marks_go_lives_as_deployments_and_rollbacks_apart(
    deployed: Config,
) -> None:
    """Staging changes nothing live: not marked. A rollback is marked, but not as a deployment."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    score = {
        "recorded_at": "2026-12-01T10:00:00Z",
        "f1": 0.71,
        "purpose": "test",
        "dataset": "/x/testdata.csv",
        "dataset_sha256": "a",
        "model_sha256": "m",
    }
    actions = {1: "deploy", 2: "stage", 3: "promote", 4: "rollback", 5: "stage"}
    rows = [
        {"recorded_at": f"2026-12-0{day}T10:00:00Z", "release_id": f"r{day}", "action": action}
        for day, action in actions.items()
    ]
    facts = reporting.gather(deployed)
    facts = dataclasses.replace(facts, scores=[score], checks=[], deployments=rows)
    ax = Figure().add_subplot()
    draw_f1(ax, facts)
    marked: dict[str, list[int]] = {}
    for line in ax.get_lines():
        xs = list(line.get_xdata())
        if len(xs) == 2 and xs[0] == xs[1]:  # a vertical line across the plot
            marked.setdefault(line.get_linestyle(), []).append(mdates.num2date(xs[0]).day)
    assert marked == {":": [1, 3], "-.": [4]}
    labels = ax.get_legend_handles_labels()[1]
    assert "deployment: a model went live" in labels
    assert "rollback to an earlier release" in labels
    assert not [label for label in labels if "deployment or rollback" in label]


@pytest.mark.parametrize("minutes", [3, 180, 240])
def test_spans_matplotlib_has_no_tick_interval_for_draw_without_a_warning(
    deployed: Config, minutes: int
) -> None:
    """AutoDateLocator warns for these spans; warnings are errors here, as they were in runs."""
    from matplotlib.figure import Figure

    def score(at: str) -> dict[str, object]:
        return {
            "recorded_at": at,
            "f1": 0.7,
            "purpose": "test",
            "dataset": "/x/testdata.csv",
            "dataset_sha256": "a",
            "model_sha256": "m",
            "count": 1,
        }

    end = f"2026-12-01T{10 + minutes // 60:02d}:{minutes % 60:02d}:00Z"
    facts = reporting.gather(deployed)
    facts = dataclasses.replace(
        facts, scores=[score("2026-12-01T10:00:00Z"), score(end)], checks=[], deployments=[]
    )
    figure = Figure(figsize=(7, 2.4))
    draw_f1(figure.add_subplot(), facts)
    figure.canvas.draw()


def test_a_year_of_scores_is_drawn_as_a_bounded_number_of_points(tmp_path: Path) -> None:
    config = deploy_workspace(tmp_path / "workspace", rows=200)
    add_a_year_of_scores(config, every_minutes=30, f1=lambda minutes: 0.5 + (minutes % 7) / 100)
    facts = reporting.gather(config)
    assert facts.grouped == "week"
    assert len(facts.scores) <= 2 * 60
    assert sum(row["count"] for row in facts.scores) > 2 * 17_000
    assert len(facts.recent_scores) == SCORE_ROWS_SHOWN
    text = pdf_text(reporting.write_report(config, "year.pdf"))
    assert "each point the mean of a week" in text
