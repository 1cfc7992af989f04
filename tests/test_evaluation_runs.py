"""`u2s evaluate` over whole runs: a run that scored nothing, a column that is not an image, the counts shown."""

import json

import datasets
import pytest

from u2s_hf import cli, evaluation
from u2s_hf.evaluation_report import markdown_table

import corpus


@pytest.fixture
def originals(photos, tmp_path):
    return corpus.image_dataset({"astronaut": photos["astronaut"], "coffee": photos["coffee"]}, tmp_path / "originals")


def release(tmp_path, images, statuses):
    """A saved dataset shaped like a u2s release: safe_image (None for an error row), u2s_status, c_pub."""
    ds = datasets.Dataset.from_dict(
        {"safe_image": images, "u2s_status": statuses, "c_pub": ["a photo"] * len(images)},
        features=datasets.Features(
            {"safe_image": datasets.Image(), "u2s_status": datasets.Value("string"), "c_pub": datasets.Value("string")}
        ),
    )
    ds.save_to_disk(str(tmp_path / "release"))
    return tmp_path / "release"


def evaluate(tmp_path, anonymized, *options):
    return cli.main(
        [
            "evaluate",
            "--original",
            str(tmp_path / "originals"),
            "--anonymized",
            str(anonymized),
            "--metrics",
            "cheating",
            "--no-lpips",
            "--out",
            str(tmp_path / "report"),
            *options,
        ]
    )


def test_a_run_in_which_every_row_is_an_error_exits_with_the_reason(originals, tmp_path, capsys):
    code = evaluate(tmp_path, release(tmp_path, [None, None], ["error", "error"]))
    assert code == 2
    assert (
        "nothing to score: none of the 2 anonymised rows has an image (u2s_status: error 2)" in capsys.readouterr().err
    )
    assert not (tmp_path / "report" / "report.json").exists()


def test_a_run_whose_images_cannot_be_read_exits_with_what_was_skipped(originals, tmp_path, capsys):
    broken = {"bytes": b"not an image", "path": None}
    code = evaluate(tmp_path, release(tmp_path, [broken, broken], ["edited", "edited"]))
    assert (
        code == 2 and "nothing could be scored in the groups cheating (lpips: switched off)" in capsys.readouterr().err
    )


def test_the_anonymized_column_must_be_an_image_column(originals, photos, tmp_path, capsys):
    """A text column was cast to Image and its strings opened as file paths."""
    anonymized = release(tmp_path, [photos["astronaut"], photos["coffee"]], ["kept_safe"] * 2)
    assert evaluate(tmp_path, anonymized, "--anonymized-column", "c_pub") == 2
    assert "column 'c_pub' is not an Image column" in capsys.readouterr().err
    config = evaluation.EvaluationConfig(groups=("cheating",), use_lpips=False, anonymized_column="u2s_status")
    with pytest.raises(ValueError, match=r"'u2s_status' is not an Image column.*Image columns: safe_image"):
        evaluation.evaluate_datasets(originals, datasets.load_from_disk(str(anonymized)), config)


def test_the_report_says_how_many_rows_each_mean_is_over(originals, photos, tmp_path):
    kept = release(tmp_path, [photos["astronaut"], None], ["kept_safe", "error"])
    assert evaluate(tmp_path, kept) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())["release"]
    assert (report["ssim"], report["ssim_scored"], report["ssim_missing"]) == (pytest.approx(1.0), 1, 1)
    table = (tmp_path / "report" / "report.md").read_text().splitlines()
    assert table[0] == "| run | SSIM ↓ |" and table[1] == "|---|---|" and table[2] == "| release | 1.0000 (1/2) |"


def test_a_metric_with_nothing_scored_still_shows_over_how_many_items():
    runs = {
        "a": {"ssim": 0.5, "ssim_scored": 2, "ssim_missing": 0},
        "b": {"ssim": None, "ssim_scored": 0, "ssim_missing": 3},
    }
    assert markdown_table(runs).splitlines()[2:4] == ["| a | 0.5000 (2/2) |", "| b | – (0/3) |"]
