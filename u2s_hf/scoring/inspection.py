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


def inspection_scores(
    predicted_flags: Sequence[bool | None],
    labels: Sequence[Sequence[str]],
    groups: Mapping[str, Sequence[str]] = PAPER_GROUPS,
) -> dict:
    """Precision, recall and F1 of the flag (private = positive).

    "all" scores every image. A group scores the images carrying one of its attributes (positives) together with
    the safe images (negatives), so a group's precision says how many of its flags on that set were right.
    """
    ids = [{_attribute(label) for label in image_labels} for image_labels in labels]
    private = [bool(a) and a != {SAFE} for a in ids]
    flags = [bool(f) for f in predicted_flags]
    if len(flags) != len(private):
        raise ValueError(f"{len(flags)} predictions for {len(private)} label sets")
    scores = {"all": _prf(flags, private)}
    for name, attributes in groups.items():
        chosen = [i for i, a in enumerate(ids) if a & set(attributes) or a == {SAFE}]
        scores[name] = _prf([flags[i] for i in chosen], [private[i] for i in chosen])
        scores[name]["images"] = sum(1 for i in chosen if private[i])
    return scores


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
