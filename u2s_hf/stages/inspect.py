"""Stage 1a: decide which rows carry privacy risks (`privacy_flag`) and where (`detections`)."""

from __future__ import annotations

import datasets

from .. import answers, images, prompts, runtime
from ..backends import detectors
from ..backends.chat import ChatRequest, failure, load_chat
from ..config import InspectConfig
from ..criteria import criteria_text
from .base import DETECTIONS, ERROR, STATUS, Stage, column, require

NOT_UNDERSTOOD = "flag answer not understood: counted as flagged"


class Inspect(Stage):
    """Map function adding `privacy_flag`, `detections`, `u2s_status` ("error" or None) and `u2s_error`
    (+ the model's raw answer in `debug_column`, when set).

    Uncertain means flagged: a row that cannot be decoded, whose detector or model request fails, or whose answer
    cannot be read gets privacy_flag=True.
    """

    config_class = InspectConfig
    name = "inspect"

    def features(self):
        c = self.config
        columns = {
            c.flag_column: datasets.Value("bool"),
            c.detections_column: DETECTIONS,
            "u2s_status": STATUS,
            "u2s_error": ERROR,
        }
        if c.debug_column:
            columns[c.debug_column] = datasets.Value("string")
        return datasets.Features(columns)

    def __call__(self, batch, rank=None):
        runtime.exit_with_parent()
        c = self.config
        values = require(batch, c.image_column, "Inspect")
        n = len(values)
        flags, found, raw = [True] * n, [[] for _ in range(n)], [None] * n
        # An earlier error (an image that could not be read) stays; any other earlier status is decided anew.
        earlier = zip(column(batch, "u2s_status", n), column(batch, "u2s_error", n), strict=True)
        errors = [error or "error" if status == "error" else None for status, error in earlier]
        statuses = ["error" if e is not None else None for e in errors]
        rows = [i for i in range(n) if statuses[i] is None]
        if c.backend == "detectors":
            self._detect(values, rows, flags, found, statuses, errors, rank)
        else:
            self._ask(values, rows, flags, statuses, errors, raw, rank)
        columns = {c.flag_column: flags, c.detections_column: found, "u2s_status": statuses, "u2s_error": errors}
        if c.debug_column:
            columns[c.debug_column] = raw
        return self.typed(columns)

    def _decode(self, value, i, statuses, errors, max_side=None):
        """The row's pixels (shrunk to `max_side` if given), or None with the row marked as an error."""
        try:
            rgb = images.decode(value, self.config.max_pixels)
        except images.ImageError as exc:
            statuses[i], errors[i] = "error", str(exc)
            return None
        return images.resize_to_max_side(rgb, max_side)[0] if max_side else rgb

    def _detect(self, values, rows, flags, found, statuses, errors, rank):
        c = self.config
        threads = runtime.configure_threads(c.threads)
        device = runtime.device_for(rank)
        faces = detectors.load_face_detector(device, threads) if c.faces else None
        text = detectors.load_text_detector(device, threads, c.text_max_side) if c.text else None
        for i in rows:  # one decoded image at a time: a batch of large images must not pile up in memory
            rgb = self._decode(values[i], i, statuses, errors)
            if rgb is None:
                continue
            try:
                if faces is not None:
                    found[i] += faces(rgb, c.face_threshold, c.face_max_side)
                if text is not None:
                    found[i] += text(rgb, c.text_threshold)
                flags[i] = bool(found[i])
            except Exception as exc:  # a detector failing on one row must not end the run
                statuses[i], errors[i] = "error", f"detector failed: {type(exc).__name__}: {exc}"[:200]

    def _ask(self, values, rows, flags, statuses, errors, raw, rank):
        c = self.config
        prompt = prompts.render("flag", criteria=criteria_text(c.criteria))
        decoded = {i: self._decode(values[i], i, statuses, errors, c.image_max_side) for i in rows}
        asked = [i for i, rgb in decoded.items() if rgb is not None]
        requests = [ChatRequest(prompt, decoded[i], c.max_new_tokens) for i in asked]
        replies = load_chat(c, rank)(requests) if requests else []
        for i, answer in zip(asked, replies, strict=True):
            if isinstance(answer, Exception):
                statuses[i], errors[i] = "error", failure(answer)
                continue
            raw[i] = answer
            flags[i], understood = answers.parse_flag(answer)
            if not understood:
                errors[i] = NOT_UNDERSTOOD
