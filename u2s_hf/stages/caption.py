"""Stage 1b: a privacy review, a private caption and a public caption for each flagged row."""

from __future__ import annotations

import datasets

from .. import answers, images, prompts, runtime
from ..backends.chat import ChatRequest, load_chat
from ..config import CaptionConfig
from ..criteria import criteria_text
from .base import ERROR, STATUS, Stage, column, read_replies, require


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
                "u2s_status": STATUS,
                "u2s_error": ERROR,
            }
        )

    def __call__(self, batch, rank=None):
        runtime.exit_with_parent()
        c = self.config
        values = require(batch, c.image_column, "Caption")
        n = len(values)
        statuses, errors = column(batch, "u2s_status", n), column(batch, "u2s_error", n)
        reviews, private, public = [None] * n, [None] * n, [None] * n
        prompt = prompts.render("caption", criteria=criteria_text(c.criteria))
        asked, requests = [], []
        for i, (value, flag) in enumerate(zip(values, column(batch, c.flag_column, n), strict=True)):
            if flag is False or statuses[i] == "error":
                continue  # unflagged rows cost nothing; error rows are already failing closed
            try:
                # Shrunk now to what the model sees: a batch of full-size photos must not pile up in memory.
                rgb = images.resize_to_max_side(images.decode(value), c.image_max_side)[0]
                requests.append(ChatRequest(prompt, rgb, c.max_new_tokens))
                asked.append(i)
            except images.ImageError as exc:
                statuses[i], errors[i] = "error", str(exc)
        replies = load_chat(c, rank)(requests) if requests else []
        for i, captions in read_replies(asked, replies, answers.parse_captions, statuses, errors).items():
            reviews[i], private[i], public[i] = captions.review, captions.private, captions.public
        return self.typed(
            {"privacy_review": reviews, "c_priv": private, "c_pub": public, "u2s_status": statuses, "u2s_error": errors}
        )
