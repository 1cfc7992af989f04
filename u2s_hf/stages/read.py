"""The first step of `anonymize`: every image's bytes read into the dataset once, so that every later stage sees
the same pixels (a file replaced during or between runs can never pair one image's flag with another's pixels),
and so that the cache is keyed on the bytes actually read.

Cells that carry their bytes are left as they are. A cell that holds only a file path is read only from
`image_root` (an image folder the user pointed at), and only a regular file of bounded size (`images.read_file`);
anywhere else, as in a Parquet or `save_to_disk` source, it is never read: the row becomes an error row.
"""

from __future__ import annotations

import os

import datasets

from .. import images, runtime
from ..config import ReadConfig
from .base import OUTCOME_FEATURES, Outcome, Stage, require

NOT_READ = "image cell holds only a file path, which this source may not point at: not read"


class ReadImages(Stage):
    """Map function that replaces path-only image cells by their bytes (or marks the row as an error)."""

    config_class = ReadConfig
    name = "read"

    def features(self):
        return datasets.Features({self.config.image_column: datasets.Image(decode=False), **OUTCOME_FEATURES})

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        cells = require(batch, c.image_column, "ReadImages")
        n = len(cells)
        outcome = Outcome(batch, n)
        root = os.path.realpath(c.image_root) if c.image_root else None
        for i, cell in enumerate(cells):
            if not isinstance(cell, dict) or cell.get("bytes") is not None or not cell.get("path"):
                continue  # bytes already here, or nothing to read (decode reports it)
            cells[i] = {"bytes": None, "path": None}
            path = os.path.realpath(cell["path"])
            if root is None or os.path.commonpath([root, path]) != root:
                outcome.fail(i, NOT_READ)
                continue
            try:
                cells[i] = {"bytes": images.read_file(path), "path": None}
            except images.ImageError as exc:
                outcome.fail(i, str(exc))
        return self.typed({c.image_column: cells, **outcome.columns()})


def holds_paths(ds: datasets.Dataset, image_column: str) -> bool:
    """Whether any cell of the column has a path but no bytes (read straight from Arrow, nothing decoded)."""
    import pyarrow.compute as pc

    for chunk in ds.data.column(image_column).chunks:
        path_only = pc.and_(pc.is_null(chunk.field("bytes")), pc.is_valid(chunk.field("path")))
        if pc.any(path_only).as_py():
            return True
    return False
