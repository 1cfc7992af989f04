"""Utility never tests on what it trained on (issue 11): `u2s evaluate`, `evaluate_datasets`, the scoring function and
the `evaluate` module refuse a test split that holds the training rows, before any model loads, unless told
`allow_overlap`."""

import io
import json
from pathlib import Path

import datasets
import evaluate
import pytest
from PIL import ImageFilter

from u2s_hf import cli
from u2s_hf.evaluation import EvaluationConfig, evaluate_datasets
from u2s_hf.scoring.utility import train_eval_classifier

import tiny_models
from corpus import class_split

METRICS = Path(__file__).resolve().parent.parent / "metrics"
FAST = dict(epochs=1, batch_size=6, grad_accum=1, lr=1e-2)
FEATURES = datasets.Features(image=datasets.Image(), label=datasets.Value("string"))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return str(tiny_models.vit_mae(tmp_path_factory.mktemp("vit-mae")))


@pytest.fixture(scope="module")
def splits(class_photos):
    """An original with disjoint train and test splits, and an anonymised train split (blurred originals)."""
    train, test = class_split(class_photos, 4, 0), class_split(class_photos, 2, 100)
    anonymised = dict(train, image=[image.filter(ImageFilter.GaussianBlur(2)) for image in train["image"]])
    return datasets.Dataset.from_dict(train), datasets.Dataset.from_dict(test), datasets.Dataset.from_dict(anonymised)


def utility_only(tmp_path, **settings) -> EvaluationConfig:
    """Utility with a backbone that does not exist: a refusal must come before anything tries to load it."""
    return EvaluationConfig(groups=("utility",), backbone=str(tmp_path / "no-such-backbone"), **settings)


@pytest.mark.parametrize("shape", ["no splits", "one split"])
def test_a_single_split_original_is_refused_before_any_model_loads(splits, tmp_path, shape):
    train, _, anonymised = splits
    original = train if shape == "no splits" else datasets.DatasetDict(test=train)
    with pytest.raises(ValueError, match=f"original dataset has {shape}") as refused:
        evaluate_datasets(original, anonymised, utility_only(tmp_path))
    assert "separate 'train' and 'test' splits" in str(refused.value) and "--allow-overlap" in str(refused.value)
    # The paired groups still take a dataset without splits: only utility trains and tests.
    cheating = evaluate_datasets(train, anonymised, EvaluationConfig(groups=("cheating",), use_lpips=False))
    assert cheating["ssim"] is not None


def test_the_same_split_named_for_training_and_testing_is_refused(splits, tmp_path):
    train, test, anonymised = splits
    original = datasets.DatasetDict(train=train, test=test)
    anonymized = datasets.DatasetDict(train=anonymised, test=anonymised)
    with pytest.raises(ValueError, match=r"train and test splits are both 'test'.*--train-split and --test-split"):
        evaluate_datasets(original, anonymized, utility_only(tmp_path, train_split="test"))


def test_an_original_without_the_train_split_cannot_be_checked_and_is_refused(splits, tmp_path):
    train, test, anonymised = splits
    original = datasets.DatasetDict(validation=train, test=test)
    with pytest.raises(ValueError, match=r"no split 'train' \(splits: validation, test\).*--train-split"):
        evaluate_datasets(original, anonymised, utility_only(tmp_path))


def test_test_images_also_in_the_original_train_split_are_refused_by_content(splits, tmp_path):
    """Train cells hold only a path (datasets reads the file later); the test cell holds the same file's bytes."""
    train, test, anonymised = splits
    paths = []
    for k, image in enumerate(train["image"]):
        paths.append(str(tmp_path / f"train-{k}.png"))
        image.save(paths[-1])
    path_only = datasets.Dataset.from_dict({"image": paths, "label": train["label"]}, features=FEATURES)
    assert path_only.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"] is None
    leaked = {"bytes": Path(paths[3]).read_bytes(), "path": None}
    test = datasets.Dataset.from_dict(
        {"image": [leaked, *test["image"]], "label": [train["label"][3], *test["label"]]}, features=FEATURES
    )
    original = datasets.DatasetDict(train=path_only, test=test)
    with pytest.raises(ValueError, match="1 of the 7 images of the original 'test' split are also in its 'train'"):
        evaluate_datasets(original, anonymised, utility_only(tmp_path))


def test_allow_overlap_measures_anyway_and_says_how_many_rows_it_scored(splits, backbone):
    train, _, _ = splits
    config = EvaluationConfig(groups=("utility",), backbone=backbone, epochs=1, allow_overlap=True)
    out = evaluate_datasets(train, train, config)  # the same rows: only because we asked
    assert 0 <= out["accuracy"] <= 1 and (out["accuracy_scored"], out["accuracy_missing"]) == (len(train), 0)


def test_disjoint_splits_pass_and_report_the_counts(splits, backbone):
    train, test, anonymised = splits
    broken = {"bytes": b"not an image", "path": None}
    test = datasets.Dataset.from_dict(
        {"image": [*test["image"], broken], "label": [*test["label"], "coffee"]}, features=FEATURES
    )
    original = datasets.DatasetDict(train=train, test=test)
    out = evaluate_datasets(original, anonymised, EvaluationConfig(groups=("utility",), backbone=backbone, epochs=1))
    assert (out["accuracy_scored"], out["accuracy_missing"]) == (6, 1) and out["utility_skipped_rows"] == 1


def test_the_classifier_refuses_test_images_that_are_train_images(splits, backbone):
    train, test, _ = splits
    overlapping = datasets.concatenate_datasets([train, test.select([0, 1])])
    with pytest.raises(ValueError, match=r"2 of the 6 usable test images are also train images.*allow_overlap=True"):
        train_eval_classifier(overlapping, test, backbone=str(Path(backbone) / "not-loaded"), **FAST)
    out = train_eval_classifier(overlapping, test, backbone=backbone, allow_overlap=True, **FAST)
    assert out["accuracy_scored"] == len(test)


def test_the_module_checks_its_train_and_test_images_too(class_photos, backbone):
    train, test = class_split(class_photos, 4, 0), class_split(class_photos, 2, 100)
    utility = evaluate.load(str(METRICS / "u2s_utility"), backbone=backbone, **FAST)
    assert utility.settings["mode"] == "finetune" and utility.settings["allow_overlap"] is False
    given = dict(test_images=test["image"], test_labels=test["label"])
    with pytest.raises(ValueError, match="1 of the 6 usable test images are also train images"):
        utility.compute(predictions=[*train["image"], test["image"][0]], references=[*train["label"], "x"], **given)
    out = utility.compute(
        predictions=train["image"] + test["image"][:1], references=train["label"] + ["x"], **given, allow_overlap=True
    )
    assert (out["accuracy_scored"], out["accuracy_missing"]) == (6, 0)


def _saved(ds, folder: Path) -> str:
    ds.save_to_disk(str(folder))
    return str(folder)


def test_u2s_evaluate_refuses_a_single_split_and_allow_overlap_lets_it_through(splits, backbone, tmp_path, capsys):
    train, _, _ = splits
    source = _saved(train, tmp_path / "single")
    argv = ["evaluate", "--original", source, "--anonymized", source, "--metrics", "utility", "--epochs", "1"]
    assert cli.main([*argv, "--backbone", str(tmp_path / "absent"), "--out", str(tmp_path / "r1")]) == 2
    error = capsys.readouterr().err
    assert "utility: the original dataset has no splits" in error and "--allow-overlap" in error
    assert cli.main([*argv, "--backbone", backbone, "--allow-overlap", "--out", str(tmp_path / "r2")]) == 0
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert report["single"]["accuracy_scored"] == len(train)
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--allow-overlap" in shown and "not the paper's recipe" in shown


def test_images_are_compared_by_their_bytes_so_a_re_encoded_copy_is_not_caught(class_photos, backbone):
    """The same photo saved twice (PNG and JPEG) is not caught: the check is on identical files, as documented."""
    photo = class_photos["coffee"].resize((48, 48))
    png, jpeg = io.BytesIO(), io.BytesIO()
    photo.save(png, "PNG")
    photo.save(jpeg, "JPEG")
    train = class_split(class_photos, 2, 0)
    train = datasets.Dataset.from_dict(
        {"image": [*train["image"], {"bytes": png.getvalue(), "path": None}], "label": [*train["label"], "coffee"]},
        features=FEATURES,
    )
    jpeg_test = datasets.Dataset.from_dict({"image": [jpeg.getvalue()], "label": ["coffee"]}, features=FEATURES)
    assert train_eval_classifier(train, jpeg_test, backbone=backbone, **FAST)["accuracy_scored"] == 1
    png_test = datasets.Dataset.from_dict({"image": [png.getvalue()], "label": ["coffee"]}, features=FEATURES)
    with pytest.raises(ValueError, match="1 of the 1 usable test images"):
        train_eval_classifier(train, png_test, backbone=backbone, **FAST)
