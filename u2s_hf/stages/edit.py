"""Stage 2: write `safe_image`. Only flagged rows are changed; nothing flagged leaves with its original pixels."""

from __future__ import annotations

import datasets
import xxhash

from .. import images, runtime
from ..config import EditConfig
from ..editors import redact
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

    def __call__(self, batch, rank=None):
        runtime.exit_with_parent()
        c = self.config
        values = require(batch, c.image_column, "Edit")
        n = len(values)
        runtime.configure_threads(c.threads)
        flags, found = column(batch, c.flag_column, n), column(batch, c.detections_column, n)
        statuses, errors = column(batch, "u2s_status", n), column(batch, "u2s_error", n)
        prompts = self._texts(batch, n) if c.editor != "redact" else [None] * n
        keys = column(batch, c.key_column, n) if c.key_column else [None] * n
        outputs, pending = [None] * n, {}
        for i, value in enumerate(values):
            try:
                rgb = images.decode(value, c.max_pixels)
            except images.ImageError as exc:  # an earlier stage's reason (e.g. the file was not read) comes first
                statuses[i], errors[i] = "error", (statuses[i] == "error" and errors[i]) or str(exc)
                continue
            if flags[i] is False and statuses[i] != "error":
                outputs[i], statuses[i], errors[i] = images.clean(rgb), "kept_safe", None
            elif prompts[i] and statuses[i] != "error":
                pending[i] = rgb
            else:
                reason = None if c.editor == "redact" or statuses[i] == "error" else "no prompt to edit with"
                outputs[i], statuses[i], errors[i] = self._redact(rgb, found[i], join_errors(errors[i], reason))
        for i, result in self._diffuse(pending, prompts, keys, rank).items():
            if isinstance(result, Exception):
                reason = f"{c.editor} failed ({type(result).__name__}: {result})"[:200]
                outputs[i], statuses[i], errors[i] = self._redact(pending[i], found[i], join_errors(errors[i], reason))
            else:
                outputs[i], statuses[i] = images.clean(result), "edited"
        return self.typed({c.output_column: outputs, "u2s_status": statuses, "u2s_error": errors})

    def row_seed(self, rgb, key=None) -> int:
        """The seed for one row: from `seed` and the row key (an id, else the pixels), never from its position."""
        key = str(key).encode() if key is not None else xxhash.xxh64_digest(rgb.tobytes())
        return xxhash.xxh64_intdigest(f"{self.config.seed}:".encode() + key) % 2**63

    def _texts(self, batch, n) -> list:
        """Per row, the editor's text: a prompt (InstructPix2Pix; with Safe Cross Attention also c_pub and c_edit)
        or a (source, target) pair (FlowEdit); None when one is missing."""
        c = self.config
        if c.editor == "instruct-pix2pix" and c.safe_attention:
            triples = zip(
                self._prior(batch, n, c.prior), column(batch, "c_pub", n), column(batch, "c_edit", n), strict=True
            )
            return [t if all(t) else None for t in triples]
        if c.editor == "instruct-pix2pix":
            return self._prior(batch, n, c.prior)
        pairs = zip(self._prior(batch, n, c.source_prior), self._prior(batch, n, c.target_prior), strict=True)
        return [(source, target) if source and target else None for source, target in pairs]

    def _prior(self, batch, n, prior) -> list:
        c = self.config
        if prior == "class":
            texts = []
            for value in column(batch, c.class_column, n):
                try:
                    texts.append(f"A realistic image of {class_name(value, c.class_names, c.class_column)}.")
                except LabelError:  # a missing or unknown label: this row has no prompt, so it is redacted instead
                    texts.append(None)
            return texts
        return column(batch, prior, n)

    def _diffuse(self, pending: dict, texts, keys, rank) -> dict:
        """{row: edited pixels or the exception}; a failing batch is retried row by row."""
        if not pending:
            return {}
        c = self.config
        device = runtime.device_for(rank)
        key = (c.editor, c.model, c.revision, c.dtype, c.text_encoder_3, c.safe_attention, device)
        editor = runtime.cached_model(key, lambda: self._load_editor(device))
        if c.editor == "instruct-pix2pix":
            settings = dict(
                steps=c.steps,
                guidance_scale=c.guidance_scale,
                image_guidance_scale=c.image_guidance_scale,
                resolution=c.resolution,
            )
        else:
            settings = dict(
                steps=c.steps,
                source_guidance=c.source_guidance,
                target_guidance=c.target_guidance,
                n_min=c.n_min,
                n_max=c.n_max,
                n_avg=c.n_avg,
                resolution=c.resolution,
            )
        return runtime.in_chunks(
            list(pending),
            c.batch_size,
            lambda rows: editor.edit(
                [pending[i] for i in rows],
                [texts[i] for i in rows],
                [self.row_seed(pending[i], keys[i]) for i in rows],
                **settings,
            ),
        )

    def _load_editor(self, device):
        c = self.config
        if c.editor == "instruct-pix2pix":
            from ..editors.instruct_pix2pix import InstructPix2Pix

            return InstructPix2Pix(c.model, c.revision, device, c.dtype, c.cpu_offload, c.safe_attention)
        from ..editors.flowedit import FlowEdit

        return FlowEdit(c.model, c.revision, device, c.dtype, c.cpu_offload, c.text_encoder_3)

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
