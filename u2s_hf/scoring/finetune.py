"""What the captioning and VQA utilities share: the usable rows of a split, batches of prompt + target tokens for
a vision-language model, a fine-tuning loop and batched generation.

Both follow the classification utility's protocol (`utility.py`): train on the anonymised train split, test on the
ORIGINAL test split, refuse test images that are byte-identical to train images before any model loads.
"""

from __future__ import annotations

import contextlib
import math

from .. import runtime
from ..images import ImageError, decode
from .common import progress
from .utility import image_digest


def usable_rows(ds, image_column: str, read, *text_columns: str):
    """(the image column, usable row numbers, read(*texts) per usable row, their image digests), where texts are the
    row's values of `text_columns`. A row is usable when its image decodes and `read` makes something of its texts
    (not None). A column the split lacks is a ValueError naming the columns it has."""
    import datasets

    for column in (image_column, *text_columns):
        if column not in ds.column_names:
            raise ValueError(f"no {column!r} column in the split (columns: {', '.join(ds.column_names)})")
    if isinstance(ds.features[image_column], datasets.Image):  # undecoded: a bad file must not raise in datasets
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    images = ds[image_column]  # a lazy column: one cell is read at a time
    rows, values, digests = [], [], []
    for row, (cell, *texts) in enumerate(zip(images, *(ds[c] for c in text_columns), strict=True)):
        value = read(*texts)
        if value is None or cell is None:
            continue
        try:
            decode(cell)
        except ImageError:
            continue
        rows.append(row)
        values.append(value)
        digests.append(image_digest(cell))
    return images, rows, values, digests


def picture(cell):
    """The PIL image of a stored cell (rows reach here only after `usable_rows` decoded them once)."""
    from PIL import Image

    return Image.fromarray(decode(cell))


def end_token(model, tokenizer) -> int:
    """The token that ends a target: the one generation stops at (generation_config's first eos), so what the model
    learns to end with is what ends its answers; else the tokenizer's eos."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    eos = tokenizer.eos_token_id if eos is None else eos
    if eos is None:
        raise ValueError("the model names no end-of-sequence token (generation_config or tokenizer)")
    return int(eos)


def training_batch(processor, images, prompts, targets, end_id: int) -> dict:
    """Model inputs with labels for prompt + target, padded on the right.

    Each example goes through the processor alone (it expands the image placeholders of its prompt), then the
    target's tokens and `end_id` are appended. Labels are those appended tokens; the prompt, the image tokens and
    the padding are -100 (no loss). Per-token inputs other than the ids and the attention mask (e.g. Qwen-VL's
    mm_token_type_ids) are 0 for the appended and padded tokens; per-image inputs (pixel values, grids) are
    concatenated."""
    import torch

    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    encoded, appended = [], []
    for image, prompt, target in zip(images, prompts, targets, strict=True):
        encoded.append(processor(images=[image], text=[prompt], return_tensors="pt"))
        ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [end_id]
        appended.append(torch.tensor(ids, dtype=torch.long))
    length = max(len(e["input_ids"][0]) + len(a) for e, a in zip(encoded, appended, strict=True))
    per_token = [key for key, value in encoded[0].items() if value.shape == encoded[0]["input_ids"].shape]
    batch = {key: [] for key in encoded[0]}
    labels = []
    for e, target in zip(encoded, appended, strict=True):
        prompt_length = len(e["input_ids"][0])
        padding = length - prompt_length - len(target)
        for key in per_token:
            tail = {"input_ids": target, "attention_mask": torch.ones_like(target)}.get(key, torch.zeros_like(target))
            filler = pad if key == "input_ids" else 0
            row = torch.cat([e[key][0], tail.to(e[key].dtype), torch.full((padding,), filler, dtype=e[key].dtype)])
            batch[key].append(row)
        labels.append(torch.cat([torch.full((prompt_length,), -100), target, torch.full((padding,), -100)]))
        for key in set(e) - set(per_token):
            batch[key].append(e[key])
    out = {key: torch.stack(values) if key in per_token else torch.cat(values) for key, values in batch.items()}
    out["labels"] = torch.stack(labels)
    return out


def optimizer_steps(examples: int, epochs: int, batch_size: int, grad_accum: int) -> int:
    """How many optimizer steps `fine_tune` takes."""
    return epochs * math.ceil(math.ceil(examples / batch_size) / grad_accum)


def learning_rate(step: int, total: int, warmup: int, lr: float) -> float:
    """The rate of optimizer step `step` (from 0) of `total`: linear up to `lr` over `warmup` steps, then a half
    cosine down to 0 at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fine_tune(
    model,
    examples: list,
    make_batch,
    *,
    epochs: int,
    batch_size: int,
    grad_accum: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    device: str,
    seed: int,
    name: str,
) -> None:
    """Train the parameters of `model` that require grad on `examples` (`make_batch(list of examples)` gives the
    model's inputs with labels): AdamW with `weight_decay` except on biases and norms (parameters of one
    dimension), `learning_rate` set at every optimizer step, gradients accumulated over `grad_accum` batches (the
    loss of each batch scaled by the batches in its group), a new seeded order every epoch, bf16 autocast on CUDA.
    Leaves the model in eval mode."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    batches = math.ceil(len(examples) / batch_size)
    total = optimizer_steps(len(examples), epochs, batch_size, grad_accum)
    order = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for epoch in progress(range(epochs), f"{name} training", unit="epoch"):
        shuffled = torch.randperm(len(examples), generator=order).tolist()
        losses = []
        for b in range(batches):
            first = b - b % grad_accum
            if b == first:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total, warmup_steps, lr)
            chunk = [examples[i] for i in shuffled[b * batch_size : (b + 1) * batch_size]]
            with autocast(device):
                loss = model(**to_device(make_batch(chunk), device)).loss
            (loss / min(grad_accum, batches - first)).backward()
            losses.append(loss.item())
            if b + 1 == min(first + grad_accum, batches):
                optimizer.step()
                optimizer.zero_grad()
                step += 1
        runtime.logger.info("%s epoch %d/%d: mean loss %.4f", name, epoch + 1, epochs, sum(losses) / len(losses))
    model.eval()


def generate(model, processor, images, prompts, device: str, **settings) -> list[str]:
    """The model's continuation of each prompt about its image, decoded without special tokens and stripped; the
    prompts are padded on the left so that every continuation starts at the same position."""
    import torch

    processor.tokenizer.padding_side = "left"
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad(), autocast(device):
        out = model.generate(**to_device(dict(inputs), device), **settings)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def to_device(batch: dict, device: str) -> dict:
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}


def autocast(device: str):
    """bf16 autocast on CUDA (the recipes train in mixed precision); full precision elsewhere."""
    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
