"""Presets as ready stage instances, and `anonymize`: the whole chain, cached, resumable, fail closed."""
from __future__ import annotations

import dataclasses
import logging
import time

import datasets

from . import runtime
from .config import PRESETS, field_names
from .stages import Caption, Edit, Inspect, Instruct

logger = logging.getLogger("u2s_hf")

STAGE_CLASSES = {"inspect": Inspect, "caption": Caption, "instruct": Instruct, "edit": Edit}
MAP_BATCH_SIZE = 16
WRITER_BATCH_SIZE = 64  # image outputs: keep Arrow writer buffers small


@dataclasses.dataclass(frozen=True)
class Preset:
    """Ready stage instances, in the order they run. Missing stages are None."""

    name: str
    inspect: Inspect | None = None
    caption: Caption | None = None
    instruct: Instruct | None = None
    edit: Edit | None = None

    @property
    def stages(self) -> list:
        return [getattr(self, name) for name in STAGE_CLASSES if getattr(self, name) is not None]


def preset(name: str = "lite", **overrides) -> Preset:
    """The named preset; each override sets that setting on every stage that has it (e.g. method="blur")."""
    return _build_preset(name, overrides)


def _build_preset(preset: str | Preset, overrides: dict) -> Preset:
    """A Preset from a name or a Preset, with `overrides` applied to every stage that has the setting."""
    if isinstance(preset, Preset):
        name, configs = preset.name, {s.name: s.config for s in preset.stages}
    elif preset in PRESETS:
        name, configs = preset, PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    known = set().union(*(field_names(type(cfg)) for cfg in configs.values()))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"preset {name!r} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
    stages = {}
    for stage_name, cfg in configs.items():
        own = {k: v for k, v in overrides.items() if k in field_names(type(cfg))}
        stages[stage_name] = STAGE_CLASSES[stage_name](**{**dataclasses.asdict(cfg), **own})
    return Preset(name=name, **stages)


def anonymize(ds, preset: str | Preset = "lite", image_column: str = "image", keep_original: bool = False,
              num_proc: int | None = None, batch_size: int = MAP_BATCH_SIZE, **overrides):
    """Run the preset's stages over `ds` (a Dataset or DatasetDict) and return the release view.

    Every row is kept; `safe_image`, the privacy columns and the user's other columns are returned, and the
    original image column is removed unless `keep_original=True` (for evaluation only: never publish it).
    """
    return run(ds, preset, image_column, keep_original, num_proc, batch_size, **overrides)[0]


def run(ds, preset, image_column="image", keep_original=False, num_proc=None, batch_size=MAP_BATCH_SIZE,
        **overrides):
    """`anonymize`, also returning seconds spent per stage (for reports)."""
    chosen = _build_preset(preset, {"image_column": image_column, **overrides})
    if isinstance(ds, datasets.DatasetDict):
        timings = {}
        splits = {}
        for split, part in ds.items():
            splits[split], timings[split] = run(part, chosen, image_column, keep_original, num_proc, batch_size)
        return datasets.DatasetDict(splits), timings
    if not isinstance(ds, datasets.Dataset):
        raise TypeError(f"anonymize needs a datasets.Dataset or DatasetDict, not {type(ds).__name__}")
    if image_column not in ds.column_names:
        raise ValueError(f"image column {image_column!r} not found; columns: {ds.column_names}")
    feature = ds.features[image_column]
    if not isinstance(feature, datasets.Image):
        raise ValueError(f"column {image_column!r} is {feature}, not an Image column")
    logger.info("u2s preset %s on %d rows: %s (device %s)", chosen.name, len(ds),
                ", ".join(map(repr, chosen.stages)), runtime.device_for(0))
    # Decode inside the stages, not in datasets: a corrupt image must become an error row, not a crashed map.
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    timings = {}
    for stage in chosen.stages:
        start = time.perf_counter()
        ds = ds.map(stage, batched=True, batch_size=batch_size, with_rank=True, num_proc=num_proc,
                    writer_batch_size=WRITER_BATCH_SIZE, desc=f"u2s {stage.name}",
                    new_fingerprint=runtime.fingerprint(ds._fingerprint, stage.name, stage.config, batch_size))
        timings[stage.name] = round(time.perf_counter() - start, 3)
    if not keep_original:
        ds = ds.remove_columns(image_column)
    return ds, timings
