"""Open what a user points the CLI at: a folder of images, a save_to_disk folder, Parquet, or a Hub dataset id."""
from __future__ import annotations

import re
from pathlib import Path

import datasets

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name; a bare name could be a mistyped folder

class SourceError(ValueError):
    """A source that cannot be opened; the message says why and what to do."""


def open_source(src: str, split: str | None = None):
    """A Dataset (one split) or a DatasetDict (every split) for `src`."""
    path = Path(src)
    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
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
    return _pick_split(loaded, split, src)


def image_column_of(ds, wanted: str | None) -> str:
    """The image column: the one asked for, else the first Image column."""
    features = ds.features if isinstance(ds, datasets.Dataset) else next(iter(ds.values())).features
    if wanted:
        if wanted not in features:
            raise SourceError(f"no column {wanted!r}; columns: {', '.join(features)}")
        return wanted
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise SourceError(f"no image column found among {', '.join(features)}; pass --image-column")


def _pick_split(loaded, split, src):
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split is None:
        return loaded
    if split not in loaded:
        raise SourceError(f"{src} has no split {split!r}; splits: {', '.join(loaded)}")
    return loaded[split]
