import datasets
import pytest

from u2s_hf.scoring.utility import train_eval_classifier

import tiny_models
from corpus import CLASSES, class_split

FAST = dict(epochs=10, batch_size=6, grad_accum=2, lr=1e-2)  # tiny model, few steps: a higher lr than the paper's


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return str(tiny_models.vit_mae(tmp_path_factory.mktemp("vit-mae")))


def with_class_label(data: dict) -> datasets.Dataset:
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=list(CLASSES)))
    return datasets.Dataset.from_dict(data, features=features)  # ClassLabel stores the names as ints (-1 stays -1)


@pytest.fixture(scope="module")
def class_label_splits(class_photos):
    """Train on plain crops, test on other crops with brightness jitter; labels as a ClassLabel."""
    train, test = class_split(class_photos, 12, 0), class_split(class_photos, 8, 100, jitter=True)
    return with_class_label(train), with_class_label(test)


@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_learns_photo_classes_well_above_chance(backbone, class_label_splits, mode):
    train, test = class_label_splits
    out = train_eval_classifier(train, test, backbone=backbone, mode=mode, **FAST)
    assert out["num_classes"] == 3 and out["skipped_train"] == 0 and out["skipped_test"] == 0
    assert len(out["per_image"]) == len(test) and set(out["per_image"]) <= {0, 1, 2}
    correct = sum(p == t for p, t in zip(out["per_image"], test["label"], strict=True))
    assert out["accuracy"] == pytest.approx(correct / len(test))
    assert out["accuracy"] >= 0.75, out  # chance is 1/3


def test_same_seed_same_predictions_other_seed_still_runs(backbone, class_label_splits):
    train, test = class_label_splits
    first = train_eval_classifier(train, test, backbone=backbone, seed=3, **FAST)
    again = train_eval_classifier(train, test, backbone=backbone, seed=3, **FAST)
    assert again == first
    other = train_eval_classifier(train, test, backbone=backbone, seed=4, **FAST)
    assert len(other["per_image"]) == len(test) and other["num_classes"] == 3


def test_bad_rows_are_skipped_and_counted(backbone, class_photos):
    """Undecodable bytes, a missing image and a missing label in both splits; datasets keeps them undecoded."""
    features = datasets.Features(image=datasets.Image(), label=datasets.Value("string"))
    train, test = class_split(class_photos, 10, 0), class_split(class_photos, 6, 100, jitter=True)
    train["image"] += [{"bytes": b"\xff\xd8\xff broken jpeg", "path": None}, None, class_photos["coffee"]]
    train["label"] += ["coffee", "coffee", None]
    test["image"] = [{"bytes": b"not an image", "path": None}] + test["image"] + [class_photos["rocket"]]
    test["label"] = ["astronaut"] + test["label"] + [None]
    train, test = (datasets.Dataset.from_dict(data, features=features) for data in (train, test))
    out = train_eval_classifier(train, test, backbone=backbone, **FAST)
    assert out["skipped_train"] == 3 and out["skipped_test"] == 2
    assert out["per_image"][0] is None and out["per_image"][-1] is None
    scored = out["per_image"][1:-1]
    assert None not in scored and set(scored) <= set(CLASSES)  # string labels come back as strings
    correct = sum(p == t for p, t in zip(scored, test["label"][1:-1], strict=True))
    assert out["accuracy"] == pytest.approx(correct / len(scored)) and out["accuracy"] >= 0.75


def test_a_class_label_of_minus_one_means_no_label(backbone, class_photos):
    train, test = class_split(class_photos, 4, 0), class_split(class_photos, 2, 100)
    for data in (train, test):
        data["image"].append(class_photos["coffee"])
        data["label"].append(-1)
    out = train_eval_classifier(
        with_class_label(train), with_class_label(test), backbone=backbone, **dict(FAST, epochs=1)
    )
    assert out["skipped_train"] == 1 and out["skipped_test"] == 1 and out["num_classes"] == 3
    assert out["per_image"][-1] is None and None not in out["per_image"][:-1]


def test_a_test_label_never_seen_in_training_counts_as_wrong(backbone, class_photos):
    train = datasets.Dataset.from_dict(class_split(class_photos, 12, 0, names=CLASSES[:2]))
    test = datasets.Dataset.from_dict(class_split(class_photos, 6, 100, jitter=True))  # 6 rocket rows: never trained
    out = train_eval_classifier(train, test, backbone=backbone, **FAST)
    assert out["num_classes"] == 2 and out["skipped_test"] == 0
    assert "rocket" not in out["per_image"] and None not in out["per_image"]
    correct = sum(p == t for p, t in zip(out["per_image"], test["label"], strict=True))
    assert 9 <= correct <= 12 and out["accuracy"] == pytest.approx(correct / 18)


def test_rejects_an_unknown_mode_and_a_train_split_with_no_usable_row(backbone, class_photos):
    test = datasets.Dataset.from_dict(class_split(class_photos, 2, 0))
    with pytest.raises(ValueError, match="mode"):
        train_eval_classifier(test, test, backbone=backbone, mode="probe")
    unlabelled = datasets.Dataset.from_dict({"image": [class_photos["coffee"]], "label": [None]})
    with pytest.raises(ValueError, match="no usable training row"):
        train_eval_classifier(unlabelled, test, backbone=backbone)


def test_randaugment_changes_what_the_model_trains_on(backbone, class_label_splits):
    train, test = class_label_splits
    settings = dict(FAST, epochs=2, mode="finetune")
    plain = train_eval_classifier(train, test, backbone=backbone, randaugment=False, **settings)
    augmented = train_eval_classifier(train, test, backbone=backbone, randaugment=True, **settings)
    assert plain == train_eval_classifier(train, test, backbone=backbone, randaugment=False, **settings)
    assert augmented["per_image"] != plain["per_image"] or augmented["accuracy"] != plain["accuracy"]
