"""What every metric shares: images that cannot be read score None (never a crash), means skip None, and every mean
says how many items it is over (`counted`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .. import images, runtime

# What a metric takes as an image: whatever `images.decode` reads (a PIL image, a `datasets` cell {"bytes", "path"},
# encoded bytes, a file path, an RGB array); None, or a value that cannot be decoded, scores None.
ImageInput = Image.Image | dict | bytes | str | os.PathLike | np.ndarray | None
Images = Sequence[ImageInput]
Texts = Sequence[str | None]


def pixels(value: ImageInput) -> np.ndarray | None:
    """RGB uint8 pixels, or None for a missing image or one that cannot be decoded (logged)."""
    if value is None:
        return None
    try:
        return images.decode(value)
    except images.ImageError as error:
        runtime.logger.warning("metric input skipped: %s", error)
        return None


def progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "image"):
    """A progress bar on a terminal; silent when output is not a terminal (tqdm's disable=None)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=None)


def mean(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def counted(name: str, values) -> dict:
    """`{name: mean, name_scored: items scored, name_missing: items not scored (None)}`: a mean over 3 of 1,000
    rows must not pass for a mean over 1,000."""
    values = list(values)
    scored = sum(v is not None for v in values)
    return {name: mean(values), f"{name}_scored": scored, f"{name}_missing": len(values) - scored}
