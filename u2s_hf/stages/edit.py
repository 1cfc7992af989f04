"""Stage 2: write `safe_image`. Only flagged rows are changed; nothing flagged leaves with its original pixels."""

from __future__ import annotations

import dataclasses

import datasets
import xxhash

from .. import images, runtime
from ..config import EditConfig
from ..editors import EDITORS, redact
from .base import ERROR, STATUS, LabelError, Stage, class_name, column, join_errors, require

NOTHING_LOCATED = "flagged, but no region was located"


class Edit(Stage):
    """Map function adding `safe_image`, `u2s_status` and `u2s_error`.

    Fail closed: a row whose flag is missing or unknown counts as flagged; a flagged row the editor cannot handle
    (no prompt, an editor error, an earlier stage's error) is redacted instead, a flagged row with no region to
    redact is obscured whole (or dropped), and if redaction itself fails the whole image is obscured; an image that
    cannot be decoded gets no `safe_image` at all. Unflagged rows keep their decoded pixels, re-encoded without
    metadata.
    """

    config_class = EditConfig
    name = "edit"

    def features(self):
        return datasets.Features(
            {self.config.output_column: datasets.Image(), "u2s_status": STATUS, "u2s_error": ERROR}
        )

    def __repr__(self):
        """The editor, its settings and the stage's settings that differ from their defaults."""
        c = self.config
        shown = {"editor": c.editor} if c.editor_settings else {}
        for config in (c.editor_settings, c):
            for f in dataclasses.fields(config) if config else ():
                value = getattr(config, f.name)
                if f.name not in ("editor", "editor_settings") and value != f.default:
                    shown[f.name] = value
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __call__(self, batch, rank=None):
        runtime.exit_with_parent()
        c, s = self.config, self.config.editor_settings
        values = require(batch, c.image_column, "Edit")
        n = len(values)
        runtime.configure_threads(c.threads)
        flags, found = column(batch, c.flag_column, n), column(batch, c.detections_column, n)
        statuses, errors = column(batch, "u2s_status", n), column(batch, "u2s_error", n)
        texts = self._texts(batch, n) if s else [None] * n
        keys = column(batch, s.key_column, n) if s and s.key_column else [None] * n
        outputs, pending = [None] * n, {}
        for i, value in enumerate(values):
            try:
                rgb = images.decode(value, c.max_pixels)
            except images.ImageError as exc:  # an earlier stage's reason (e.g. the file was not read) comes first
                statuses[i], errors[i] = "error", (statuses[i] == "error" and errors[i]) or str(exc)
                continue
            if flags[i] is False and statuses[i] != "error":
                outputs[i], statuses[i], errors[i] = images.clean(rgb), "kept_safe", None
            elif texts[i] and statuses[i] != "error":
                pending[i] = rgb
            else:
                reason = None if s is None or statuses[i] == "error" else "no prompt to edit with"
                outputs[i], statuses[i], errors[i] = self._redact(rgb, found[i], join_errors(errors[i], reason))
        for i, result in self._diffuse(pending, texts, keys, rank).items():
            if isinstance(result, Exception):
                reason = f"{c.editor} failed ({type(result).__name__}: {result})"[:200]
                outputs[i], statuses[i], errors[i] = self._redact(pending[i], found[i], join_errors(errors[i], reason))
            else:
                outputs[i], statuses[i] = images.clean(result), "edited"
        return self.typed({c.output_column: outputs, "u2s_status": statuses, "u2s_error": errors})

    def row_seed(self, rgb, key=None) -> int:
        """The seed for one row: from `seed` and the row key (an id, else the pixels), never from its position."""
        key = str(key).encode() if key is not None else xxhash.xxh64_digest(rgb.tobytes())
        return xxhash.xxh64_intdigest(f"{self.config.editor_settings.seed}:".encode() + key) % 2**63

    def _texts(self, batch, n) -> list:
        """Per row, the editor's text entry from the columns its settings name (`text_columns()`): the text, or a
        tuple of texts when it reads several; None when one is missing."""
        columns = [self._column(batch, n, name) for name in self.config.editor_settings.text_columns()]
        entries = zip(*columns, strict=True)
        return [(entry[0] if len(entry) == 1 else entry) if all(entry) else None for entry in entries]

    def _column(self, batch, n, name) -> list:
        s = self.config.editor_settings
        if name == "class":
            texts = []
            for value in column(batch, s.class_column, n):
                try:
                    texts.append(f"A realistic image of {class_name(value, s.class_names, s.class_column)}.")
                except LabelError:  # a missing or unknown label: this row has no prompt, so it is redacted instead
                    texts.append(None)
            return texts
        return column(batch, name, n)

    def _diffuse(self, pending: dict, texts, keys, rank) -> dict:
        """{row: edited pixels or the exception}; a failing batch is retried row by row."""
        if not pending:
            return {}
        c, s = self.config, self.config.editor_settings
        device = runtime.device_for(rank)
        load = EDITORS[c.editor][1].from_pretrained
        editor = runtime.cached_model((c.editor, *s.load_key(), device), lambda: load(s, device)).with_settings(s)
        editor.check()  # outside the row-by-row retry: a broken model stops the map instead of redacting every row
        return runtime.in_chunks(
            list(pending),
            s.batch_size,
            lambda rows: editor.edit(
                [pending[i] for i in rows],
                [texts[i] for i in rows],
                [self.row_seed(pending[i], keys[i]) for i in rows],
            ),
        )

    def _redact(self, rgb, detections, error):
        """(image, status, reason) for a flagged row redacted by its detections. Detections that cannot be redacted
        (malformed, empty or outside the image boxes) or a redaction that leaves a region unchanged fail it, and
        the whole image is obscured instead."""
        c = self.config
        try:
            boxes = [d.get("box") if isinstance(d, dict) else d for d in detections or []]
            if boxes:
                return images.clean(redact.redact(rgb, boxes, c.method, c.margin, c.cells)), "redacted", error
            if c.unlocated == "drop":
                return None, "dropped", join_errors(error, f"{NOTHING_LOCATED}: dropped")
            return self._obscured(rgb, join_errors(error, NOTHING_LOCATED))
        except Exception as exc:  # fail closed: the original pixels must not go out
            return self._obscured(rgb, join_errors(error, f"redaction failed ({type(exc).__name__}: {exc})"[:200]))

    def _obscured(self, rgb, error):
        """The whole image obscured; the row is dropped when even that fails or leaves the pixels as they were."""
        try:
            obscured = images.clean(redact.obscure(rgb, self.config.whole_image_cells))
            return obscured, "redacted", f"{error}: whole image obscured"
        except Exception as exc:
            return None, "dropped", f"{error}; obscuring failed too ({type(exc).__name__}: {exc}): dropped"[:300]
