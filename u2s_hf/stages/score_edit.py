"""The paper's filter for training triplets: `s_norm`, how well an edited image still matches its public caption
compared with its original. Not part of any preset: it scores what Edit wrote, for `dataset_scripts/make_triplets.py`
and for anyone choosing edits to train on."""

from __future__ import annotations

import datasets

from .. import images, runtime
from ..config import ScoreEditConfig
from ..scoring.clip import embed_images, embed_texts, load_clip
from .base import OUTCOME_FEATURES, Outcome, Stage, require

SNORM = "s_norm"
MARK = "s_norm: "  # the start of every reason ScoreEdit writes
PAPER_MIN_SNORM = 0.7  # the paper keeps triplets with s_norm above this


class ScoreEdit(Stage):
    """Map function adding `s_norm = CLIP(caption, edited) / CLIP(caption, original)` and `u2s_status`/`u2s_error`.

    Both CLIP scores are open_clip cosines under `clip_model`, as `scoring.clip_score` computes them (the same
    loading and embedding code). Above 1 the edit matches the caption better than the original did; the paper keeps
    rows with s_norm > 0.7: `ds.filter(lambda r: r["s_norm"] is not None and r["s_norm"] > 0.7)`.

    It measures and decides nothing: `u2s_status` is left as it was. A row without a caption, without either image
    or with one that cannot be decoded, or whose original has a cosine <= 0 with the caption (the ratio means
    nothing then: its sign flips and it grows without bound near 0) gets s_norm None, and a reason starting with
    "s_norm: " after any earlier one in `u2s_error`. Only a missing column or a model that cannot be loaded stops
    the map.
    """

    config_class = ScoreEditConfig
    name = "score_edit"

    def features(self):
        return datasets.Features({SNORM: datasets.Value("float64"), **OUTCOME_FEATURES})

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        captions = require(batch, c.caption_column, "ScoreEdit")
        originals = require(batch, c.image_column, "ScoreEdit")
        edited = require(batch, c.output_column, "ScoreEdit")
        n = len(captions)
        outcome = Outcome(batch, n)
        scores: list = [None] * n
        rows = [i for i in range(n) if self._inputs(outcome, i, captions[i], originals[i], edited[i])]
        if not rows:
            return self.typed({SNORM: scores, **outcome.columns()})
        import torch  # noqa: F401 (imported first, so that the threads and the device are torch's)

        runtime.configure_threads(c.threads)
        device = c.device or runtime.device_for(rank)
        load_clip(c.clip_model, device)  # before any row: a model that cannot be loaded stops the map
        for start in range(0, len(rows), c.batch_size):
            pairs = {}  # row -> (original, edited) pixels; one chunk in memory at a time
            for i in rows[start : start + c.batch_size]:
                decoded = self._decode(outcome, i, originals[i], edited[i])
                if decoded:
                    pairs[i] = decoded
            if pairs:
                self._score(outcome, scores, captions, pairs, device)
        return self.typed({SNORM: scores, **outcome.columns()})

    def _inputs(self, outcome, i, caption, original, edited) -> bool:
        """Whether row i has a caption and both images; if not, the reason in `outcome`."""
        c = self.config
        if not (isinstance(caption, str) and caption.strip()):
            missing = f"no caption ({c.caption_column})"
        elif original is None:
            missing = f"no original image ({c.image_column})"
        elif edited is None:
            missing = f"no edited image ({c.output_column})"
        else:
            return True
        outcome.note(i, MARK + missing)
        return False

    def _decode(self, outcome, i, original, edited) -> tuple | None:
        """(original, edited) pixels of row i, or None with the reason in `outcome`."""
        c = self.config
        decoded = []
        for what, value in (("original image", original), ("edited image", edited)):
            try:
                decoded.append(images.decode(value, c.max_pixels))
            except images.ImageError as exc:
                outcome.note(i, f"{MARK}{what}: {exc}")
                return None
        return tuple(decoded)

    def _score(self, outcome, scores, captions, pairs: dict, device):
        c, rows = self.config, list(pairs)
        texts, _ = embed_texts(c.clip_model, [captions[i] for i in rows], device)
        pictures = embed_images(c.clip_model, [pairs[i][0] for i in rows] + [pairs[i][1] for i in rows], device)
        before = (pictures[: len(rows)] * texts).sum(-1).tolist()
        after = (pictures[len(rows) :] * texts).sum(-1).tolist()
        for i, original, edit in zip(rows, before, after, strict=True):
            if original <= 0:
                outcome.note(i, f"{MARK}the original's CLIP cosine with its caption is {original:.4f}, not above 0")
            else:
                scores[i] = edit / original
