"""Utility: train a classifier on the anonymised train split, test it on the ORIGINAL test split (top-1 accuracy,
higher is better: the anonymisation kept what the task needs).

The default recipe (`mode="finetune"`) is the paper's: ImageMAE ViT-B/16 fine-tuned with a linear head, batch 64 x
4 accumulation, lr 5e-4, 100 epochs, RandAugment(2, 9, 0.5). That is MAE's end-to-end fine-tuning recipe (He et al.,
"Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, Table 9; facebookresearch/mae FINETUNE.md for ViT-B:
base lr 5e-4 per 256 images, layer decay 0.65, 100 epochs), so where the paper is silent we follow MAE's fine-tuning
(the constants below). `mode="linear"` is a fast linear probe on the frozen backbone: not the paper's recipe.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from .. import runtime
from ..images import ImageError, decode, read_file
from .common import counted, progress

if TYPE_CHECKING:
    import datasets

PAPER_BACKBONE = "facebook/vit-mae-base"  # the paper's ImageMAE ViT-B/16, self-supervised on ImageNet-1k
MODES = ("finetune", "linear")

# MAE's fine-tuning choices, used in mode="finetune" where the paper names none (facebookresearch/mae main_finetune.py
# defaults and FINETUNE.md's ViT-B command; MAE paper Table 9).
# timm's spec of the paper's RandAugment(2, 9, 0.5): 2 ops, magnitude 9, Gaussian magnitude noise of std 0.5. MAE's
# --aa adds "-inc1" (ops whose severity rises with magnitude): left out, as its Posterize keeps 0 bits at magnitude
# 10, which Pillow 13 refuses.
RANDAUGMENT = "rand-m9-n2-mstd0.5"
RANDOM_ERASING = 0.25  # MAE's --reprob 0.25, --remode pixel, --recount 1 (after DeiT)
LAYER_DECAY = 0.65  # MAE's ViT-B --layer_decay
WEIGHT_DECAY = 0.05  # MAE's --weight_decay; none on biases, norms, the CLS token and the position table
BETAS = (0.9, 0.999)  # AdamW's (MAE Table 9)
LABEL_SMOOTHING = 0.1  # MAE's --smoothing
WARMUP_EPOCHS = 5  # MAE's --warmup_epochs; a run under 50 epochs warms up for a tenth of its epochs instead
MIN_LR = 1e-6  # MAE's --min_lr: where the cosine ends
HEAD_INIT_STD = 2e-5  # MAE initialises the new head's weight from a truncated normal of this std
LINEAR_WEIGHT_DECAY = 0.01  # mode="linear": torch's AdamW default (our choice, as before)


def train_eval_classifier(
    train_ds: datasets.Dataset,
    test_ds: datasets.Dataset,
    backbone: str = PAPER_BACKBONE,
    mode: str = "finetune",
    image_column: str = "image",
    label_column: str = "label",
    epochs: int = 100,
    batch_size: int = 64,
    grad_accum: int = 4,
    lr: float = 5e-4,
    randaugment: bool = True,
    seed: int = 0,
    device: str | None = None,
    revision: str | None = None,
    num_workers: int = 0,
    allow_overlap: bool = False,
) -> dict:
    """Top-1 accuracy on `test_ds` of a classifier trained on `train_ds` (the paper's utility protocol).

    The backbone (Hub id or local folder) is loaded with AutoModel/AutoImageProcessor; a ViT-style encoder (CLS
    token first) is assumed. ViTMAE checkpoints get mask_ratio=0 and a fixed patch order, so no patch is dropped and
    testing is deterministic. `lr` is the peak learning rate for `batch_size` x `grad_accum` images per step (the
    paper's 5e-4 for 256 is MAE's fine-tuning base rate); gradients are accumulated over `grad_accum` batches.

    `mode="finetune"` (default; the paper's recipe, MAE's fine-tuning where the paper is silent) trains the whole
    encoder. Head: MAE's global-pool head, the mean of the patch tokens (not the CLS token) of the last block, with
    the encoder's final LayerNorm removed, then a new LayerNorm (MAE's fc_norm, eps 1e-6) and a linear layer whose
    weight starts from a truncated normal of std 2e-5. Optimiser: AdamW, betas (0.9, 0.999), weight decay 0.05 except
    on biases, norms, the CLS token and the position table (trained, as in MAE), with layer-wise learning-rate decay
    0.65: the embeddings are layer 0, encoder block i is layer i + 1, the head is layer L + 1 (L blocks), and a
    layer's rate is scaled by 0.65 ** (L + 1 - layer). Schedule, set at each optimizer step from the fractional epoch
    as MAE does: a linear warm-up from 0 over min(5, epochs / 10) epochs (MAE's 5 at its 50 and 100 epochs; a tenth
    of a shorter run, so a 2-epoch run still reaches its peak and decays), then a half cosine down to 1e-6 at the
    last epoch. Loss: cross-entropy with label smoothing 0.1. Training images: timm's MAE/DeiT transform, a random
    resized crop (scale 0.08-1, bicubic) to the processor's size, a horizontal flip with probability 0.5, with
    `randaugment` timm's RandAugment "rand-m9-n2-mstd0.5" on every image (2 ops at magnitude 9 with Gaussian
    magnitude noise of std 0.5; timm applies each chosen op with probability 0.5), the processor's
    normalisation, then random erasing with probability 0.25 (per-pixel noise). Test images: MAE's evaluation
    transform, a bicubic resize of the shorter side to size / 0.875 (size itself above 224) and a centre crop.
    Left out of MAE's recipe: Mixup 0.8 / CutMix 1.0 (MAE's ImageNet setting; the paper names neither), drop path
    0.1 (transformers' ViTMAE has none), RandAugment's "increasing" op set (`RANDAUGMENT`) and mixed precision.

    `mode="linear"` is a fast linear probe, NOT the paper's recipe: the backbone is frozen, the feature is the CLS
    token of the last hidden state, the head is MAE's linear-probe head (BatchNorm without affine parameters, then a
    linear layer), AdamW with torch's default weight decay 0.01 and a cosine decay of `lr` to 0 with no warm-up and
    no label smoothing; training images are the processor's resize after the same RandAugment (with `randaugment`),
    test images the processor's resize.

    The test rows must not be train rows: unless `allow_overlap`, a test image whose stored bytes (xxh3-128 of the
    cell's bytes, or of its file for a path-only cell) equal a train image's is refused with a ValueError before any
    model loads. Only identical files are caught, not the same picture encoded twice.

    Labels may be ints (ClassLabel, where -1 means missing) or strings; they are compared by value. The classes are
    the labels seen in the usable train rows; a test row whose label is not among them counts as wrong. A row whose
    image does not decode or whose label is missing is skipped and counted. Same seed, same result (on CPU); the
    global random states (random, numpy, torch) are restored afterwards.
    Returns accuracy (None when no test row could be scored) with accuracy_scored (test rows scored) and
    accuracy_missing (test rows skipped: unreadable or unlabelled), per_image (the predicted label per test row, None
    for a skipped row), skipped_train, skipped_test and num_classes.
    """
    import torch
    import torch.nn.functional as F

    if mode not in MODES:
        raise ValueError(f"mode must be 'finetune' or 'linear', not {mode!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_images, train_rows, train_labels, train_digests = _usable(train_ds, image_column, label_column)
    test_images, test_rows, test_labels, test_digests = _usable(test_ds, image_column, label_column)
    if not allow_overlap:
        refuse_overlap(train_digests, test_digests)
    classes = list(dict.fromkeys(train_labels))
    if not classes:
        raise ValueError("no usable training row (every image is unreadable or unlabelled)")
    index = {label: i for i, label in enumerate(classes)}
    finetune = mode == "finetune"

    with seeded(seed):  # the transforms and the loaders draw from the global random states
        encoder, config, processor = load_backbone(backbone, mode, revision, device)
        head = classifier_head(mode, config.hidden_size, len(classes)).to(device)
        train_set = _Rows(
            train_images,
            train_rows,
            [index[label] for label in train_labels],
            train_transform(mode, processor, randaugment),
        )
        # A last batch of one row would break the probe's BatchNorm statistics: drop it (the shuffle changes it).
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed),
            drop_last=not finetune and len(train_set) % batch_size == 1,
        )
        if finetune:
            groups = param_groups(encoder, head, config.num_hidden_layers)
        else:
            groups = [{"params": list(head.parameters()), "weight_decay": LINEAR_WEIGHT_DECAY, "lr_scale": 1.0}]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=BETAS)
        smoothing = LABEL_SMOOTHING if finetune else 0.0
        for epoch in progress(range(epochs), "utility training", unit="epoch"):
            encoder.train(finetune)
            head.train()
            total = 0.0
            for step, (pixels, targets) in enumerate(loader):
                if step % grad_accum == 0:  # MAE sets the rate where an accumulation starts, from the fractional epoch
                    rate = learning_rate(epoch + step / len(loader), lr, epochs, mode)
                    for group in optimizer.param_groups:
                        group["lr"] = rate * group["lr_scale"]
                logits = head(pooled_features(encoder, config, mode, pixels.to(device)))
                loss = F.cross_entropy(logits, targets.to(device), label_smoothing=smoothing)
                (loss / grad_accum).backward()
                total += loss.item()
                if (step + 1) % grad_accum == 0 or step + 1 == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
            runtime.logger.info("utility epoch %d/%d: mean loss %.4f", epoch + 1, epochs, total / max(1, len(loader)))

        encoder.eval()
        head.eval()
        # An unseen test label gets target -1, which no prediction matches.
        targets = [index.get(label, -1) for label in test_labels]
        test_set = _Rows(test_images, test_rows, targets, eval_transform(mode, processor))
        per_image: list = [None] * len(test_ds)
        hits: list = [None] * len(test_ds)  # 1.0 / 0.0 per scored test row, None for a skipped one
        done = 0
        test_loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, num_workers=num_workers)
        with torch.no_grad():
            for pixels, expected in test_loader:
                predicted = head(pooled_features(encoder, config, mode, pixels.to(device))).argmax(-1).cpu()
                rows = test_rows[done : done + len(predicted)]
                for row, p, t in zip(rows, predicted.tolist(), expected.tolist(), strict=True):
                    per_image[row] = classes[p]
                    hits[row] = float(p == t)
                done += len(predicted)
    return {
        **counted("accuracy", hits),
        "per_image": per_image,
        "skipped_train": len(train_ds) - len(train_rows),
        "skipped_test": len(test_ds) - len(test_rows),
        "num_classes": len(classes),
    }


def load_backbone(backbone: str, mode: str, revision: str | None = None, device: str = "cpu"):
    """(encoder, its config, its image processor), loaded fresh with AutoModel, never from the model cache (training
    changes the weights). ViTMAE gets mask_ratio=0. finetune: every parameter trains and the encoder's final
    LayerNorm (`layernorm`) is removed, as MAE removes its `norm` when it pools (fc_norm takes its place); linear:
    everything is frozen."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    config = AutoConfig.from_pretrained(backbone, revision=revision)
    if hasattr(config, "mask_ratio"):  # ViTMAE drops 75% of the patches in every forward by default, at test time too
        config.mask_ratio = 0.0
    encoder = AutoModel.from_pretrained(backbone, config=config, revision=revision).to(device)
    processor = AutoImageProcessor.from_pretrained(backbone, revision=revision)
    encoder.requires_grad_(mode == "finetune")
    if mode == "finetune" and isinstance(getattr(encoder, "layernorm", None), torch.nn.LayerNorm):
        encoder.layernorm = torch.nn.Identity()
    return encoder, config, processor


def pooled_features(encoder, config, mode: str, pixels):
    """The feature the head sees: the mean of the patch tokens of the last block (finetune; MAE's global pool, the
    CLS token left out) or the CLS token of the last hidden state (linear)."""
    import torch

    extra = {}
    if hasattr(config, "mask_ratio"):  # ViTMAE shuffles the patches by argsort(noise) even when it keeps them all
        patches = (pixels.shape[-2] // config.patch_size) * (pixels.shape[-1] // config.patch_size)
        extra["noise"] = torch.arange(patches, dtype=torch.float, device=pixels.device).expand(len(pixels), -1)
    hidden = encoder(pixel_values=pixels, **extra).last_hidden_state
    return hidden[:, 1:].mean(1) if mode == "finetune" else hidden[:, 0]


def learning_rate(epoch: float, lr: float, epochs: int, mode: str = "finetune") -> float:
    """The learning rate at a fractional `epoch` of `epochs`, peaking at `lr`. finetune, MAE's schedule: linear from 0
    over min(5, epochs / 10) warm-up epochs, then a half cosine down to 1e-6 (or `lr` if lower) at `epochs`. linear:
    a half cosine from `lr` down to 0, no warm-up."""
    warmup, low = (min(WARMUP_EPOCHS, epochs / 10), min(MIN_LR, lr)) if mode == "finetune" else (0.0, 0.0)
    if epoch < warmup:
        return lr * epoch / warmup
    return low + (lr - low) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def param_groups(encoder, head, num_layers: int, layer_decay: float = LAYER_DECAY, weight_decay: float = WEIGHT_DECAY):
    """AdamW parameter groups with MAE's layer-wise learning-rate decay over a transformers ViT encoder and its head.

    Layer ids: `embeddings.*` (patch projection, CLS token, position table) 0, block i (`layers.i.*`, or
    `encoder.layer.i.*` in older transformers) i + 1, anything else and the head `num_layers` + 1. Each group's
    `lr_scale` is layer_decay ** (num_layers + 1 - layer id); its weight decay is `weight_decay`, or 0 for biases,
    norms (every parameter of one dimension), the CLS token and the position table. Frozen parameters are left out.
    """
    groups: dict = {}
    named = [(name, p, _layer_id(name, num_layers)) for name, p in encoder.named_parameters()]
    named += [(name, p, num_layers + 1) for name, p in head.named_parameters()]
    for name, p, layer in named:
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and not name.endswith(("cls_token", "position_embeddings"))
        group = groups.setdefault(
            (layer, decay),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (num_layers + 1 - layer),
            },
        )
        group["params"].append(p)
    return list(groups.values())


_BLOCK = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def _layer_id(name: str, num_layers: int) -> int:
    if name.startswith("embeddings."):
        return 0
    block = _BLOCK.search(name)
    return int(block[1]) + 1 if block else num_layers + 1


def classifier_head(mode: str, hidden_size: int, num_classes: int):
    """The head on the pooled feature: finetune, MAE's fc_norm (LayerNorm, eps 1e-6) then a linear layer (weight
    from a truncated normal of std 2e-5, bias 0); linear, MAE's probe head (BatchNorm without affine) then a linear
    layer (torch's default initialisation)."""
    import torch

    linear = torch.nn.Linear(hidden_size, num_classes)
    if mode == "linear":
        return torch.nn.Sequential(torch.nn.BatchNorm1d(hidden_size, affine=False, eps=1e-6), linear)
    torch.nn.init.trunc_normal_(linear.weight, std=HEAD_INIT_STD)
    torch.nn.init.zeros_(linear.bias)
    return torch.nn.Sequential(torch.nn.LayerNorm(hidden_size, eps=1e-6), linear)


def train_transform(mode: str, processor, randaugment: bool = True):
    """PIL image -> pixel tensor for a training row (see train_eval_classifier)."""
    from timm.data import create_transform
    from timm.data.auto_augment import rand_augment_transform

    mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    if mode == "linear":
        hparams = {"img_mean": tuple(min(255, round(255 * m)) for m in mean)}
        return _Processed(processor, rand_augment_transform(RANDAUGMENT, hparams) if randaugment else None)
    return create_transform(
        input_size=(3, *_input_size(processor)),
        is_training=True,
        hflip=0.5,
        color_jitter=None,  # MAE: no colour jitter (timm would switch it off under RandAugment anyway)
        auto_augment=RANDAUGMENT if randaugment else None,
        interpolation="bicubic",
        mean=mean,
        std=std,
        re_prob=RANDOM_ERASING,
        re_mode="pixel",
        re_count=1,
    )


def eval_transform(mode: str, processor):
    """PIL image -> pixel tensor for a test row: MAE's evaluation resize and centre crop (finetune), the processor
    (linear)."""
    from torchvision import transforms

    if mode == "linear":
        return _Processed(processor, None)
    height, width = _input_size(processor)
    crop = 224 / 256 if max(height, width) <= 224 else 1.0
    return transforms.Compose(
        [
            transforms.Resize(int(min(height, width) / crop), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop((height, width)),
            transforms.ToTensor(),
            transforms.Normalize(processor.image_mean, processor.image_std),
        ]
    )


def _input_size(processor) -> tuple[int, int]:
    size = processor.size
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    return int(size["shortest_edge"]), int(size["shortest_edge"])


class _Processed:
    """The backbone's own processor (after `augment`, if any): mode="linear"'s transform. A class, not a closure,
    so DataLoader workers can receive it."""

    def __init__(self, processor, augment):
        self.processor, self.augment = processor, augment

    def __call__(self, image):
        if self.augment is not None:
            image = self.augment(image)
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


@contextlib.contextmanager
def seeded(seed: int):
    """Seed random, numpy and torch (the transforms draw from all three) and restore their states afterwards."""
    import torch

    saved = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def image_digest(value) -> str | None:
    """xxh3-128 of an image's stored bytes: a {"bytes", "path"} cell (its bytes, else its file's), encoded bytes or
    a file path (read with images.read_file). None when there are no bytes to read (a missing, decoded or unreadable
    image). Equal digests mean identical files; the same picture encoded twice has different digests."""
    try:
        data = _stored_bytes(value)
    except ImageError:
        return None
    return None if data is None else xxhash.xxh3_128_hexdigest(data)


def _stored_bytes(value) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)) and value:
        return read_file(value)
    return None


def refuse_overlap(train_digests: list, test_digests: list) -> None:
    """Refuse test images whose digests are among the train images' (the captioning and VQA utilities too)."""
    seen = set(train_digests) - {None}
    shared = sum(digest in seen for digest in test_digests)
    if shared:
        raise ValueError(
            f"{shared} of the {len(test_digests)} usable test images are also train images (identical image bytes): "
            "the model would be tested on images it was trained on. Remove them from one side, or pass "
            "allow_overlap=True (u2s evaluate: --allow-overlap) if that is what you mean to measure"
        )


def _usable(ds, image_column: str, label_column: str):
    """(image column, usable row numbers, their labels, their image digests): each image is read and decoded once
    here to find the bad rows."""
    import datasets

    feature = ds.features[label_column]
    missing = -1 if isinstance(feature, datasets.ClassLabel) else None  # ClassLabel stores "no label" as -1
    if isinstance(ds.features[image_column], datasets.Image):  # undecoded bytes: a bad file must not raise in datasets
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    images = ds[image_column]  # a lazy column: one cell is read at a time
    rows, labels, digests = [], [], []
    for row, (cell, label) in enumerate(zip(images, ds[label_column], strict=True)):
        if label is None or label == missing:
            continue
        try:
            data = _stored_bytes(cell)
            decode(cell if data is None else data)
        except ImageError:
            continue
        rows.append(row)
        labels.append(label)
        digests.append(None if data is None else xxhash.xxh3_128_hexdigest(data))
    return images, rows, labels, digests


class _Rows:
    """The usable rows as a map-style dataset for torch's DataLoader: (pixel tensor, class index) per row."""

    def __init__(self, images, rows, targets, transform):
        self.images, self.rows, self.targets, self.transform = images, rows, targets, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        from PIL import Image

        return self.transform(Image.fromarray(decode(self.images[self.rows[k]]))), self.targets[k]
