"""Utility: train a classifier on the anonymised train split, test it on the ORIGINAL test split (top-1 accuracy,
higher is better: the anonymisation kept what the task needs)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import runtime
from ..images import ImageError, decode
from .common import progress

if TYPE_CHECKING:
    import datasets

PAPER_BACKBONE = "facebook/vit-mae-base"  # the paper's ImageMAE ViT-B/16, self-supervised on ImageNet-1k


def train_eval_classifier(
    train_ds: datasets.Dataset,
    test_ds: datasets.Dataset,
    backbone: str = PAPER_BACKBONE,
    mode: str = "linear",
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
) -> dict:
    """Top-1 accuracy on `test_ds` of a classifier trained on `train_ds` (the paper's utility protocol).

    The backbone (Hub id or local folder) is loaded with AutoModel/AutoImageProcessor; its feature is the CLS token
    of the last hidden state, a ViT-style encoder is assumed. The head is MAE's linear-probe head: BatchNorm without
    affine parameters, then a linear layer. `mode="linear"` freezes the backbone, `"finetune"` trains it too.
    ViTMAE checkpoints get mask_ratio=0 and a fixed patch order, so no patch is dropped and testing is deterministic.
    Training: AdamW (torch's default weight decay 0.01) and a cosine decay of `lr` over all optimizer steps, with no
    warmup (the paper names neither); gradients are accumulated over `grad_accum` batches; with `randaugment`,
    torchvision's RandAugment(num_ops=2, magnitude=9) is applied to a train image with probability 0.5.

    Labels may be ints (ClassLabel, where -1 means missing) or strings; they are compared by value. The classes are
    the labels seen in the usable train rows; a test row whose label is not among them counts as wrong. A row whose
    image does not decode or whose label is missing is skipped and counted. Same seed, same result (on CPU).
    Returns accuracy (None when no test row could be scored), per_image (the predicted label per test row, None
    for a skipped row), skipped_train, skipped_test and num_classes.
    """
    import torch
    import torch.nn.functional as F
    from torchvision import transforms
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    if mode not in ("linear", "finetune"):
        raise ValueError(f"mode must be 'linear' or 'finetune', not {mode!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_images, train_rows, train_labels = _usable(train_ds, image_column, label_column)
    test_images, test_rows, test_labels = _usable(test_ds, image_column, label_column)
    classes = list(dict.fromkeys(train_labels))
    if not classes:
        raise ValueError("no usable training row (every image is unreadable or unlabelled)")
    index = {label: i for i, label in enumerate(classes)}

    config = AutoConfig.from_pretrained(backbone, revision=revision)
    masked = hasattr(config, "mask_ratio")
    if masked:  # ViTMAE drops 75% of the patches in every forward by default, at test time too
        config.mask_ratio = 0.0
    # Loaded fresh, never from the model cache: fine-tuning changes the weights.
    encoder = AutoModel.from_pretrained(backbone, config=config, revision=revision).to(device)
    processor = AutoImageProcessor.from_pretrained(backbone, revision=revision)
    if mode == "linear":
        encoder.requires_grad_(False)  # in finetune mode ViTMAE's fixed sin-cos position table stays frozen

    def features(pixels):
        extra = {}
        if masked:  # ViTMAE shuffles the patches by argsort(noise) even when it keeps them all; ascending = no shuffle
            patches = (pixels.shape[-2] // config.patch_size) * (pixels.shape[-1] // config.patch_size)
            extra["noise"] = torch.arange(patches, dtype=torch.float, device=device).expand(len(pixels), -1)
        return encoder(pixel_values=pixels, **extra).last_hidden_state[:, 0]

    torch.manual_seed(seed)
    head = torch.nn.Sequential(
        torch.nn.BatchNorm1d(config.hidden_size, affine=False, eps=1e-6),
        torch.nn.Linear(config.hidden_size, len(classes)),
    ).to(device)
    augment = transforms.RandomApply([transforms.RandAugment(num_ops=2, magnitude=9)], p=0.5) if randaugment else None
    train_set = _Rows(train_images, train_rows, [index[label] for label in train_labels], processor, augment)
    # A last batch of one row would break BatchNorm's batch statistics: drop it (the shuffle changes it every epoch).
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_set) % batch_size == 1,
    )
    optimizer = torch.optim.AdamW([p for p in [*head.parameters(), *encoder.parameters()] if p.requires_grad], lr=lr)
    steps = max(1, epochs * math.ceil(len(loader) / grad_accum))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for epoch in progress(range(epochs), "utility training", unit="epoch"):
        encoder.train(mode == "finetune")
        head.train()
        total = 0.0
        for step, (pixels, targets) in enumerate(loader, 1):
            loss = F.cross_entropy(head(features(pixels.to(device))), targets.to(device))
            (loss / grad_accum).backward()
            total += loss.item()
            if step % grad_accum == 0 or step == len(loader):
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
        runtime.logger.info("utility epoch %d/%d: mean loss %.4f", epoch + 1, epochs, total / max(1, len(loader)))

    encoder.eval()
    head.eval()
    # An unseen test label gets target -1, which no prediction matches.
    test_set = _Rows(test_images, test_rows, [index.get(label, -1) for label in test_labels], processor, None)
    per_image: list = [None] * len(test_ds)
    correct, done = 0, 0
    with torch.no_grad():
        for pixels, targets in torch.utils.data.DataLoader(test_set, batch_size=batch_size, num_workers=num_workers):
            predicted = head(features(pixels.to(device))).argmax(-1).cpu()
            correct += int((predicted == targets).sum())
            for row, p in zip(test_rows[done : done + len(predicted)], predicted.tolist(), strict=True):
                per_image[row] = classes[p]
            done += len(predicted)
    return {
        "accuracy": correct / len(test_rows) if test_rows else None,
        "per_image": per_image,
        "skipped_train": len(train_ds) - len(train_rows),
        "skipped_test": len(test_ds) - len(test_rows),
        "num_classes": len(classes),
    }


def _usable(ds, image_column: str, label_column: str):
    """(image column, usable row numbers, their labels): each image is decoded once here to find the bad rows."""
    import datasets

    feature = ds.features[label_column]
    missing = -1 if isinstance(feature, datasets.ClassLabel) else None  # ClassLabel stores "no label" as -1
    if isinstance(ds.features[image_column], datasets.Image):  # undecoded bytes: a bad file must not raise in datasets
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    images = ds[image_column]  # a lazy column: one cell is read at a time
    rows, labels = [], []
    for row, (cell, label) in enumerate(zip(images, ds[label_column], strict=True)):
        if label is None or label == missing:
            continue
        try:
            decode(cell)
        except ImageError:
            continue
        rows.append(row)
        labels.append(label)
    return images, rows, labels


class _Rows:
    """The usable rows as a map-style dataset for torch's DataLoader: (pixel tensor, class index) per row."""

    def __init__(self, images, rows, targets, processor, augment):
        self.images, self.rows, self.targets, self.processor, self.augment = images, rows, targets, processor, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        from PIL import Image

        image = Image.fromarray(decode(self.images[self.rows[k]]))
        if self.augment is not None:
            image = self.augment(image)
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0], self.targets[k]
