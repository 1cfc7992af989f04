"""Stage 2: write `safe_image`. Only flagged rows are changed; nothing flagged leaves with its original pixels."""

from __future__ import annotations

import dataclasses

import datasets
import xxhash

from .. import images, runtime
from ..config import EditConfig
from ..editors import EDITORS, redact
from .base import (
    DROPPED,
    EDITED,
    KEPT_SAFE,
    OUTCOME_FEATURES,
    REDACTED,
    LabelError,
    Outcome,
    Stage,
    class_name,
    column,
    join_errors,
    obscure_whole,
    require,
)

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
        return datasets.Features({self.config.output_column: datasets.Image(), **OUTCOME_FEATURES})

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

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c, s = self.config, self.config.editor_settings
        values = require(batch, c.image_column, "Edit")
        n = len(values)
        runtime.configure_threads(c.threads)
        flags, found = column(batch, c.flag_column, n), column(batch, c.detections_column, n)
        outcome = Outcome(batch, n)
        prompts = self._prompts(batch, n) if s else [None] * n
        keys = column(batch, s.key_column, n) if s and s.key_column else [None] * n
        outputs, pending = [None] * n, {}
        for i, value in enumerate(values):
            rgb = outcome.decode(i, value, c.max_pixels)  # no pixels: an error row without `safe_image`
            if rgb is None:
                continue
            if flags[i] is False and not outcome.failed(i):
                outputs[i] = images.clean(rgb)
                outcome.done(i, KEPT_SAFE)
            elif prompts[i] and not outcome.failed(i):
                pending[i] = rgb
            else:
                reason = None if s is None or outcome.failed(i) else "no prompt to edit with"
                outputs[i] = self._redact(outcome, i, rgb, found[i], reason)
        for i, result in self._diffuse(pending, prompts, keys, rank).items():
            if isinstance(result, Exception):
                reason = f"{c.editor} failed ({type(result).__name__}: {result})"
                outputs[i] = self._redact(outcome, i, pending[i], found[i], reason)
            else:
                outputs[i] = images.clean(result)
                outcome.done(i, EDITED)
        return self.typed({c.output_column: outputs, **outcome.columns()})

    def row_seed(self, rgb, key=None) -> int:
        """The seed for one row: from `seed` and the row key (an id, else the pixels), never from its position."""
        key = str(key).encode() if key is not None else xxhash.xxh64_digest(rgb.tobytes())
        return xxhash.xxh64_intdigest(f"{self.config.editor_settings.seed}:".encode() + key) % 2**63

    def _prompts(self, batch, n) -> list:
        """Per row, the editor's prompt from the columns its settings name (`prompt_columns()`): the text, or a
        tuple when it reads several; None when one is missing."""
        columns = [self._column(batch, n, name) for name in self.config.editor_settings.prompt_columns()]
        entries = zip(*columns, strict=True)
        return [(entry[0] if len(entry) == 1 else entry) if all(entry) else None for entry in entries]

    def _column(self, batch, n, name) -> list:
        s = self.config.editor_settings
        if name == "class":
            prompts = []
            for value in column(batch, s.class_column, n):
                try:
                    prompts.append(f"A realistic image of {class_name(value, s.class_names, s.class_column)}.")
                except LabelError:  # a missing or unknown label: this row has no prompt, so it is redacted instead
                    prompts.append(None)
            return prompts
        return column(batch, name, n)

    def _diffuse(self, pending: dict, prompts, keys, rank) -> dict:
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
                [prompts[i] for i in rows],
                [self.row_seed(pending[i], keys[i]) for i in rows],
            ),
        )

    def _redact(self, outcome, i, rgb, detections, reason):
        """Flagged row i redacted by its detections: its image (None when dropped), with its status and `reason`
        (after any earlier one) in `outcome`. Detections that cannot be redacted (malformed, empty or outside the
        image boxes) or a redaction that leaves a region unchanged fail it, and the whole image is obscured
        instead."""
        c = self.config
        try:
            boxes = [d.get("box") if isinstance(d, dict) else d for d in detections or []]
            if boxes:
                redacted = images.clean(redact.redact(rgb, boxes, c.method, c.margin, c.cells))
                outcome.done(i, REDACTED, reason)
                return redacted
            if c.unlocated == "drop":
                outcome.done(i, DROPPED, join_errors(reason, f"{NOTHING_LOCATED}: dropped"))
                return None
            return obscure_whole(outcome, i, rgb, c.whole_image_cells, join_errors(reason, NOTHING_LOCATED))
        except Exception as exc:  # fail closed: the original pixels must not go out
            failed = f"redaction failed ({type(exc).__name__}: {exc})"
            return obscure_whole(outcome, i, rgb, c.whole_image_cells, join_errors(reason, failed))
