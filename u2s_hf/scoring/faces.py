"""FaceSim: is the person in the original still recognisable in the anonymised image?"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import runtime
from .common import Images, mean, pixels, progress

IOU_RETAINED = 0.3
_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads HF_HUB_OFFLINE


class FaceModelMissing(FileNotFoundError):
    """The insightface model pack is not on disk and the Hub is offline: nothing may be downloaded."""


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
        before, after = _faces(app, before_rgb), _faces(app, after_rgb)
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


def load_face_model(model: str, root: str | None):
    """insightface's FaceAnalysis (detection + recognition) for `model`, loaded once per process.

    With HF_HUB_OFFLINE set, a pack that is not on disk (`<root>/models/<model>/`, root defaulting to
    ~/.insightface) raises FaceModelMissing at once, naming the folder, instead of letting insightface try to
    download it first."""
    _check_face_pack(model, root)

    def load():
        from insightface.app import FaceAnalysis

        kwargs = {"root": root} if root else {}
        app = FaceAnalysis(
            name=model, providers=["CPUExecutionProvider"], allowed_modules=["detection", "recognition"], **kwargs
        )
        app.prepare(ctx_id=-1, det_size=(640, 640))
        return app

    return runtime.cached_model(("face-embedding", model, root, "cpu"), load)


def _check_face_pack(model: str, root: str | None) -> None:
    """insightface downloads a missing pack from GitHub; offline, say what is missing before it tries."""
    if Path(model).expanduser().is_dir():  # FaceAnalysis also takes a pack folder as the name
        return
    folder = Path(root or "~/.insightface").expanduser() / "models" / model
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE
    if offline and not folder.is_dir():
        raise FaceModelMissing(
            f"insightface model pack {model!r} is not installed: no folder {folder} (HF_HUB_OFFLINE is set, so it "
            f"is not downloaded). Unzip the pack's .onnx files into {folder}, or point face_root (--face-root) at "
            f"a folder holding models/{model}/; unset HF_HUB_OFFLINE to let insightface download it"
        )


def _faces(app, rgb: np.ndarray) -> list:
    """The faces insightface finds in RGB pixels."""
    return app.get(np.ascontiguousarray(rgb[..., ::-1]))


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    overlap = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0
