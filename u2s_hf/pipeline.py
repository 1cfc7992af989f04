"""Presets as ready stage instances, and `anonymize`: the whole chain, cached, resumable, fail closed."""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import datasets

from . import runtime
from .config import PRESETS, field_names
from .stages import Caption, Edit, Inspect, Instruct
from .stages.read import ReadImages, holds_paths

logger = logging.getLogger("u2s_hf")

STAGE_CLASSES = {"inspect": Inspect, "caption": Caption, "instruct": Instruct, "edit": Edit}
MAP_BATCH_SIZE = 16
WRITER_BATCH_SIZE = 64  # image outputs: keep Arrow writer buffers small
# User columns that usually hold file names or paths: left out of the release view unless kept on purpose.
PATH_COLUMNS = (
    "file_name",
    "filename",
    "file",
    "path",
    "filepath",
    "file_path",
    "image_path",
    "img_path",
    "image_file",
    "url",
    "image_url",
)


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


def anonymize(
    ds,
    preset: str | Preset = "lite",
    image_column: str = "image",
    keep_original: bool = False,
    num_proc: int | None = None,
    batch_size: int = MAP_BATCH_SIZE,
    image_root: str | bool | None = None,
    keep_columns=(),
    **overrides,
):
    """Run the preset's stages over `ds` (a Dataset or DatasetDict) and return the release view.

    Every row is kept; `safe_image`, the privacy columns and the user's other columns are returned. Left out: the
    original image column unless `keep_original=True` (for evaluation only: never publish it), and columns that
    usually hold file names or paths (PATH_COLUMNS) unless named in `keep_columns`.

    Every image is read once, first: image cells that hold only a file path are read from `image_root` (a folder),
    and nowhere else; `image_root=None` means the folder of a dataset that `imagefolder` built (no path is read from
    any other dataset), `image_root=False` that no path is ever read. An unreadable cell is an error row.
    """
    return run(ds, preset, image_column, keep_original, num_proc, batch_size, image_root, keep_columns, **overrides)[0]


def run(
    ds,
    preset,
    image_column="image",
    keep_original=False,
    num_proc=None,
    batch_size=MAP_BATCH_SIZE,
    image_root=None,
    keep_columns=(),
    **overrides,
):
    """`anonymize`, also returning seconds spent per stage (for reports)."""
    chosen = _build_preset(preset, {"image_column": image_column, **overrides})
    if isinstance(ds, datasets.DatasetDict):
        timings = {}
        splits = {}
        for split, part in ds.items():
            splits[split], timings[split] = run(
                part, chosen, image_column, keep_original, num_proc, batch_size, image_root, keep_columns
            )
        return datasets.DatasetDict(splits), timings
    if not isinstance(ds, datasets.Dataset):
        raise TypeError(f"anonymize needs a datasets.Dataset or DatasetDict, not {type(ds).__name__}")
    if image_column not in ds.column_names:
        raise ValueError(f"image column {image_column!r} not found; columns: {ds.column_names}")
    feature = ds.features[image_column]
    if not isinstance(feature, datasets.Image):
        raise ValueError(f"column {image_column!r} is {feature}, not an Image column")
    runtime.children_exit_with_parent()
    logger.info(
        "u2s preset %s on %d rows: %s (device %s)",
        chosen.name,
        len(ds),
        ", ".join(map(repr, chosen.stages)),
        runtime.device_for(0),
    )
    missing = sorted(set(keep_columns) - set(ds.column_names))
    if missing:
        raise ValueError(f"keep_columns: no column {', '.join(missing)}; columns: {', '.join(ds.column_names)}")
    # Decode inside the stages, not in datasets: a corrupt image must become an error row, not a crashed map.
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    timings = {}
    if holds_paths(ds, image_column):
        start = time.perf_counter()
        reader = ReadImages(image_column=image_column, image_root=_image_root(ds, image_column, image_root))
        # Never from the cache: the files may have changed since, whatever their names and times say.
        ds = ds.map(
            reader,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            load_from_cache_file=False,
            writer_batch_size=WRITER_BATCH_SIZE,
            desc="u2s read",
            new_fingerprint=runtime.fingerprint(ds._fingerprint, reader.name, reader.config),
        )
        timings[reader.name] = round(time.perf_counter() - start, 3)
    fingerprint = runtime.fingerprint(ds._fingerprint, runtime.content_digest(ds, image_column))
    for stage in chosen.stages:
        start = time.perf_counter()
        fingerprint = runtime.fingerprint(fingerprint, stage.name, stage.config, batch_size)
        ds = ds.map(
            stage,
            batched=True,
            batch_size=batch_size,
            with_rank=True,
            num_proc=num_proc,
            writer_batch_size=WRITER_BATCH_SIZE,
            desc=f"u2s {stage.name}",
            new_fingerprint=fingerprint,
        )
        timings[stage.name] = round(time.perf_counter() - start, 3)
    dropped = [name for name in PATH_COLUMNS if name in ds.column_names and name not in keep_columns]
    if not keep_original:
        dropped.append(image_column)
    return ds.remove_columns(dropped), timings


def _image_root(ds, image_column, image_root) -> str | None:
    """The folder path-only cells may be read from (see `anonymize`), or None."""
    if image_root is False:
        return None
    if image_root is not None:
        if isinstance(image_root, bool) or not os.path.isdir(image_root):
            raise ValueError(f"image_root must be a folder, None or False, not {image_root!r}")
        return str(image_root)
    if ds.info.builder_name != "imagefolder":
        return None
    paths = [p for chunk in ds.data.column(image_column).chunks for p in chunk.field("path").to_pylist() if p]
    if not paths:
        return None
    # The folder the files were found in, not where links in it point to.
    return os.path.realpath(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))
