"""Redaction: make detected regions unrecognisable with plain image operations.

Strength is chosen against identity, not looks: a face pixelated to 8 cells or blurred with a sigma of a sixth of
its size no longer matches its owner under ArcFace, while a light blur (sigma 3) still does (measured on the test
photos; see settings.MAX_CELLS).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from PIL import Image, ImageFilter

FILL_GREY = 128
MIN_CELL = 2  # pixels: a pixelation cell narrower than this would leave a small region as it was


class RedactionError(ValueError):
    """A region that cannot be redacted (malformed, empty, outside the image), or pixels redaction left unchanged."""


def grow(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow a box by `margin` of its size on every side, then round outwards and clip to the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (
        max(0, int(np.floor(x0 - dx))),
        max(0, int(np.floor(y0 - dy))),
        min(width, int(np.ceil(x1 + dx))),
        min(height, int(np.ceil(y1 + dy))),
    )


def region(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels to obscure for `box` (x0, y0, x1, y1), grown by `margin`; RedactionError for a box that is not four
    finite numbers, is empty (x1 <= x0 or y1 <= y0) or lies outside the image: it locates nothing reliably."""
    if (
        not isinstance(box, (list, tuple, np.ndarray))
        or len(box) != 4
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        raise RedactionError(f"box {box!r} is not four finite numbers")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise RedactionError(f"box {list(box)} is empty")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise RedactionError(f"box {list(box)} lies outside the {width}x{height} image")
    return grow((x0, y0, x1, y1), margin, width, height)


def redact(rgb: np.ndarray, boxes, method: str, margin: float, cells: int) -> np.ndarray:
    """A copy of `rgb` with every box (grown by `margin`) obscured by `method`.

    Raises RedactionError when there is no box, a box is unusable (see `region`), or a region that was not of one
    colour comes out unchanged: the caller must then obscure more, never pass the pixels on as redacted.
    """
    height, width = rgb.shape[:2]
    regions = [region(b, margin, width, height) for b in boxes]
    if not regions:
        raise RedactionError("no region to redact")
    if method == "inpaint":
        out = _inpaint(rgb.copy(), regions)
    else:
        out = rgb.copy()
        for x0, y0, x1, y1 in regions:
            patch = out[y0:y1, x0:x1]
            if method == "pixelate":
                out[y0:y1, x0:x1] = pixelate(patch, cells)
            elif method == "blur":
                out[y0:y1, x0:x1] = _blur(patch)
            elif method == "fill":
                out[y0:y1, x0:x1] = FILL_GREY
            else:
                raise ValueError(f"unknown redaction method {method!r}")
    for x0, y0, x1, y1 in regions:
        _check_changed(rgb[y0:y1, x0:x1], out[y0:y1, x0:x1], f"region {[x0, y0, x1, y1]}")
    return out


def obscure(rgb: np.ndarray, cells: int) -> np.ndarray:
    """The whole image pixelated: for flagged rows with nothing located, where any region may be the risky one.
    RedactionError if that leaves an image that is not of one colour unchanged."""
    out = pixelate(rgb, cells)
    _check_changed(rgb, out, "the whole image")
    return out


def pixelate(patch: np.ndarray, cells: int) -> np.ndarray:
    """Average `patch` into about `cells` cells along its longer side, then blow the cells back up. Cells are at
    least MIN_CELL pixels wide where the patch allows, so that a small patch changes too."""
    h, w = patch.shape[:2]
    cells = max(1, min(cells, max(h, w) // MIN_CELL))
    step = max(h, w) / cells
    small = (max(1, round(w / step)), max(1, round(h / step)))
    image = Image.fromarray(patch).resize(small, Image.BOX).resize((w, h), Image.NEAREST)
    return np.asarray(image)


def _check_changed(before: np.ndarray, after: np.ndarray, what: str) -> None:
    """RedactionError when `after` equals `before` and `before` is not of one colour (which hides nothing)."""
    if np.array_equal(before, after) and (before != before.reshape(-1, before.shape[-1])[0]).any():
        raise RedactionError(f"{what} came out unchanged")


def _blur(patch: np.ndarray) -> np.ndarray:
    h, w = patch.shape[:2]
    sigma = max(2.0, max(h, w) / 6)
    # Pad with edge pixels so the blur of a region near the border does not pull in black.
    pad = int(3 * sigma)
    padded = np.pad(patch, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    blurred = np.asarray(Image.fromarray(padded).filter(ImageFilter.GaussianBlur(sigma)))
    return blurred[pad : pad + h, pad : pad + w]


def _inpaint(rgb: np.ndarray, regions) -> np.ndarray:
    import cv2

    mask = np.zeros(rgb.shape[:2], np.uint8)
    for x0, y0, x1, y1 in regions:
        mask[y0:y1, x0:x1] = 255
    radius = max(3, int(max(max(r[2] - r[0], r[3] - r[1]) for r in regions) / 8))
    return cv2.inpaint(rgb, mask, radius, cv2.INPAINT_TELEA)
