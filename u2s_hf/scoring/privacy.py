"""What is left to link: text similarity and the diversity of apparent demographic groups."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .common import Texts, mean

RACE_CATEGORIES = ("White", "Black", "Asian", "Hispanic", "Other")


def text_similarity(original_texts: Texts, anonymized_texts: Texts) -> dict:
    """rapidfuzz token_set_ratio (default processing) / 100 per pair, averaged; pairs whose original has no text
    say nothing about leakage: they are excluded (None) and counted."""
    from rapidfuzz import fuzz, utils

    per_pair, excluded = [], 0
    for original, anonymized in zip(original_texts, anonymized_texts, strict=True):
        if not original or not utils.default_process(original):
            per_pair.append(None)
            excluded += 1
            continue
        per_pair.append(fuzz.token_set_ratio(original, anonymized or "", processor=utils.default_process) / 100)
    return {"text_similarity": mean(per_pair), "per_pair": per_pair, "excluded": excluded}


def race_labels_to_counts(
    labels_per_image: Sequence[Sequence[str] | None], categories: Sequence[str] = RACE_CATEGORIES, other: str = "Other"
) -> dict[str, int]:
    """Pool per-image group labels into counts per category; a label outside the set counts as `other`."""
    if other not in categories:
        raise ValueError(f"other={other!r} must be one of the categories {categories}")
    by_name = {c.casefold(): c for c in categories}
    counts = dict.fromkeys(categories, 0)
    for labels in labels_per_image:
        for label in labels or []:
            counts[by_name.get(str(label).strip().casefold(), other)] += 1
    return counts


def race_entropy(counts: Mapping[str, int], categories: Sequence[str] = RACE_CATEGORIES) -> float | None:
    """Entropy of the pooled group distribution divided by log K, K = len(categories) (1 = perfectly even).

    `counts` maps category -> count, or lists counts in `categories` order. All-zero counts give None.
    """
    if isinstance(counts, Mapping):
        unknown = set(counts) - set(categories)
        if unknown:
            raise ValueError(f"counts for unknown categories {sorted(unknown)}; categories: {categories}")
        values = [counts.get(c, 0) for c in categories]
    else:
        values = list(counts)
        if len(values) != len(categories):
            raise ValueError(f"{len(values)} counts for {len(categories)} categories")
    if any(v < 0 for v in values):
        raise ValueError("counts cannot be negative")
    total = sum(values)
    if total == 0 or len(categories) < 2:
        return None
    return -sum(v / total * math.log(v / total) for v in values if v) / math.log(len(categories))
