"""FaceSim: is the person in the original still recognisable in the anonymised image?"""

from __future__ import annotations

import numpy as np

from .. import runtime
from .common import Images, mean, pixels, progress

IOU_RETAINED = 0.3


def face_similarity(originals: Images, anonymized: Images, model: str = "antelopev2", root: str | None = None) -> dict:
    """Per original face, the cosine (insightface embeddings) to its best match among the anonymised image's faces.

    The mean is over original faces whose anonymised image has at least one face (the paper's rule). Because an
    anonymiser that deletes faces would look perfect by that rule, `face_retention` reports the share of original
    faces that still have a detected face overlapping them (IoU >= 0.3) in the anonymised image. `model`/`root`
    follow insightface's `root/models/<model>` layout; any model pack works.
    """
    app = load_face_model(model, root)
    matched, retained, per_image, original_faces = [], 0, [], 0
    for original, edited in progress(zip(originals, anonymized, strict=True), "FaceSim", len(originals)):
        before = _faces(app, original)
        after = _faces(app, edited)
        original_faces += len(before)
        best = (
            [max(float(np.dot(f.normed_embedding, g.normed_embedding)) for g in after) for f in before] if after else []
        )
        retained += sum(any(_iou(f.bbox, g.bbox) >= IOU_RETAINED for g in after) for f in before)
        matched += best
        per_image.append(mean(best))
    return {
        "face_similarity": mean(matched),
        "face_retention": retained / original_faces if original_faces else None,
        "per_image": per_image,
    }


def load_face_model(model: str, root: str | None):
    """insightface's FaceAnalysis (detection + recognition) for `model`, loaded once per process."""

    def load():
        from insightface.app import FaceAnalysis

        kwargs = {"root": root} if root else {}
        app = FaceAnalysis(
            name=model, providers=["CPUExecutionProvider"], allowed_modules=["detection", "recognition"], **kwargs
        )
        app.prepare(ctx_id=-1, det_size=(640, 640))
        return app

    return runtime.cached_model(("face-embedding", model, root, "cpu"), load)


def _faces(app, image) -> list:
    """The faces insightface finds; none in a missing or unreadable image."""
    rgb = pixels(image)
    return [] if rgb is None else app.get(np.ascontiguousarray(rgb[..., ::-1]))


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    overlap = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0
