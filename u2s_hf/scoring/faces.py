"""FaceSim: is the person in the original still recognisable in the anonymised image?"""

from __future__ import annotations

import numpy as np

from ..backends import identity
from ..backends.identity import FaceModelMissing, load_face_model  # noqa: F401 (metrics import them from here)
from .common import Images, mean, pixels, progress

IOU_RETAINED = 0.3


def face_similarity(originals: Images, anonymized: Images, model: str = "antelopev2", root: str | None = None) -> dict:
    """Per original face, the cosine (insightface embeddings) to its best match among the anonymised image's faces.

    FaceSim pools over faces, not images (a group photo weighs as many faces as it has): the mean is over original
    faces whose anonymised image has at least one face (the paper's rule; `faces_scored` of them). Because an
    anonymiser that deletes faces would look perfect by that rule, `face_retention` is the share of the
    `faces_total` original faces that still have a detected face overlapping them (IoU >= 0.3) in the anonymised
    image. A pair whose anonymised image OR original is missing or cannot be decoded is in `face_unreadable` and
    nowhere else: not in FaceSim, not in `faces_total` (an unread output is not a removed face, and an unread
    original's faces cannot be counted). `per_image` is None for those pairs and for pairs without a scored face.
    `model`/`root` follow insightface's `root/models/<model>` layout; any model pack works.
    """
    app = load_face_model(model, root)
    matched, retained, per_image, faces_total, unreadable = [], 0, [], 0, 0
    for original, edited in progress(zip(originals, anonymized, strict=True), "FaceSim", len(originals)):
        before_rgb, after_rgb = pixels(original), pixels(edited)
        if before_rgb is None or after_rgb is None:
            unreadable += 1
            per_image.append(None)
            continue
        before, after = identity.faces(app, before_rgb), identity.faces(app, after_rgb)
        faces_total += len(before)
        best = (
            [max(float(np.dot(f.normed_embedding, g.normed_embedding)) for g in after) for f in before] if after else []
        )
        retained += sum(any(_iou(f.bbox, g.bbox) >= IOU_RETAINED for g in after) for f in before)
        matched += best
        per_image.append(mean(best))
    return {
        "face_similarity": mean(matched),
        "face_retention": retained / faces_total if faces_total else None,
        "faces_scored": len(matched),
        "faces_total": faces_total,
        "face_unreadable": unreadable,
        "per_image": per_image,
    }


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    overlap = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0
