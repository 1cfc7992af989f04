import itertools
import random

import datasets
import numpy as np
import pytest
import torch

from u2s_hf.evaluation import EvaluationConfig
from u2s_hf.scoring import utility
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
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = torch.rand(1), random.random(), np.random.rand()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    first = train_eval_classifier(train, test, backbone=backbone, seed=3, **FAST)
    assert (torch.rand(1), random.random(), np.random.rand()) == expected  # the caller's random states are untouched
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
    assert out["accuracy_scored"] == len(test) - 2 and out["accuracy_missing"] == 2  # the mean is over the scored rows
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


# The paper's recipe is MAE's fine-tuning (issue 11): what mode="finetune" does where the paper is silent.


def test_finetune_is_the_default_of_the_function_and_of_u2s_evaluate(backbone, class_label_splits):
    train, test = class_label_splits
    settings = dict(FAST, epochs=2)
    default = train_eval_classifier(train, test, backbone=backbone, **settings)
    assert default == train_eval_classifier(train, test, backbone=backbone, mode="finetune", **settings)
    assert EvaluationConfig().mode == "finetune"


def test_finetune_pools_the_patch_tokens_before_the_final_norm_and_linear_takes_the_cls_token(backbone):
    from transformers import AutoModel

    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = AutoModel.from_pretrained(backbone, mask_ratio=0.0)(pixels, output_hidden_states=True)
    last_block = reference.hidden_states[-1]  # before the encoder's final LayerNorm
    encoder, config, _ = utility.load_backbone(backbone, "finetune")
    with torch.no_grad():
        pooled = utility.pooled_features(encoder, config, "finetune", pixels)
    assert torch.allclose(pooled, last_block[:, 1:].mean(1), atol=1e-5)  # MAE's global pool, without the CLS token
    assert all(p.requires_grad for p in encoder.parameters())
    encoder, config, _ = utility.load_backbone(backbone, "linear")
    with torch.no_grad():
        cls = utility.pooled_features(encoder, config, "linear", pixels)
    assert torch.allclose(cls, reference.last_hidden_state[:, 0], atol=1e-5)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_the_heads_are_maes_fc_norm_and_linear_probe_heads():
    norm, linear = utility.classifier_head("finetune", 32, 3)
    assert isinstance(norm, torch.nn.LayerNorm) and norm.eps == 1e-6
    assert 1e-5 < linear.weight.std() < 3e-5 and not linear.bias.any()  # MAE: a (truncated) normal of std 2e-5
    probe, _ = utility.classifier_head("linear", 32, 3)
    assert isinstance(probe, torch.nn.BatchNorm1d) and not probe.affine


def test_layer_wise_learning_rate_decay_and_weight_decay_groups(backbone):
    encoder, config, _ = utility.load_backbone(backbone, "finetune")
    head = utility.classifier_head("finetune", config.hidden_size, 3)
    groups = utility.param_groups(encoder, head, config.num_hidden_layers)  # 2 blocks: head is layer 3
    where = {id(p): (group["lr_scale"], group["weight_decay"]) for group in groups for p in group["params"]}
    named = dict(encoder.named_parameters())
    assert len(where) == len(named) + 4  # every parameter once: the encoder's and the head's four
    assert where[id(named["embeddings.patch_embeddings.projection.weight"])] == pytest.approx((0.65**3, 0.05))
    assert where[id(named["embeddings.cls_token"])] == pytest.approx((0.65**3, 0.0))
    assert where[id(named["embeddings.position_embeddings"])] == pytest.approx((0.65**3, 0.0))
    blocks = {name: int(name.split(".")[1]) for name in named if name.startswith("layers.")}
    assert set(blocks.values()) == {0, 1}
    for name, block in blocks.items():  # block i is layer i + 1: scale 0.65 ** (3 - (i + 1))
        p = named[name]
        assert where[id(p)] == pytest.approx((0.65 ** (2 - block), 0.05 if p.ndim > 1 else 0.0)), name
    assert not any(name.startswith("layernorm.") for name in named)  # the final norm is gone: fc_norm replaces it
    assert where[id(head[1].weight)] == (1.0, 0.05)
    assert where[id(head[1].bias)] == where[id(head[0].weight)] == where[id(head[0].bias)] == (1.0, 0.0)


def test_warm_up_then_cosine_also_in_a_short_run():
    lr = 5e-4
    at = [utility.learning_rate(epoch, lr, 100) for epoch in (0, 2.5, 5, 52.5, 100)]
    assert at == pytest.approx([0, lr / 2, lr, (lr + 1e-6) / 2, 1e-6])  # MAE: 5 warm-up epochs, cosine to 1e-6
    short = [utility.learning_rate(k / 10, lr, 2) for k in range(21)]  # 2 epochs: warm-up over the first 0.2
    assert short[0] == 0 and short[1] == pytest.approx(lr / 2) and short[2] == pytest.approx(lr)
    assert all(a > b for a, b in itertools.pairwise(short[2:])) and short[-1] == pytest.approx(1e-6)
    probe = [utility.learning_rate(epoch, lr, 10, "linear") for epoch in (0, 5, 10)]
    assert probe == pytest.approx([lr, lr / 2, 0])  # the fast probe: no warm-up


def test_finetune_training_images_get_maes_augmentation(backbone, class_photos):
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(backbone)
    steps = utility.train_transform("finetune", processor).transforms
    crop = steps[0]
    assert crop.size == (32, 32) and crop.scale == (0.08, 1.0)
    assert any(isinstance(step, transforms.RandomHorizontalFlip) and step.p == 0.5 for step in steps)
    (augment,) = [step for step in steps if isinstance(step, RandAugment)]  # applied to every image, not p=0.5
    assert augment.num_layers == 2
    assert {(op.magnitude, op.magnitude_std) for op in augment.ops} == {(9, 0.5)}
    (erase,) = [step for step in steps if isinstance(step, RandomErasing)]
    assert erase.probability == 0.25 and erase.mode == "pixel"
    plain = utility.train_transform("finetune", processor, randaugment=False).transforms
    assert not any(isinstance(step, RandAugment) for step in plain)
    image = class_photos["coffee"]
    assert utility.train_transform("finetune", processor)(image).shape == (3, 32, 32)
    test = utility.eval_transform("finetune", processor)
    assert test(image).shape == (3, 32, 32) and torch.equal(test(image), test(image))
