"""The named presets, as ready stage instances, and `anonymize`: the whole chain, cached, resumable, fail closed."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping

import datasets

from . import runtime
from .config import DETECTOR_SETTINGS, CaptionConfig, EditConfig, InspectConfig, InstructConfig, VerifyConfig
from .stages import Caption, Edit, Inspect, Instruct, Verify
from .stages.read import ReadImages, holds_paths

logger = logging.getLogger("u2s_hf")

# The paper's Stage-1 models. InternVL3-8B-hf is the InternVL family in transformers' native format (no
# trust_remote_code); the paper used InternVL2.5-8B, which only exists as remote code. Revisions are not pinned:
# pinning needs the full commit hash, which could not be read from here (see the README).
PAPER_VLM = "OpenGVLab/InternVL3-8B-hf"
PAPER_LLM = "Qwen/Qwen3-4B-Instruct-2507"
# InstructPix2Pix fine-tuned on MagicBrush (the checkpoint of the MagicBrush paper, epoch 168), in the diffusers
# format of a community port; the official osunlp release is an original-format .ckpt only.
PAPER_MAGICBRUSH = "vinesmsuic/magicbrush-paper"
PAPER_SD3 = "stabilityai/stable-diffusion-3-medium-diffusers"

# name -> {stage attribute: config}; the order is the order the stages run in.
PRESETS: dict[str, dict[str, object]] = {
    "lite": {"inspect": InspectConfig(), "edit": EditConfig(), "verify": VerifyConfig()},
    "paper": {
        "inspect": InspectConfig(backend="vlm", model=PAPER_VLM),
        "caption": CaptionConfig(model=PAPER_VLM),
        "instruct": InstructConfig(model=PAPER_LLM),
        "edit": EditConfig(editor="flowedit", model=PAPER_SD3, source_prompt="c_priv", target_prompt="c_llm"),
        "verify": VerifyConfig(),
    },
    "paper-ip2p": {
        "inspect": InspectConfig(backend="vlm", model=PAPER_VLM),
        "caption": CaptionConfig(model=PAPER_VLM),
        "instruct": InstructConfig(model=PAPER_LLM),
        "edit": EditConfig(editor="instruct-pix2pix", model=PAPER_MAGICBRUSH, prompt="c_edit"),
        "verify": VerifyConfig(),
    },
}
STAGE_CLASSES = {"inspect": Inspect, "caption": Caption, "instruct": Instruct, "edit": Edit, "verify": Verify}
DEFAULT_PRESET = "lite"
# Settings that mean the same thing in every stage that has them (which columns hold what, the pixel guard, threads,
# the device, the privacy criteria, the class names): set flat, they set every stage of the preset that has them.
# Any other name that several stages have (model, batch_size, seed, dtype, revision, ...) must name its stage.
SHARED_SETTINGS = frozenset(
    {
        "image_column",
        "flag_column",
        "detections_column",
        "class_column",
        "class_names",
        "key_column",
        "criteria",
        "max_pixels",
        "threads",
        "device",
        # Edit writes the output image and Verify checks it; Verify's detectors and their limits are Inspect's.
        "output_column",
        "unlocated",
        *DETECTOR_SETTINGS,
    }
)
# Settings that decide what a stage's other settings mean: changing one starts the stage afresh (see `preset`).
CHOOSERS = ("editor", "backend")
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
    verify: Verify | None = None

    @property
    def stages(self) -> list:
        return [getattr(self, name) for name in STAGE_CLASSES if getattr(self, name) is not None]


def preset(
    name: str = DEFAULT_PRESET,
    *,
    inspect: dict | None = None,
    caption: dict | None = None,
    instruct: dict | None = None,
    edit: dict | None = None,
    verify: dict | None = None,
    **settings,
) -> Preset:
    """The named preset, with settings changed.

    `inspect={...}`, `caption={...}`, `instruct={...}`, `edit={...}`, `verify={...}` set that stage only:
    `preset("paper", edit={"model": ...})`. A flat setting (`preset("lite", method="blur")`) sets the one stage of
    the preset that has it; a name that several of its stages have is accepted flat only when it means the same
    thing in each (SHARED_SETTINGS: columns, the pixel guard, threads, the detectors' settings that Inspect and
    Verify share): `model`, `batch_size`, `seed`, ... must say which stage. A stage's own setting wins over a flat
    one. Setting a stage's `editor` or `backend` to another value starts that stage afresh from its defaults
    (keeping its columns and other shared settings): the old editor's or backend's settings (its model, say) are
    not carried over, so give the new one's with it.
    """
    scoped = {"inspect": inspect, "caption": caption, "instruct": instruct, "edit": edit, "verify": verify}
    return _build_preset(name, {**settings, **{k: v for k, v in scoped.items() if v is not None}})


def _build_preset(preset: str | Preset, overrides: dict) -> Preset:
    """A Preset from a name or a Preset, with `overrides` applied as `preset()` says: a key named after a stage
    holds that stage's settings, any other key is a flat setting."""
    if isinstance(preset, Preset):
        name, configs = preset.name, {s.name: s.config for s in preset.stages}
    elif preset in PRESETS:
        name, configs = preset, PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    accepts = {stage: type(cfg).setting_names() for stage, cfg in configs.items()}
    changes = {stage: {} for stage in configs}
    flat = {k: v for k, v in overrides.items() if k not in STAGE_CLASSES}
    known = set().union(*accepts.values())
    unknown = sorted(set(flat) - known)
    if unknown:
        raise TypeError(f"preset {name!r} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
    for key, value in flat.items():
        owners = [stage for stage in configs if key in accepts[stage]]
        if len(owners) > 1 and key not in SHARED_SETTINGS:
            raise ValueError(_ambiguous(name, key, owners))
        for stage in owners:
            changes[stage][key] = value
    for stage in STAGE_CLASSES:  # then each stage's own settings, which win over flat ones
        if stage not in overrides:
            continue
        settings = overrides[stage]
        if stage not in configs:
            raise ValueError(f"preset {name!r} has no {stage} stage; its stages: {', '.join(configs)}")
        if not isinstance(settings, Mapping):
            raise TypeError(f"{stage}= takes a dict of {stage} settings, not {settings!r}")
        unknown = sorted(set(settings) - accepts[stage])
        if unknown:
            raise TypeError(
                f"{stage} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(accepts[stage]))}"
            )
        changes[stage].update(settings)
    stages = {stage: STAGE_CLASSES[stage](**_changed(cfg, changes[stage])) for stage, cfg in configs.items()}
    return Preset(name=name, **stages)


def _changed(config, changes: dict) -> dict:
    """The settings to rebuild `config`'s stage with: its own with `changes` applied, or, when `changes` picks
    another editor or backend, the stage's defaults with only the shared settings kept (see `preset`)."""
    current = dataclasses.asdict(config)
    if any(key in changes and changes[key] != current.get(key) for key in CHOOSERS):
        current = {key: value for key, value in current.items() if key in SHARED_SETTINGS}
    return {**current, **changes}


def _ambiguous(name: str, key: str, stages: list) -> str:
    stage = stages[-1]
    where = f"preset({name!r}, {stage}={{{key!r}: ...}})" if name in PRESETS else f"{stage}={{{key!r}: ...}}"
    listed = f"{', '.join(stages[:-1])} and {stages[-1]}"
    return (
        f"{key} is a setting of {listed} with different meanings: say which, e.g. {where} "
        f"(on the command line: --set {stage}.{key}=...)"
    )


def anonymize(
    ds,
    preset: str | Preset = DEFAULT_PRESET,
    image_column: str = "image",
    keep_original: bool = False,
    num_proc: int | None = None,
    batch_size: int = MAP_BATCH_SIZE,
    image_root: str | bool | None = None,
    keep_columns=(),
    **overrides,
):
    """Run the preset's stages over `ds` (a Dataset or DatasetDict) and return the release view.

    `overrides` change the preset's settings as `preset()` takes them: `method="blur"`, `edit={"model": ...}`.

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
    """`anonymize`, also returning seconds spent per stage (for reports; none for a streamed dataset, whose rows
    are only worked on as they are read)."""
    chosen = _build_preset(preset, {"image_column": image_column, **overrides})
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        timings = {}
        splits = {}
        for split, part in ds.items():
            splits[split], timings[split] = run(
                part, chosen, image_column, keep_original, num_proc, batch_size, image_root, keep_columns
            )
        return type(ds)(splits), timings
    if not isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(
            f"anonymize needs a datasets.Dataset, IterableDataset or a dict of them, not {type(ds).__name__}"
        )
    check_columns(ds, image_column, keep_columns)
    if isinstance(ds, datasets.IterableDataset):
        return _streamed(ds, chosen, image_column, keep_original, batch_size, image_root, keep_columns), {}
    runtime.children_exit_with_parent()
    logger.info(
        "u2s preset %s on %d rows: %s (device %s)",
        chosen.name,
        len(ds),
        ", ".join(map(repr, chosen.stages)),
        runtime.device_for(0),
    )
    # Decode inside the stages, not in datasets: a corrupt image must become an error row, not a crashed map.
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    timings = {}
    maps = dict(batched=True, batch_size=batch_size, num_proc=num_proc, writer_batch_size=WRITER_BATCH_SIZE)
    if holds_paths(ds, image_column):
        start = time.perf_counter()
        reader = ReadImages(image_column=image_column, image_root=image_root_of(ds, image_column, image_root))
        # Never from the cache: the files may have changed since, whatever their names and times say.
        fingerprint = runtime.fingerprint(ds._fingerprint, reader.name, reader.config)
        ds = ds.map(reader, load_from_cache_file=False, desc="u2s read", new_fingerprint=fingerprint, **maps)
        timings[reader.name] = round(time.perf_counter() - start, 3)
    fingerprint = runtime.fingerprint(ds._fingerprint, runtime.content_digest(ds, image_column))
    for stage in chosen.stages:
        start = time.perf_counter()
        fingerprint = runtime.fingerprint(fingerprint, stage.name, stage.config, batch_size)
        undecoded = [name for name in stage.undecoded() if name in ds.column_names and name != image_column]
        for name in undecoded:
            ds = ds.cast_column(name, datasets.Image(decode=False))
        ds = ds.map(stage, with_rank=True, desc=f"u2s {stage.name}", new_fingerprint=fingerprint, **maps)
        for name in undecoded:  # the release view decodes them again
            ds = ds.cast_column(name, datasets.Image())
        timings[stage.name] = round(time.perf_counter() - start, 3)
    return ds.remove_columns(_dropped(ds.column_names, image_column, keep_original, keep_columns)), timings


def _streamed(ds, chosen, image_column, keep_original, batch_size, image_root, keep_columns):
    """The chain over a streamed dataset, lazily: each batch of rows, as it is read, goes through the very code a
    Dataset goes through (a Dataset of that batch, in memory), so rows leave with the same values and bytes, and
    the returned IterableDataset says its features before a row is read."""
    source = datasets.Features({**ds.features, image_column: datasets.Image(decode=False)})
    release = release_features(source, chosen, image_column, keep_original, keep_columns)

    def chain(table):
        with _quiet():
            # a generator's batches are typed from their values (a column of None paths is null): cast them
            part = datasets.Dataset(table.cast(source.arrow_schema), info=datasets.DatasetInfo(features=source))
            safe, _ = run(part, chosen, image_column, keep_original, None, batch_size, image_root, keep_columns)
        return safe.data.table.select(list(release))

    rows = ds.cast(source).with_format("arrow")
    dropped = [name for name in source if name not in release]
    return rows.map(chain, batched=True, batch_size=batch_size, remove_columns=dropped).with_format(None).cast(release)


def release_features(source, chosen, image_column, keep_original, keep_columns) -> datasets.Features:
    """The release view's columns and types, in the order a Dataset's maps give them (new columns at the end, in
    the order the stages write them)."""
    features = dict(source)
    for stage in chosen.stages:
        features.update(stage.features())
    dropped = _dropped(list(features), image_column, keep_original, keep_columns)
    return datasets.Features({name: feature for name, feature in features.items() if name not in dropped})


@contextlib.contextmanager
def _quiet():
    """No progress bars and no run log for the maps of one streamed batch."""
    bars = datasets.utils.are_progress_bars_disabled()
    level = logger.level
    datasets.utils.disable_progress_bars()
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if not bars:
            datasets.utils.enable_progress_bars()


def check_columns(ds, image_column, keep_columns) -> None:
    """Refuse, before any work, an image column that is missing or not an Image column, and unknown keep_columns."""
    features = ds.features
    if features is None:  # a streamed dataset after a map that did not say what it returns
        raise ValueError("the dataset's features are unknown: pass features= to its map, or cast its columns")
    if image_column not in features:
        raise ValueError(f"image column {image_column!r} not found; columns: {list(features)}")
    if not isinstance(features[image_column], datasets.Image):
        raise ValueError(f"column {image_column!r} is {features[image_column]}, not an Image column")
    missing = sorted(set(keep_columns) - set(features))
    if missing:
        raise ValueError(f"keep_columns: no column {', '.join(missing)}; columns: {', '.join(features)}")


def _dropped(names, image_column, keep_original, keep_columns) -> list[str]:
    """The columns the release view leaves out (see `anonymize`)."""
    dropped = [name for name in PATH_COLUMNS if name in names and name not in keep_columns]
    return dropped if keep_original else [*dropped, image_column]


def image_root_of(ds, image_column, image_root) -> str | None:
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
