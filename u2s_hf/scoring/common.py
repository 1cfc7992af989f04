"""What every metric shares: images that cannot be read score None (never a crash), and means skip None."""

from __future__ import annotations

import numpy as np

from .. import images, runtime


def pixels(value) -> np.ndarray | None:
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
