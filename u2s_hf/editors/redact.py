"""Redaction: make detected regions unrecognisable with plain image operations.

Strength is chosen against identity, not looks: a face pixelated to 8 cells or blurred with a sigma of a sixth of
its size no longer matches its owner under ArcFace, while a light blur (sigma 3) still does (notes/offline-models.md).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

FILL_GREY = 128


def grow(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow a box by `margin` of its size on every side, then round outwards and clip to the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy))),
            min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy))))


def redact(rgb: np.ndarray, boxes, method: str, margin: float, cells: int) -> np.ndarray:
    """A copy of `rgb` with every box (grown by `margin`) obscured by `method`."""
    out = rgb.copy()
    height, width = rgb.shape[:2]
    regions = [grow(b, margin, width, height) for b in boxes]
    regions = [r for r in regions if r[2] > r[0] and r[3] > r[1]]
    if method == "inpaint":
        return _inpaint(out, regions)
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
    return out


def obscure(rgb: np.ndarray, cells: int) -> np.ndarray:
    """The whole image pixelated: for flagged rows with nothing located, where any region may be the risky one."""
    return pixelate(rgb, cells)


def pixelate(patch: np.ndarray, cells: int) -> np.ndarray:
    """Average `patch` into about `cells` cells along its longer side, then blow the cells back up."""
    h, w = patch.shape[:2]
    step = max(h, w) / cells
    small = (max(1, round(w / step)), max(1, round(h / step)))
    image = Image.fromarray(patch).resize(small, Image.BOX).resize((w, h), Image.NEAREST)
    return np.asarray(image)


def _blur(patch: np.ndarray) -> np.ndarray:
    h, w = patch.shape[:2]
    sigma = max(2.0, max(h, w) / 6)
    # Pad with edge pixels so the blur of a region near the border does not pull in black.
    pad = int(3 * sigma)
    padded = np.pad(patch, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    blurred = np.asarray(Image.fromarray(padded).filter(ImageFilter.GaussianBlur(sigma)))
    return blurred[pad:pad + h, pad:pad + w]


def _inpaint(rgb: np.ndarray, regions) -> np.ndarray:
    import cv2

    if not regions:
        return rgb
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for x0, y0, x1, y1 in regions:
        mask[y0:y1, x0:x1] = 255
    radius = max(3, int(max(max(r[2] - r[0], r[3] - r[1]) for r in regions) / 8))
    return cv2.inpaint(rgb, mask, radius, cv2.INPAINT_TELEA)
