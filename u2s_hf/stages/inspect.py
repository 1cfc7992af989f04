"""Stage 1a: decide which rows carry privacy risks (`privacy_flag`) and where (`detections`)."""

from __future__ import annotations

import datasets

from .. import answers, prompts, runtime
from ..answers import failure
from ..backends import detectors
from ..backends.chat import ChatRequest, load_chat
from ..config import InspectConfig
from ..criteria import criteria_text
from .base import DETECTIONS, OUTCOME_FEATURES, Outcome, Stage, require

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
            **OUTCOME_FEATURES,
        }
        if c.debug_column:
            columns[c.debug_column] = datasets.Value("string")
        return datasets.Features(columns)

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        values = require(batch, c.image_column, "Inspect")
        n = len(values)
        flags, found, raw = [True] * n, [[] for _ in range(n)], [None] * n
        # An earlier error (an image that could not be read) stays; any other earlier status is decided anew.
        outcome = Outcome(batch, n, fresh=True)
        rows = [i for i in range(n) if not outcome.failed(i)]
        if c.backend == "detectors":
            self._detect(values, rows, flags, found, outcome, rank)
        else:
            self._ask(values, rows, flags, outcome, raw, rank)
        columns = {c.flag_column: flags, c.detections_column: found, **outcome.columns()}
        if c.debug_column:
            columns[c.debug_column] = raw
        return self.typed(columns)

    def _detect(self, values, rows, flags, found, outcome, rank):
        c = self.config
        threads = runtime.configure_threads(c.threads)
        device = runtime.device_for(rank)
        # One-thread models, `threads` rows at a time (see backends.detectors).
        faces = detectors.load_face_detector(device, 1) if c.faces else None
        text = detectors.load_text_detector(device, 1, c.text_max_side) if c.text else None

        def detect(i):  # one decoded image per thread: a batch of large images must not pile up in memory
            rgb = outcome.decode(i, values[i], c.max_pixels)
            if rgb is None:
                return
            try:
                if faces is not None:
                    found[i] += faces.find(rgb, c.face_threshold, c.face_max_side, c.face_turns)
                if text is not None:
                    found[i] += text(rgb, c.text_threshold)
                flags[i] = bool(found[i])
            except Exception as exc:  # a detector failing on one row must not end the run
                outcome.fail(i, f"detector failed: {type(exc).__name__}: {exc}")

        detectors.concurrently(detect, rows, threads)

    def _ask(self, values, rows, flags, outcome, raw, rank):
        c = self.config
        prompt = prompts.render("flag", criteria=criteria_text(c.criteria))
        decoded = {i: outcome.decode(i, values[i], c.max_pixels, c.image_max_side) for i in rows}
        asked = [i for i, rgb in decoded.items() if rgb is not None]
        requests = [ChatRequest(prompt, decoded[i], c.max_new_tokens) for i in asked]
        replies = load_chat(c, rank)(requests) if requests else []
        for i, answer in zip(asked, replies, strict=True):
            if isinstance(answer, Exception):
                outcome.fail(i, failure(answer))
                continue
            raw[i] = answer
            flags[i], understood = answers.parse_flag(answer)
            if not understood:
                outcome.note(i, NOT_UNDERSTOOD)
