"""The Ray Data engine: the stages of a preset as Ray Data actors, across the machines of a Ray cluster.

`anonymize` gives the rows of `pipeline.anonymize` as a lazy `ray.data.Dataset`; `write_release` writes the same
release folder as `u2s anonymize` (a `save_to_disk` dataset with the same features, report.json, contact sheet,
card). Each stage runs as a pool of actors built from the stage's class and its frozen config: every actor loads
its own models once (through `runtime.cached_model`) and nothing but settings and Arrow batches crosses the
cluster; images travel as Arrow structs {bytes, path}, the way `datasets` stores them, never as PIL objects.

What stays as in the `datasets` path: the source is opened with `datasets` on the driver, path-only image cells
are read there first (`ReadImages`: only from the image folder the user named, as in `pipeline.run`), every row is
kept, fail-closed statuses are the stages' own, the release view drops the original image column and PATH_COLUMNS,
and rows come out in source order. What does not: there is no map cache, so a rerun computes every row again, and
the source goes from the driver into Ray's object store (which spills to disk when full).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import datasets
import PIL.Image
import pyarrow as pa
import ray
from datasets.arrow_writer import ArrowWriter

from . import pipeline, release_card, report, shards, sources
from .stages.read import ReadImages, holds_paths

# Backends that run a model in the stage's own process (transformers); "detectors" and "server" need no GPU here.
LOCAL_BACKENDS = ("vlm", "llm")
# Where `write_release` streams the rows before saving them: inside the release's temporary folder, so that a
# killed run leaves nothing that the next run into the same folder does not remove; deleted before commit.
SCRATCH = ".u2s-ray-rows"


def anonymize(
    source,
    preset: str | pipeline.Preset = pipeline.DEFAULT_PRESET,
    *,
    split: str | None = None,
    image_column: str | None = None,
    image_root: str | bool | None = None,
    keep_original: bool = False,
    keep_columns=(),
    batch_size: int = pipeline.MAP_BATCH_SIZE,
    concurrency: int | None = None,
    num_gpus: float = 0,
    address: str | None = None,
    **overrides,
) -> ray.data.Dataset:
    """The release view of `source` as a Ray Dataset: `pipeline.anonymize`'s rows, computed by Ray's actors when
    it is consumed (`take_all`, `iter_batches`, `write_parquet`, ...). The source is put in Ray's object store now.

    `source`: a `datasets.Dataset` or DatasetDict, or what `u2s anonymize` opens (a Parquet file, a `save_to_disk`
    folder, an image folder, a Hub id); `split` picks one split when there are several. `image_column`: default the
    first Image column. `preset`, `overrides`, `image_root`, `keep_original`, `keep_columns` and `batch_size` as in
    `pipeline.anonymize` (`image_root=None` means the image folder `source` names, if any).

    `concurrency`: actors per stage (default: Ray sizes each stage's pool, from one actor up). `num_gpus`: GPUs per
    actor of a stage that runs a model in its own process (a local VLM or LLM, a diffusion editor); fractions share
    a GPU; the detectors, redaction and the server backend run on CPUs. `address`: the Ray cluster to connect to
    when this process is not connected yet (default: RAY_ADDRESS, else a local one).
    """
    ds, folder = _open(source, split)
    image_column = sources.image_column_of(ds, image_column)
    chosen = pipeline.preset(preset, image_column=image_column, **overrides)
    root = folder if image_root is None else image_root
    options = dict(batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus, address=address)
    return _run(ds, chosen, image_column, root, keep_original, keep_columns, **options)[0]


def write_release(
    data,
    out_dir,
    preset: pipeline.Preset,
    *,
    source: sources.Source | None = None,
    image_column: str = "image",
    batch_size: int = pipeline.MAP_BATCH_SIZE,
    keep_columns=(),
    concurrency: int | None = None,
    num_gpus: float = 0,
    address: str | None = None,
) -> dict:
    """`u2s anonymize --engine ray`: run `preset` over `data` on Ray and write the release into `out_dir`.

    `data` is the opened source (a Dataset or DatasetDict, already cut to --limit), `out_dir` the temporary folder
    of a `release_folder.ReleaseFolder`, `preset` the built Preset, `source` what `sources.load` opened (its name,
    skipped files and image folder). The release is what the `datasets` path writes: `load_from_disk(out_dir)` has
    the same splits, columns and features, plus report.json (timings: one figure per split, "ray", since the stages
    overlap), contact sheet and card. Returns the report.
    """
    scratch = Path(out_dir) / SCRATCH
    image_root = (source.image_root or False) if source else None
    options = dict(batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus, address=address)
    several = isinstance(data, datasets.DatasetDict)
    splits = data if several else {"all": data}
    released, timings = {}, {}
    for split, part in splits.items():
        start = time.perf_counter()
        rows, features = _run(part, preset, image_column, image_root, False, keep_columns, **options)
        # The release is put together as the datasets engine's is, from the one file of rows (linked, not copied)
        collected = _collect(rows, features, scratch / split)
        released[split] = shards.assemble([collected], Path(out_dir) / split if several else Path(out_dir))
        timings[split] = {"ray": round(time.perf_counter() - start, 3)}
    if several:
        shards.write_splits(Path(out_dir), released)
        safe = datasets.DatasetDict(released)
    else:
        safe, timings = released["all"], timings["all"]
    name, skipped = (source.name, len(source.skipped)) if source else (None, 0)
    summary = report.build(safe, preset, timings, source=name, skipped_files=skipped)
    summary["versions"]["ray"] = ray.__version__
    release_card.write_beside(safe, out_dir, summary)
    shutil.rmtree(scratch)
    return summary


def map_stage(
    rows: ray.data.Dataset,
    stage,
    *,
    batch_size: int = pipeline.MAP_BATCH_SIZE,
    concurrency: int | None = None,
    num_gpus: float = 0,
) -> ray.data.Dataset:
    """`rows` with `stage`'s columns added or replaced, as `rows.map_batches` over a pool of actors: what
    `ds.map(stage, batched=True)` is in `datasets`. Image cells must be Arrow structs {bytes, path}.

    Each actor rebuilds the stage from its class and config (`stage` itself is not sent). Ray Data restarts an actor
    that dies and gives its batches to the new one (its defaults: max_restarts=-1, max_task_retries=-1, which
    Ray 2.60 no longer lets a caller set by name), so a lost worker costs time, not rows.
    """
    if concurrency:
        pool = ray.data.ActorPoolStrategy(size=concurrency)
    else:
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=None)
    return rows.map_batches(
        _StageBatches,
        fn_constructor_kwargs={"stage_class": type(stage), "config": stage.config},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_gpus=num_gpus if num_gpus and _on_gpu(stage) else None,
    )


def _open(source, split) -> tuple[datasets.Dataset, Path | bool | None]:
    """The Dataset to anonymise and the folder path-only cells may be read from (False: none; None: decided by
    `pipeline`'s rule for a Dataset, the folder `imagefolder` read)."""
    folder = None
    if isinstance(source, (str, os.PathLike)):
        opened = sources.load(str(source), split)
        source, folder = opened.data, opened.image_root or False
    if isinstance(source, datasets.DatasetDict):
        if split is None and len(source) != 1:
            raise ValueError(f"the source has splits {', '.join(source)}: pass split=...")
        source = source[split] if split else next(iter(source.values()))
    if not isinstance(source, datasets.Dataset):
        raise TypeError(
            f"anonymize needs a datasets.Dataset, DatasetDict or a source path, not {type(source).__name__}"
        )
    return source, folder


def _run(
    ds, chosen, image_column, image_root, keep_original, keep_columns, *, batch_size, concurrency, num_gpus, address
):
    """(the release view as a lazy Ray Dataset, its `datasets` features): `pipeline.run`'s steps, with the stages
    on Ray."""
    pipeline.check_columns(ds, image_column, keep_columns)
    # Decode inside the stages, not in datasets: a corrupt image must become an error row, not a crashed map.
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    features = dict(ds.features)
    reader = None
    if holds_paths(ds, image_column):
        reader = ReadImages(image_column=image_column, image_root=pipeline.image_root_of(ds, image_column, image_root))
        features.update(reader.features())
    release = pipeline.release_features(features, chosen, image_column, keep_original, keep_columns)
    if not ray.is_initialized():
        ray.init(address=address)
    rows = _to_ray(ds, batch_size, reader)
    for stage in chosen.stages:
        rows = map_stage(rows, stage, batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus)
    return rows.select_columns(list(release)), release


def _to_ray(ds: datasets.Dataset, batch_size: int, reader: ReadImages | None) -> ray.data.Dataset:
    """`ds` in Ray's object store, one block per batch (blocks are what Ray spreads over actors and retries), each
    put as soon as it is made. `reader` reads path-only cells into their blocks here, where the image folder is
    (the workers may not see it): every image is read once, before any stage, as in `pipeline.run`."""
    table = ds.with_format("arrow")[:]
    read = _StageBatches(ReadImages, reader.config) if reader else None
    blocks = []
    for start in range(0, max(len(table), 1), batch_size):  # an empty source is one empty block
        block = table.slice(start, batch_size)
        blocks.append(ray.put(read(block) if read else block))
    rows = ray.data.from_arrow_refs(blocks)
    # The release keeps the source's row order, as the datasets path does; a slow batch holds back later ones.
    rows.context.execution_options.preserve_order = True
    return rows


def _collect(rows: ray.data.Dataset, features: datasets.Features, folder: Path) -> Path:
    """`folder` holding the Ray rows as one Arrow file with the release's features, as a finished shard holds them
    (see `shards.assemble`). Batches stream through this process, so the workers need no filesystem shared with
    it, and nothing is read behind a path-only cell (save_to_disk would embed those files)."""
    folder.mkdir(parents=True)
    with ArrowWriter(features=features, path=str(folder / shards.DATA)) as writer:
        for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.write_table(batch)
        writer.finalize()
    datasets.DatasetInfo(features=features).write_to_directory(str(folder))
    return folder


class _StageBatches:
    """A stage over Arrow batches (one per Ray actor; ReadImages's on the driver): it gives the stage the dict of
    lists that `datasets` gives a batched map (image cells as {bytes, path}) and returns the batch with the stage's
    columns, each typed by the stage's features, in place or appended as `Dataset.map` places them."""

    def __init__(self, stage_class, config):
        self.stage = stage_class.__new__(stage_class)  # a stage is its config (the stage contract)
        self.stage.config = _own_threads(config)
        self.features = self.stage.features()

    def __call__(self, rows: pa.Table) -> pa.Table:
        written = self.stage(rows.to_pydict())
        for name, feature in self.features.items():
            column = _arrow(written[name], feature, self.features.arrow_schema.field(name).type)
            if name in rows.column_names:
                rows = rows.set_column(rows.column_names.index(name), name, column)
            else:
                rows = rows.append_column(name, column)
        return rows


def _own_threads(config):
    """`config` with the actor's CPUs as its thread count when the stage was left to choose: outside a `datasets`
    worker a stage takes every core of the machine, and a node runs an actor per CPU Ray gives out."""
    if getattr(config, "threads", 0) is not None:
        return config
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return dataclasses.replace(config, threads=max(1, int(cpus)))


def _arrow(values: list, feature, arrow_type: pa.DataType) -> pa.Array:
    """A stage's output column as Arrow. Output images are PIL images, encoded as `datasets` stores them (PNG,
    `Image().encode_example`), so the bytes match the `datasets` path; stored cells that passed through stay."""
    if isinstance(feature, datasets.Image):
        values = [feature.encode_example(v) if isinstance(v, PIL.Image.Image) else v for v in values]
    return pa.array(values, type=arrow_type)


def _on_gpu(stage) -> bool:
    """Whether the stage runs a torch model in its own process: a local VLM or LLM, a diffusion editor, CLIP."""
    config = stage.config
    if stage.name == "edit":
        return config.editor_settings is not None  # redaction alone runs on CPUs
    return stage.name == "score_edit" or getattr(config, "backend", None) in LOCAL_BACKENDS
