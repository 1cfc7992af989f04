"""Stage-1 check: the binary privacy flag against VISPR-style attribute labels (an image is safe iff its only label
is `a0_safe`), for all attributes and for attribute groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The paper's groups, by VISPR attribute id (labels look like "a9_face_complete").
PAPER_GROUPS = {
    "face": ("a9", "a10"),
    "health": ("a39", "a41", "a43"),
    "vehicles": ("a102", "a103", "a104"),
    "opinion": ("a61", "a62"),
}
SAFE = "a0"
# inspection_scores(negatives=...): what a group is scored against (see its docstring)
NEGATIVES = ("safe", "others")
# Top-level counts beside the groups' scores (a group may not take these names).
COUNTS = ("scored", "unlabelled", "unflagged")


def inspection_scores(
    predicted_flags: Sequence[bool | None],
    labels: Sequence[Sequence[str] | None],
    groups: Mapping[str, Sequence[str]] = PAPER_GROUPS,
    negatives: str = "safe",
) -> dict:
    """Precision, recall and F1 of the flag (private = positive), over all labelled images and per group.

    A labelled image with no flag (None) counts as flagged, the pipeline's own fail-closed rule (`unflagged` counts
    them). An image with no labels (None or an empty list) is neither private nor safe: it is left out of every
    score and counted in `unlabelled`; `scored` is the number of labelled images "all" is over. A group's positives
    are the images carrying one of its attributes; its negatives (`negatives`, the paper does not define them) are
    the safe images ("safe") or every labelled image without one of the group's attributes ("others"). Each block
    ("all" and every group) says how many positives (`images`) and negatives (`negatives`) it is over. With one flag
    per image a group's precision never exceeds that of "all": under "safe" it shares the false positives of "all"
    and has at most its true positives; under "others" its flagged images are all the flagged labelled images.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be 'safe' or 'others', not {negatives!r}")
    clash = sorted(set(groups) & {"all", *COUNTS})
    if clash:
        raise ValueError(f"group names {clash} are taken by the result's own keys")
    if len(predicted_flags) != len(labels):
        raise ValueError(f"{len(predicted_flags)} predictions for {len(labels)} label sets")
    ids = [{_attribute(label) for label in image_labels or ()} for image_labels in labels]
    labelled = [i for i, a in enumerate(ids) if a]
    private = [a != {SAFE} for a in ids]
    flags = [flag is None or bool(flag) for flag in predicted_flags]
    safe = [i for i in labelled if not private[i]]
    scores = {"all": _scored(flags, [i for i in labelled if private[i]], safe)}
    for name, attributes in groups.items():
        inside = [i for i in labelled if ids[i] & set(attributes)]
        outside = safe if negatives == "safe" else [i for i in labelled if not ids[i] & set(attributes)]
        scores[name] = _scored(flags, inside, outside)
    scores.update(
        scored=len(labelled),
        unlabelled=len(labels) - len(labelled),
        unflagged=sum(1 for i in labelled if predicted_flags[i] is None),
    )
    return scores


def _scored(flags, positives: list[int], negatives: list[int]) -> dict:
    """Precision, recall and F1 of `flags` on these positives and negatives (indices), and how many of each."""
    chosen = positives + negatives
    truth = [True] * len(positives) + [False] * len(negatives)
    return {**_prf([flags[i] for i in chosen], truth), "images": len(positives), "negatives": len(negatives)}


def _attribute(label: str) -> str:
    return str(label).split("_", 1)[0]


def _prf(flags, truth) -> dict:
    tp = sum(f and t for f, t in zip(flags, truth, strict=True))
    fp = sum(f and not t for f, t in zip(flags, truth, strict=True))
    fn = sum(t and not f for f, t in zip(flags, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
