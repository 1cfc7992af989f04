"""Stage 1b: a privacy review, a private caption and a public caption for each flagged row."""

from __future__ import annotations

import datasets

from .. import answers, prompts, runtime
from ..backends.chat import ChatRequest, load_chat
from ..config import CaptionConfig
from ..criteria import criteria_text
from .base import OUTCOME_FEATURES, Outcome, Stage, column, read_replies, require


class Caption(Stage):
    """Map function adding `privacy_review`, `c_priv`, `c_pub` (None for unflagged rows), `u2s_status`, `u2s_error`.

    A row whose answer has no public caption, or whose request fails, gets status "error" and keeps its flag, so
    later stages fail closed; the raw answer is never used as a public caption.
    """

    config_class = CaptionConfig
    name = "caption"

    def features(self):
        text = datasets.Value("string")
        return datasets.Features(
            {
                "privacy_review": datasets.List(text),
                "c_priv": text,
                "c_pub": text,
                **OUTCOME_FEATURES,
            }
        )

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        values = require(batch, c.image_column, "Caption")
        n = len(values)
        outcome = Outcome(batch, n)
        reviews, private, public = [None] * n, [None] * n, [None] * n
        prompt = prompts.render("caption", criteria=criteria_text(c.criteria))
        asked, requests = [], []
        for i, (value, flag) in enumerate(zip(values, column(batch, c.flag_column, n), strict=True)):
            if flag is False or outcome.failed(i):
                continue  # unflagged rows cost nothing; error rows are already failing closed
            # Shrunk now to what the model sees: a batch of full-size photos must not pile up in memory.
            rgb = outcome.decode(i, value, c.max_pixels, c.image_max_side)
            if rgb is not None:
                requests.append(ChatRequest(prompt, rgb, c.max_new_tokens))
                asked.append(i)
        replies = load_chat(c, rank)(requests) if requests else []
        for i, captions in read_replies(asked, replies, answers.parse_captions, outcome).items():
            reviews[i], private[i], public[i] = captions.review, captions.private, captions.public
        return self.typed({"privacy_review": reviews, "c_priv": private, "c_pub": public, **outcome.columns()})
