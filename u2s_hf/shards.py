"""`u2s anonymize` in shards: rows are worked on a shard at a time, each shard's release rows are kept once complete,
and a rerun after a crash or a `kill -9` starts from the first unfinished shard.

The source is cut, in order, into shards of `shard_size` rows (a Dataset by row ranges, a stream as it is read). A
shard's rows are first copied into the work folder, so that the maps of `pipeline.run` (the same code as for any
Dataset) write their cache files there and never beside the source; the shard's release rows are then saved and
renamed into place: a shard folder that exists is complete. A shard is named by its number and by a digest of its
source rows, and the work folder by the run's settings, so only the same rows under the same settings are ever
reused. The release is made from the shards' Arrow files (hard links: nothing is read or written again), and the
work folder is removed once the release is in place. Memory holds one shard at a time, whatever the number of rows.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import xxhash

from . import pipeline, runtime
from .release_folder import ReleaseError

SHARD_SIZE = 200  # rows; memory holds one shard's memory-mapped files (about 0.5 MB a row for 512-px photos)
OWNER = ".u2s-shards"  # the marker file of a work folder u2s made (nothing else is ever removed)
DATA = "rows.arrow"  # a finished shard's release rows
# What `save_to_disk` writes beside its Arrow files and `load_from_disk` reads: the release is assembled in that form.
STATE = "state.json"
INFO = "dataset_info.json"


@dataclasses.dataclass
class Progress:
    """How many shards a run kept from an earlier run and how many it worked on."""

    kept: int = 0
    worked: int = 0

    def line(self) -> str:
        total = self.kept + self.worked
        return f"{self.kept} of {total} shards kept from an earlier run, {self.worked} worked on"


class WorkFolder:
    """The shards of one run: `.NAME.u2s-shards/<settings>/<split>/<k>-<digest>/` beside the release `out`."""

    def __init__(self, out: Path, settings: str):
        self.root = out.parent / f".{out.name}.u2s-shards"
        if self.root.is_symlink() or (self.root.exists() and not (self.root / OWNER).is_file()):
            raise ReleaseError(f"{self.root} exists and was not made by u2s: move it away or choose another --out")
        self.root.mkdir(exist_ok=True)
        (self.root / OWNER).touch()
        for other in self.root.iterdir():  # shards of other settings can never be reused
            if other.is_dir() and other.name != settings:
                shutil.rmtree(other)
        self.path = self.root / settings

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run(rows, chosen, work: WorkFolder, split: str, shard_size: int, progress: Progress, **options):
    """`pipeline.run(rows, chosen, **options)` shard by shard, resumable (see the module docstring): the finished
    shard folders of the split, in order (see `assemble`), and the seconds per stage summed over the shards (those
    kept from an earlier run count the seconds they took then)."""
    folder = work.path / split
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    done = []
    for k, table in enumerate(_tables(rows, shard_size)):
        shard = folder / f"{k:06d}-{_digest(table)}"
        if shard.is_dir():
            progress.kept += 1
        else:
            _work_on(table, rows.features, shard, chosen, options)
            progress.worked += 1
        for name, seconds in json.loads((shard / "timings.json").read_text()).items():
            timings[name] = round(timings.get(name, 0) + seconds, 3)
        done.append(shard)
    for leftover in set(folder.iterdir()) - set(done):  # a source that got shorter, a shard of other rows
        shutil.rmtree(leftover, ignore_errors=True)
    return done, timings


def _work_on(table: pa.Table, features, shard: Path, chosen, options) -> None:
    """One shard through `pipeline.run`, its release rows saved and renamed to `shard` (which marks it done)."""
    scratch = shard.with_name(f"{shard.name}.work")
    source = scratch / "source.arrow"
    if not source.is_file():  # kept from a killed run: its finished maps are reused from their cache files
        scratch.mkdir(exist_ok=True)
        # which paths may be read is ReadImages' decision alone: the copy must not read any (see _write_tables)
        _write_tables(scratch / "source.tmp", features.arrow_schema, [table.cast(features.arrow_schema)])
        os.replace(scratch / "source.tmp", source)
    rows = datasets.Dataset.from_file(str(source), info=datasets.DatasetInfo(features=features))
    safe, timings = pipeline.run(rows, chosen, **options)
    saved = shard.with_name(f"{shard.name}.tmp")
    shutil.rmtree(saved, ignore_errors=True)
    saved.mkdir()
    released = safe.with_format("arrow").iter(batch_size=pipeline.WRITER_BATCH_SIZE)
    _write_tables(saved / DATA, safe.features.arrow_schema, released)
    safe.info.write_to_directory(str(saved))
    (saved / "timings.json").write_text(json.dumps(timings))
    del safe, rows
    gc.collect()  # drop the maps' memory-mapped files before the next shard
    os.replace(saved, shard)
    shutil.rmtree(scratch)


def _write_tables(path: Path, schema: pa.Schema, tables) -> None:
    """`tables` as one Arrow file, one at a time. Not save_to_disk: that holds batches of up to 100 MB in memory
    and reads the files behind path-only image cells into what it writes."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for table in tables:
            writer.write_table(table)


def assemble(shards: list[Path], dest: Path) -> datasets.Dataset:
    """One `save_to_disk` dataset in `dest` made of the shards' Arrow files (hard-linked, or copied where links
    cannot be made), readable by `load_from_disk` as if it had been saved whole."""
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for k, shard in enumerate(shards):
        name = f"data-{k:05d}-of-{len(shards):05d}.arrow"
        try:
            os.link(shard / DATA, dest / name)
        except OSError:
            shutil.copyfile(shard / DATA, dest / name)
        files.append({"filename": name})
    state = {
        "_data_files": files,
        "_fingerprint": xxhash.xxh3_64("".join(shard.name for shard in shards).encode()).hexdigest(),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (dest / STATE).write_text(json.dumps(state, indent=2))
    shutil.copyfile(shards[0] / INFO, dest / INFO)
    return datasets.load_from_disk(str(dest))


def write_splits(dest: Path, splits) -> None:
    """The file that makes `dest`, holding one assembled folder per split, a DatasetDict for `load_from_disk`."""
    (dest / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))


def settings_key(chosen, source_fingerprint: str | None, shard_size: int, options: dict) -> str:
    """The name of a run's shards: everything that decides a shard's release rows, and the code's version."""
    stages = [(stage.name, dataclasses.asdict(stage.config)) for stage in chosen.stages]
    return runtime.fingerprint(stages, source_fingerprint, shard_size, sorted(options.items()))


def _tables(rows, shard_size: int) -> Iterator[pa.Table]:
    """The rows as Arrow tables of `shard_size` rows, in order; at least one (maybe empty) table."""
    if isinstance(rows, datasets.IterableDataset):
        yielded = False
        for table in rows.with_format("arrow").iter(batch_size=shard_size):
            yielded = True
            yield table
        if not yielded:
            yield rows.features.arrow_schema.empty_table()
        return
    table = rows.with_format("arrow")
    for start in range(0, max(len(rows), 1), shard_size):
        yield table[start : start + shard_size]


def _digest(table: pa.Table) -> str:
    """A digest of the rows' stored values (Arrow IPC of exactly these rows: a slice hashes only itself)."""
    digest = xxhash.xxh3_128()
    sink = pa.PythonFile(_Hashing(digest), mode="w")
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return digest.hexdigest()[:16]


class _Hashing:
    """A write-only file that hashes what is written to it."""

    def __init__(self, digest):
        self.digest = digest
        self.closed = False

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
