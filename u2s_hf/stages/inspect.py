"""Stage 1a: decide which rows carry privacy risks (`privacy_flag`) and where (`detections`)."""
from __future__ import annotations

import datasets

from .. import images, runtime
from ..backends import detectors
from ..config import InspectConfig
from .base import DETECTIONS, ERROR, STATUS, Stage, require


class Inspect(Stage):
    """Map function adding `privacy_flag`, `detections`, `u2s_status` ("error" or None) and `u2s_error`.

    Uncertain means flagged: a row that cannot be decoded or whose detector fails gets privacy_flag=True.
    """

    config_class = InspectConfig
    name = "inspect"

    def features(self):
        c = self.config
        return datasets.Features({c.output_column: datasets.Value("bool"), c.detections_column: DETECTIONS,
                                  "u2s_status": STATUS, "u2s_error": ERROR})

    def __call__(self, batch, rank=None):
        c = self.config
        values = require(batch, c.image_column, "Inspect")
        threads = runtime.configure_threads(c.threads)
        device = runtime.device_for(rank)
        faces = detectors.load_face_detector(device, threads) if c.faces else None
        text = detectors.load_text_detector(device, threads, c.text_max_side) if c.text else None
        flags, found, statuses, errors = [], [], [], []
        for value in values:
            flag, dets, status, error = True, [], None, None
            try:
                rgb = images.decode(value, c.max_pixels or images.MAX_PIXELS)
                if faces is not None:
                    dets += faces(rgb, c.face_threshold, c.face_max_side)
                if text is not None:
                    dets += text(rgb, c.text_threshold)
                flag = bool(dets)
            except images.ImageError as exc:
                status, error = "error", str(exc)
            except Exception as exc:  # a detector failing on one row must not end the run
                status, error = "error", f"detector failed: {type(exc).__name__}: {exc}"[:200]
            flags.append(flag)
            found.append(dets)
            statuses.append(status)
            errors.append(error)
        return self.typed({c.output_column: flags, c.detections_column: found,
                           "u2s_status": statuses, "u2s_error": errors})
