"""What is left to link: text similarity and the diversity of apparent demographic groups."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from .common import Texts, mean

RACE_CATEGORIES = ("White", "Black", "Asian", "Hispanic", "Other")
# What judges say for each category, as casefolded words; a phrase of more words wins over its parts ("native
# american" is Other, "north african" too), so only phrases whose parts mean something else need listing.
RACE_SYNONYMS = {
    "White": ("white", "caucasian", "european"),
    "Black": ("black", "african", "african american"),
    "Asian": ("asian",),  # East, South, Southeast Asian, Asian American: the other words name no group
    "Hispanic": ("hispanic", "latino", "latina", "latinx", "latine", "latin american"),
    "Other": (
        "other",
        "middle eastern",
        "north african",
        "arab",
        "native american",
        "american indian",
        "alaska native",
        "first nations",
        "indigenous",
        "aboriginal",
        "pacific islander",
        "native hawaiian",
        "mixed",
        "multiracial",
        "biracial",
    ),
}
_NEGATION = {"not", "non", "no"}  # "non-Hispanic White" is White; "not White" names no group


def text_similarity(original_texts: Texts, anonymized_texts: Texts, normalize: bool = True) -> dict:
    """rapidfuzz token_set_ratio / 100 per pair, averaged. token_set_ratio is 1.0 whenever one side's words are a
    subset of the other's (and ignores word order). `normalize` folds case and punctuation first (rapidfuzz
    `utils.default_process`: lower case, non-alphanumerics to spaces, trimmed); without it, "Hopper" and
    "HOPPER." differ. Pairs whose original has no text (nothing left after that processing) say nothing about
    leakage: they are excluded (None) and counted in `excluded`."""
    from rapidfuzz import fuzz, utils

    process = utils.default_process if normalize else str.strip
    per_pair, excluded = [], 0
    for original, anonymized in zip(original_texts, anonymized_texts, strict=True):
        if not original or not process(original):
            per_pair.append(None)
            excluded += 1
            continue
        per_pair.append(fuzz.token_set_ratio(original, anonymized or "", processor=process) / 100)
    return {"text_similarity": mean(per_pair), "per_pair": per_pair, "excluded": excluded}


def race_category(label: str | None, categories: Sequence[str] = RACE_CATEGORIES, other: str = "Other") -> str | None:
    """The category one judge label names, or None when it names no group ("No people are visible.", "I cannot
    determine", "none").

    Case, punctuation and hedges are ignored ("White (likely)", "probably Black"); synonyms count as their
    category (`RACE_SYNONYMS`: Caucasian -> White, Latina -> Hispanic, Middle Eastern -> Other, ...), and so does
    a category's own name; a negated group ("non-Hispanic", "not White") is not named. A label naming two
    different categories ("Black and White", "White or Hispanic") is one person of mixed or uncertain group:
    `other`, as is a group outside `categories`."""
    words = re.sub(r"[^\w]+|_", " ", str(label or "").casefold()).split()
    phrases = {phrase: name for name, said in RACE_SYNONYMS.items() for phrase in said}
    phrases.update({name.casefold(): name for name in categories})
    longest = max(len(phrase.split()) for phrase in phrases)
    named, i = set(), 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            name = phrases.get(" ".join(words[i : i + size]))
            if name is not None:
                if not (i and words[i - 1] in _NEGATION):
                    named.add(name)
                i += size
                break
        else:
            i += 1
    if not named:
        return None
    if len(named) > 1:
        return other
    (name,) = named
    return name if name in categories else other


def race_labels_to_counts(
    labels_per_image: Sequence[Sequence[str] | None], categories: Sequence[str] = RACE_CATEGORIES, other: str = "Other"
) -> dict[str, int]:
    """Pool per-image group labels into counts per category (`race_category` reads each label): a label counts
    once, or not at all when it names no group; images without labels (None or []) count for nothing."""
    if other not in categories:
        raise ValueError(f"other={other!r} must be one of the categories {categories}")
    counts = dict.fromkeys(categories, 0)
    for labels in labels_per_image:
        for label in labels or []:
            category = race_category(label, categories, other)
            if category is not None:
                counts[category] += 1
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
