"""Open what a user points the CLI at: a folder of images, a save_to_disk folder, Parquet, or a Hub dataset id."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name; a bare name could be a mistyped folder
# Files an image folder may hold that `imagefolder` reads as metadata, not as rows.
METADATA_FILES = {"metadata.csv", "metadata.jsonl", "metadata.parquet"}
DATASETS = (datasets.Dataset, datasets.IterableDataset)


@dataclass(frozen=True)
class Source:
    """An opened source. `image_root` is the image folder whose files path-only image cells may be read from (None
    for Parquet, save_to_disk and Hub sources, whose cells must carry their bytes); `skipped` are the files of an
    image folder that became no row (relative names)."""

    data: datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict
    name: str
    path: Path | None
    image_root: Path | None
    skipped: tuple[str, ...] = ()


class SourceError(ValueError):
    """A source that cannot be opened; the message says why and what to do."""


def load(src: str, split: str | None = None, name: str | None = None, streaming: bool = False) -> Source:
    """`src` opened for anonymising, with what the release needs to know about it (see `Source`). `streaming`: a
    Parquet file or a Hub dataset read as it is iterated (IterableDataset), nothing downloaded or loaded first."""
    path = Path(src)
    everything = _stream(src, path) if streaming else _open(src, path)
    local = path.exists()
    first = everything if isinstance(everything, DATASETS) else next(iter(everything.values()), None)
    folder = (
        local and path.is_dir() and not _saved(path) and first is not None and first.info.builder_name == "imagefolder"
    )
    skipped = skipped_files(path, everything) if folder else ()
    return Source(
        data=_pick_split(everything, split, src),
        name=name or (path.resolve().name if local else src),
        path=path.resolve() if local else None,
        image_root=path.resolve() if folder else None,
        skipped=skipped,
    )


def skipped_files(folder: Path, loaded) -> tuple[str, ...]:
    """Files of an image folder that `imagefolder` made no row of (unknown formats, hidden files, odd names)."""
    parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    used = set()
    for part in parts:
        for name, feature in part.features.items():
            if isinstance(feature, datasets.Image):
                cells = part.data.column(name).combine_chunks()
                used.update(os.path.realpath(p) for p in cells.field("path").to_pylist() if p)
    root = folder.resolve()
    return tuple(
        sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and p.name not in METADATA_FILES and os.path.realpath(p) not in used
        )
    )


def open_source(src: str, split: str | None = None):
    """A Dataset (one split) or a DatasetDict (every split) for `src`."""
    return _pick_split(_open(src, Path(src)), split, src)


def _open(src: str, path: Path):
    try:
        if path.is_dir() and _saved(path):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet":
            loaded = datasets.load_dataset("parquet", data_files=str(path))
        elif path.is_dir():
            if not any(p.is_file() for p in path.rglob("*")):
                raise SourceError(f"{src} is an empty folder")
            loaded = datasets.load_dataset(str(path))  # imagefolder, parquet, ... inferred from the files
        elif path.exists():
            raise SourceError(f"{src} is neither a folder nor a .parquet file")
        elif HUB_ID.match(src):
            loaded = datasets.load_dataset(src)
        else:
            raise SourceError(f"{src} does not exist (expected a folder, a .parquet file or a Hub id like org/name)")
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot open {src}: {type(exc).__name__}: {exc}") from None
    return loaded


def _stream(src: str, path: Path):
    if path.is_file() and path.suffix == ".parquet":
        files = str(path)
    elif not path.exists() and HUB_ID.match(src):
        files = None
    else:
        raise SourceError(
            f"--streaming reads a .parquet file or a Hub dataset id, not {src}: a folder or save_to_disk source is "
            "read shard by shard without it"
        )
    try:
        if files:
            return datasets.load_dataset("parquet", data_files=files, streaming=True)
        return datasets.load_dataset(src, streaming=True)
    except Exception as exc:
        raise SourceError(f"cannot stream {src}: {type(exc).__name__}: {exc}") from None


def _saved(path: Path) -> bool:
    """A `save_to_disk` folder."""
    return (path / "state.json").exists() or (path / "dataset_dict.json").exists()


def image_column_of(ds, wanted: str | None) -> str:
    """The image column: the one asked for, else the first Image column. A column asked for must be an Image
    column: any other (say, text) would be read as file paths."""
    features = ds.features if isinstance(ds, DATASETS) else next(iter(ds.values())).features
    if wanted:
        if wanted not in features:
            raise SourceError(f"no column {wanted!r}; columns: {', '.join(features)}")
        if not isinstance(features[wanted], datasets.Image):
            images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
            raise SourceError(
                f"column {wanted!r} is not an Image column ({features[wanted]}); Image columns: "
                f"{', '.join(images) or 'none'}"
            )
        return wanted
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise SourceError(f"no image column found among {', '.join(features)}; pass --image-column")


def _pick_split(loaded, split, src):
    if isinstance(loaded, DATASETS):
        return loaded
    if split is None:
        return loaded
    if split not in loaded:
        raise SourceError(f"{src} has no split {split!r}; splits: {', '.join(loaded)}")
    return loaded[split]
