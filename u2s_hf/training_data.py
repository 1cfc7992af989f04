"""The triplets a training run reads: opened, filtered and counted, then served in an order that a resumed run
repeats exactly.

The order is a stream: the filtered rows in a seeded permutation per epoch (`numpy.random.default_rng([seed,
epoch])`), one epoch after another. Optimizer step `s` reads the stream's positions `s * B ... (s + 1) * B - 1`
with `B = batch_size * gradient_accumulation * processes`, so the step number alone says where the data stands: a run
resumed at step `s` reads exactly what an uninterrupted one would have read from there.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from dataclasses import dataclass

import datasets
import numpy as np

from . import sources
from .training_config import TrainConfig, TrainingError

logger = logging.getLogger("u2s_hf")
SAFE_TEXTS = ("c_pub", "c_edit")  # what Safe Cross Attention attends to, after the instruction (editor order)


@dataclass(frozen=True)
class Triplets:
    """The rows to train on (only the columns training reads) and how they were chosen."""

    data: datasets.Dataset
    counts: dict  # read, skipped_status, skipped_missing, dropped_snorm, used
    digest: str  # of the chosen rows: a resumed run must train on the same ones

    def __len__(self) -> int:
        return len(self.data)


def text_columns(config: TrainConfig) -> tuple[str, ...]:
    """The texts of a row in the order the UNet's context holds them: the instruction, then (with Safe Cross
    Attention) the public caption and the edit, as the editor passes them."""
    return (config.prompt, *SAFE_TEXTS) if config.safe_attention else (config.prompt,)


def open_triplets(config: TrainConfig) -> Triplets:
    """The training rows of `config.data`: edited rows (when `u2s_status` exists) with both images and every text,
    whose s_norm is above `config.min_snorm` (computed with ScoreEdit when the column is missing). Counted."""
    ds = _split(sources.open_source(config.data), config)
    images = (config.image_column, config.target_column)
    texts = tuple(dict.fromkeys(text_columns(config)))
    _check_columns(ds, config, images, texts)
    counts = {"read": len(ds), "skipped_status": 0, "skipped_missing": 0, "dropped_snorm": 0, "used": 0}
    keep = np.ones(len(ds), dtype=bool)
    if "u2s_status" in ds.column_names:
        edited = np.array([status == "edited" for status in ds["u2s_status"]], dtype=bool)
        counts["skipped_status"] = int((keep & ~edited).sum())
        keep &= edited
    present = np.ones(len(ds), dtype=bool)
    table = ds.with_format("arrow")
    for name in images:
        present &= ~table[name].is_null().to_numpy(zero_copy_only=False)
    for name in texts:
        present &= np.array([isinstance(t, str) and bool(t.strip()) for t in ds[name]], dtype=bool)
    counts["skipped_missing"] = int((keep & ~present).sum())
    keep &= present
    if config.min_snorm is not None:
        rows = np.flatnonzero(keep)
        scores = _snorm(ds, rows, config)
        good = np.array([s is not None and not math.isnan(s) and s > config.min_snorm for s in scores], dtype=bool)
        counts["dropped_snorm"] = int((~good).sum())
        keep[rows[~good]] = False
    rows = np.flatnonzero(keep)
    counts["used"] = len(rows)
    if not len(rows):
        raise TrainingError(
            f"no triplet left to train on in {config.data}: {_counted(counts)} (an edited row with both images, "
            f"{', '.join(texts)}" + (f" and s_norm above {config.min_snorm})" if config.min_snorm is not None else ")")
        )
    data = ds.select(rows).select_columns([*images, *texts])
    for name in images:
        data = data.cast_column(name, datasets.Image())
    digest = hashlib.sha256(f"{len(ds)}:".encode() + rows.astype(np.int64).tobytes()).hexdigest()[:16]
    logger.info("u2s train: %s", _counted(counts))
    return Triplets(data, counts, digest)


def _counted(counts: dict) -> str:
    return (
        f"{counts['read']} rows read, {counts['skipped_status']} skipped by status (not edited), "
        f"{counts['skipped_missing']} skipped for a missing image or text, {counts['dropped_snorm']} dropped by "
        f"s_norm, {counts['used']} used"
    )


def _split(loaded, config: TrainConfig) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        if config.split:
            raise TrainingError(f"{config.data} has no splits; leave out --split")
        return loaded
    name = config.split or ("train" if "train" in loaded else next(iter(loaded)) if len(loaded) == 1 else None)
    if name not in loaded:
        raise TrainingError(f"{config.data}: choose a split with --split from {', '.join(loaded)}")
    return loaded[name]


def _check_columns(ds, config: TrainConfig, images, texts) -> None:
    missing = [name for name in (*images, *texts) if name not in ds.column_names]
    if missing:
        hint = ""
        if config.image_column in missing:
            hint = (
                f"; training needs the original image ({config.image_column}) beside the edited one, and a u2s "
                "release leaves the original out: save the triplets from u2s.anonymize(..., keep_original=True) or "
                "from the stages' maps"
            )
        elif set(SAFE_TEXTS) & set(missing) and config.safe_attention:
            hint = "; Safe Cross Attention attends to c_pub and c_edit"
        raise TrainingError(
            f"{config.data} has no column {', '.join(missing)} (columns: {', '.join(ds.column_names)}){hint}"
        )
    for name in images:
        if not isinstance(ds.features[name], datasets.Image):
            raise TrainingError(f"column {name!r} is {ds.features[name]}, not an Image column")


def _snorm(ds, rows: np.ndarray, config: TrainConfig) -> list:
    """s_norm of `rows`: the column's, else computed with ScoreEdit (on those rows only)."""
    if "s_norm" in ds.column_names:
        return ds.select(rows)["s_norm"] if len(rows) else []
    try:
        from .stages.score_edit import ScoreEdit
    except ImportError as exc:
        raise TrainingError(
            f"{config.data} has no s_norm column and ScoreEdit cannot be imported to compute it ({exc}); add the "
            "column (u2s.ScoreEdit) or train on every row with --min-snorm none"
        ) from exc
    if "c_pub" not in ds.column_names:
        raise TrainingError(
            f"{config.data} has no s_norm column, and computing it (ScoreEdit) needs the public caption c_pub; or "
            "train on every row with --min-snorm none"
        )
    if not len(rows):
        return []
    settings = {"clip_model": config.clip_model} if config.clip_model else {}
    stage = ScoreEdit(
        caption_column="c_pub", image_column=config.image_column, output_column=config.target_column, **settings
    )
    part = ds.select(rows).select_columns(["c_pub", config.image_column, config.target_column])
    for name in (config.image_column, config.target_column):  # the stage decodes, fail-closed
        part = part.cast_column(name, datasets.Image(decode=False))
    logger.info("u2s train: no s_norm column; scoring %d triplets with ScoreEdit", len(rows))
    return part.map(stage, batched=True, desc="u2s score_edit")["s_norm"]


def total_steps(rows: int, config: TrainConfig, processes: int) -> int:
    """Optimizer steps of the run: `max_steps`, else enough for `epochs` passes over the rows."""
    if config.max_steps is not None:
        return config.max_steps
    return math.ceil(config.epochs * rows / samples_per_step(config, processes))


def samples_per_step(config: TrainConfig, processes: int) -> int:
    return config.batch_size * config.gradient_accumulation * processes


class Order:
    """The micro-batches (lists of row indices) this process reads from optimizer step `start` to `stop`: its
    DataLoader's batch sampler (see the module's docstring)."""

    def __init__(self, rows: int, config: TrainConfig, start: int, stop: int, processes: int = 1, rank: int = 0):
        self.rows, self.seed, self.start, self.stop = rows, config.seed, start, stop
        self.batch, self.accumulation = config.batch_size, config.gradient_accumulation
        self.processes, self.rank = processes, rank

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accumulation

    def __iter__(self):
        per_step = self.batch * self.accumulation * self.processes
        for step in range(self.start, self.stop):
            for micro in range(self.accumulation):
                first = step * per_step + (micro * self.processes + self.rank) * self.batch
                yield [self.row_at(position) for position in range(first, first + self.batch)]

    def row_at(self, position: int) -> int:
        epoch, index = divmod(position, self.rows)
        return int(self._permutation(epoch)[index])

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few per run, freed with it)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)


class TripletImages:
    """Row i of the triplets as (source, target, texts): both images resized by the shorter side to `resolution`,
    centre-cropped, as float tensors in [-1, 1] (C, H, W). A map-style dataset for torch's DataLoader."""

    def __init__(self, triplets: Triplets, config: TrainConfig):
        self.data, self.resolution = triplets.data, config.resolution
        self.images, self.texts = (config.image_column, config.target_column), text_columns(config)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        row = self.data[int(i)]
        source, target = (self._pixels(row[name]) for name in self.images)
        return source, target, tuple(row[name] for name in self.texts)

    def _pixels(self, image):
        import torch
        from PIL import Image

        image = image.convert("RGB")
        scale = self.resolution / min(image.size)
        size = (max(self.resolution, round(image.width * scale)), max(self.resolution, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - self.resolution) // 2, (size[1] - self.resolution) // 2
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def collate(items):
    """(sources, targets, texts per column) from a list of TripletImages items."""
    import torch

    sources_, targets, texts = zip(*items, strict=True)
    return torch.stack(sources_), torch.stack(targets), [list(column) for column in zip(*texts, strict=True)]
