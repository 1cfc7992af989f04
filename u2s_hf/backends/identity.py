"""Face identity: insightface's FaceAnalysis (a face detector + an ArcFace-style embedding), loaded once per process.

FaceSim (`scoring.faces`) measures with it and Verify checks edited rows with it. The model packs insightface uses
are for non-commercial research only, and insightface is never a dependency of the anonymiser: it is imported
only when a model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import runtime

_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads HF_HUB_OFFLINE


class FaceModelMissing(FileNotFoundError):
    """The insightface model pack is not on disk and the Hub is offline: nothing may be downloaded."""


def load_face_model(model: str, root: str | None):
    """insightface's FaceAnalysis (detection + recognition) for `model`, loaded once per process.

    With HF_HUB_OFFLINE set, a pack that is not on disk (`<root>/models/<model>/`, root defaulting to
    ~/.insightface) raises FaceModelMissing at once, naming the folder, instead of letting insightface try to
    download it first."""
    _check_face_pack(model, root)

    def load():
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:
            raise ImportError(
                "face identity needs insightface (pip install insightface; its model packs are for "
                "non-commercial research only)"
            ) from exc

        kwargs = {"root": root} if root else {}
        app = FaceAnalysis(
            name=model, providers=["CPUExecutionProvider"], allowed_modules=["detection", "recognition"], **kwargs
        )
        app.prepare(ctx_id=-1, det_size=(640, 640))
        return app

    return runtime.cached_model(("face-embedding", model, root, "cpu"), load)


def faces(app, rgb: np.ndarray) -> list:
    """The faces the model finds in RGB pixels (insightface Face objects: `bbox`, `normed_embedding`, ...)."""
    return app.get(np.ascontiguousarray(rgb[..., ::-1]))


def _check_face_pack(model: str, root: str | None) -> None:
    """insightface downloads a missing pack from GitHub; offline, say what is missing before it tries."""
    if Path(model).expanduser().is_dir():  # FaceAnalysis also takes a pack folder as the name
        return
    folder = Path(root or "~/.insightface").expanduser() / "models" / model
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE
    if offline and not folder.is_dir():
        raise FaceModelMissing(
            f"insightface model pack {model!r} is not installed: no folder {folder} (HF_HUB_OFFLINE is set, so it "
            f"is not downloaded). Unzip the pack's .onnx files into {folder}, or point the root setting (face_root "
            f"/ --face-root for metrics, identity_root for Verify) at a folder holding models/{model}/; unset "
            f"HF_HUB_OFFLINE to let insightface download it"
        )
