"""Stage 1c: an identity-neutral edit instruction from the public caption alone, and its merge with that caption."""

from __future__ import annotations

import datasets
import xxhash

from .. import answers, prompts, runtime
from ..backends.chat import ChatRequest, load_chat
from ..config import InstructConfig
from .base import OUTCOME_FEATURES, LabelError, Outcome, Stage, class_name, column, read_replies, require


class Instruct(Stage):
    """Map function adding `c_edit`, `c_llm` (when merge=True), `u2s_status`, `u2s_error`.

    The model never sees the image or the private caption. Rows without a public caption get None; so do rows
    whose class label names no class (with class_column), which become error rows with the reason.
    """

    config_class = InstructConfig
    name = "instruct"

    def features(self):
        text = datasets.Value("string")
        names = ["c_edit", "c_llm"] if self.config.merge else ["c_edit"]
        return datasets.Features({**dict.fromkeys(names, text), **OUTCOME_FEATURES})

    def group_for(self, key) -> str | None:
        """The demographic group drawn for a row: the same for the same seed and row key, in any process."""
        groups = self.config.groups
        if not groups:
            return None
        return groups[xxhash.xxh64_intdigest(f"{self.config.seed}:{key}".encode()) % len(groups)]

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        public = require(batch, "c_pub", "Instruct")
        n = len(public)
        outcome = Outcome(batch, n)
        keys = column(batch, c.key_column, n) if c.key_column else public
        classes = self._classes(batch, n, public, outcome)
        complete = load_chat(c, rank)
        asked = [i for i in range(n) if public[i] and (classes[i] is not None or not c.class_column)]
        edits = self._ask(
            complete,
            asked,
            outcome,
            "edit instruction",
            lambda i: prompts.render(
                "instruct", public_caption=public[i], demographics=self._demographic_line(keys[i])
            ),
            c.max_new_tokens,
        )
        out = {"c_edit": edits}
        if c.merge:
            merged = [i for i in asked if edits[i]]
            out["c_llm"] = self._ask(
                complete,
                merged,
                outcome,
                "merged caption",
                lambda i: prompts.render(
                    "merge", public_caption=public[i], edit=edits[i], class_hint=_class_hint(classes[i])
                ),
                c.merge_max_new_tokens,
            )
        return self.typed({**out, **outcome.columns()})

    def _classes(self, batch, n, public, outcome) -> list:
        """Each row's class name (all None without class_column). A row with a public caption whose label names no
        class becomes an error row with the reason, and is not asked."""
        c = self.config
        classes = [None] * n
        for i, value in enumerate(column(batch, c.class_column, n) if c.class_column else []):
            try:
                classes[i] = class_name(value, c.class_names, c.class_column) if public[i] else None
            except LabelError as exc:
                outcome.fail(i, str(exc))
        return classes

    def _ask(self, complete, rows, outcome, what, prompt_for, max_new_tokens) -> list:
        replies = complete([ChatRequest(prompt_for(i), None, max_new_tokens) for i in rows]) if rows else []
        parsed = read_replies(rows, replies, lambda reply: answers.parse_phrase(reply, what), outcome)
        return [parsed.get(i) for i in range(len(outcome.statuses))]

    def _demographic_line(self, key) -> str:
        group = self.group_for(key)
        return f"- Make the people appear {group}." if group else ""


def _class_hint(name) -> str:
    return f'The caption must still describe an image of "{name}".' if name else ""
