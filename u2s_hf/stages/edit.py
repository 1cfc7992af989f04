"""Stage 2: write `safe_image`. Only flagged rows are changed; nothing flagged leaves with its original pixels."""
from __future__ import annotations

import datasets

from .. import images, runtime
from ..config import EditConfig
from ..editors import redact
from .base import ERROR, STATUS, Stage, column, join_errors, require

NOTHING_LOCATED = "flagged, but no region was located: whole image obscured"


class Edit(Stage):
    """Map function adding `safe_image`, `u2s_status` and `u2s_error`.

    Fail closed: a row whose flag is missing or unknown counts as flagged; a flagged row with no region to redact
    is obscured whole (or dropped); if redaction itself fails the whole image is obscured; an image that cannot be
    decoded gets no `safe_image` at all. Unflagged rows keep their decoded pixels, re-encoded without metadata.
    """

    config_class = EditConfig
    name = "edit"

    def features(self):
        return datasets.Features({self.config.output_column: datasets.Image(), "u2s_status": STATUS,
                                  "u2s_error": ERROR})

    def __call__(self, batch, rank=None):
        c = self.config
        values = require(batch, c.image_column, "Edit")
        n = len(values)
        runtime.configure_threads(c.threads)
        rows = zip(values, column(batch, c.flag_column, n), column(batch, c.detections_column, n),
                   column(batch, "u2s_status", n), column(batch, "u2s_error", n))
        outputs, statuses, errors = [], [], []
        for value, flag, detections, status, error in rows:
            output, status, error = self._edit_row(value, flag, detections or [], status, error)
            outputs.append(output)
            statuses.append(status)
            errors.append(error)
        return self.typed({c.output_column: outputs, "u2s_status": statuses, "u2s_error": errors})

    def _edit_row(self, value, flag, detections, status, error):
        c = self.config
        try:
            rgb = images.decode(value, c.max_pixels or images.MAX_PIXELS)
        except images.ImageError as exc:
            return None, "error", str(exc)
        if flag is False and status != "error":
            return images.clean(rgb), "kept_safe", None
        boxes = [d["box"] for d in detections]
        try:
            if boxes:
                return images.clean(redact.redact(rgb, boxes, c.method, c.margin, c.cells)), "redacted", error
            if c.unlocated == "drop":
                return None, "dropped", join_errors(error, "flagged, but no region was located: dropped")
            return self._obscured(rgb), "redacted", join_errors(error, NOTHING_LOCATED)
        except Exception as exc:  # fail closed: the original pixels must not go out
            reason = f"redaction failed ({type(exc).__name__}: {exc})"[:200]
            try:
                return self._obscured(rgb), "redacted", join_errors(error, reason)
            except Exception:
                return None, "dropped", join_errors(error, reason)

    def _obscured(self, rgb):
        return images.clean(redact.obscure(rgb, self.config.whole_image_cells))
