"""How much an anonymised image changed: SSIM (lower = more changed)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .. import images


def ssim(originals, anonymized) -> dict:
    """scikit-image SSIM on RGB (channel_axis=-1, data_range=255) per pair; an anonymised image of another size is
    resized (bicubic) to the original's size first. A pair with a missing image scores None."""
    from skimage.metrics import structural_similarity

    scores = []
    for original, edited in zip(originals, anonymized, strict=True):
        if original is None or edited is None:
            scores.append(None)
            continue
        a, b = images.decode(original), images.decode(edited)
        if b.shape != a.shape:
            b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BICUBIC))
        if min(a.shape[:2]) < 7:  # smaller than SSIM's 7x7 window: undefined
            scores.append(None)
            continue
        scores.append(float(structural_similarity(a, b, channel_axis=-1, data_range=255)))
    return {"ssim": _mean(scores), "per_image": scores}


def _mean(values):
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
