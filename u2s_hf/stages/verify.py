"""Stage 3: check every anonymised output again, re-redact what still leaks, never let a leaking output out.

What counts as a leak depends on what the row went through (see `VerifyConfig`): in a redacted output any face or
readable text line is one; in an edited output (a diffusion editor draws new people on purpose) only a face that is
still the original's person, or text that still reads as the original's, is. A leak is pixelated with Edit's
default redaction and checked again, up to `rounds` times; then the whole image is obscured (checked once more) or
the row dropped. `u2s_verified` says whether the output that leaves passed its check.
"""

from __future__ import annotations

import datasets
import numpy as np

from .. import images, runtime
from ..backends import detectors, identity
from ..config import EditConfig, VerifyConfig
from ..editors import redact
from .base import (
    DROPPED,
    EDITED,
    ERROR,
    KEPT_SAFE,
    OBSCURED,
    OUTCOME_FEATURES,
    REDACTED,
    Outcome,
    Stage,
    column,
    obscure_whole,
    require,
    shorten,
)

VERIFIED = "u2s_verified"
STRONG = EditConfig()  # Edit's default redaction (pixelate, margin 0.25, 8 cells; 16 for a whole image)
# A detector re-checks a redacted region in its surroundings: Edit's region (the box grown by STRONG.margin of its
# size) and around it by half the box's shorter side (at least MIN_AREA pixels across in all), where a face or a
# text line the box only partly covered goes on, and enough context for the detector to see one.
CONTEXT = 0.5
MIN_AREA = 64
WHOLE_SHARE = 0.85  # surroundings covering more of the image than this: one pass over the whole output is as cheap
# The words Verify writes at the end of `u2s_error`; `action` reads them back for the report. A Verify reason is
# short (under 70 characters), so it survives `shorten`, which keeps the end of a long reason.
MARK = "verify: "
REDONE = "redacted again"
IDENTITY_NOT_CHECKED = "identity not checked"
TEXT_NOT_CHECKED = "text not checked"
NO_ORIGINAL = "no original image"


class Verify(Stage):
    """Map function re-checking `output_column` and adding `u2s_verified`, `u2s_status` and `u2s_error`.

    `u2s_verified`: True when the output that leaves passed its check (after re-redaction, if any); False when it
    failed or could not be checked (an edited face without an identity model, an output that cannot be decoded,
    error and dropped rows); None for rows not looked at (kept rows, unless `verify_kept`). A row is never
    re-edited for what its check could not judge.
    """

    config_class = VerifyConfig
    name = "verify"

    def features(self):
        return datasets.Features(
            {self.config.output_column: datasets.Image(), VERIFIED: datasets.Value("bool"), **OUTCOME_FEATURES}
        )

    def undecoded(self) -> tuple[str, ...]:
        # Undecoded, an output that passes leaves byte for byte, and rows not looked at cost no decoding.
        return (self.config.output_column,)

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        runtime.exit_with_parent()
        c = self.config
        outputs = require(batch, c.output_column, "Verify")
        n = len(outputs)
        originals = column(batch, c.image_column, n)
        found = column(batch, c.detections_column, n)
        outcome = Outcome(batch, n)
        statuses = outcome.statuses
        verified = [False if status in (ERROR, DROPPED) else None for status in statuses]
        rows = [i for i, s in enumerate(statuses) if s not in (ERROR, DROPPED) and (s != KEPT_SAFE or c.verify_kept)]
        tools = _Tools(c, rank, edited=any(statuses[i] == EDITED for i in rows)) if rows else None

        def verify(i):
            return self._verify(outcome, i, outputs[i], _Check(c, tools, statuses[i] == EDITED, originals[i], found[i]))

        checked = detectors.concurrently(verify, rows, tools.threads if tools else 1)
        for i, (output, passed) in zip(rows, checked, strict=True):
            outputs[i], verified[i] = output, passed
        return self.typed({c.output_column: outputs, VERIFIED: verified, **outcome.columns()})

    def _verify(self, outcome, i, value, check):
        """(the output that leaves, u2s_verified) for row i, with its status and reason in `outcome`."""
        c = self.config
        try:
            rgb = images.decode(value, c.max_pixels)
        except images.ImageError as exc:
            outcome.fail(i, f"{MARK}output {exc}")
            return None, False
        try:
            leaks, unchecked = check(rgb)
        except Exception as exc:  # a detector failing on one row: that output cannot be trusted
            return self._give_up(outcome, i, rgb, check, f"check failed ({_short(exc)})")
        if not leaks:
            if unchecked:
                outcome.note(i, MARK + ", ".join(unchecked))
            return value, not unchecked
        what = _describe(leaks, check.edited)
        for _ in range(c.rounds):
            try:
                rgb = redact.redact(rgb, [d["box"] for d in leaks], STRONG.method, STRONG.margin, STRONG.cells)
                check.redacted(leaks)
                leaks, unchecked = check(rgb)
            except redact.RedactionError:  # a region already as redacted as it gets, and still found
                return self._give_up(outcome, i, rgb, check, f"{what} found where redaction changes nothing")
            except Exception as exc:  # a detector failing: the output cannot be trusted
                return self._give_up(outcome, i, rgb, check, f"{what}, then check failed ({_short(exc)})")
            if not leaks:
                outcome.done(i, REDACTED, f"{MARK}{what}: {', '.join([REDONE, *unchecked])}")
                return images.clean(rgb), not unchecked
        return self._give_up(outcome, i, rgb, check, f"{what} still found after {c.rounds} rounds")

    def _give_up(self, outcome, i, rgb, check, reason):
        """The whole image obscured and checked once more, or the row dropped (`unlocated="drop"`, or when the
        obscured image fails its check too)."""
        if self.config.unlocated == "drop":
            outcome.done(i, DROPPED, f"{MARK}{reason}: dropped")
            return None, False
        obscured = obscure_whole(outcome, i, rgb, STRONG.whole_image_cells, MARK + reason)
        if obscured is None:
            return None, False
        try:
            leaks, unchecked = check(np.asarray(obscured), whole=True)
        except Exception as exc:
            leaks, unchecked = [], [f"check failed ({_short(exc)})"]
        if leaks:
            outcome.done(i, DROPPED, f"{MARK}still found when obscured: dropped")
            return None, False
        return obscured, not unchecked


class _Tools:
    """The models a batch with rows to check needs (one instance per process, see runtime.cached_model), loaded
    before any row: a model that cannot be loaded stops the map, it does not fail every row. The identity model is
    loaded only for a batch with edited rows. The detectors run on one thread each, `threads` rows at a time."""

    def __init__(self, config: VerifyConfig, rank, edited: bool):
        device, self.threads = runtime.device_for(rank), runtime.configure_threads(config.threads)
        self.faces = detectors.load_face_detector(device, 1) if config.faces else None
        self.text = detectors.load_text_detector(device, 1, config.text_max_side) if config.text else None
        wanted = edited and config.identity_model
        self.people = identity.load_face_model(config.identity_model, config.identity_root) if wanted else None


class _Check:
    """One row's check: `check(rgb)` -> (leaks as detections, what could not be checked)."""

    def __init__(self, config: VerifyConfig, tools: _Tools, edited: bool, original, detections):
        self.config, self.tools, self.edited, self.original = config, tools, edited, original
        self.regions = [d for d in detections or () if isinstance(d, dict) and d.get("label") in ("face", "text")]
        self.looked_around = False  # whether the first output was compared with the original
        self.known = {}  # what the original holds, read once: its pixels, its faces' embeddings, its text lines

    def __call__(self, rgb: np.ndarray, whole: bool = False) -> tuple[list[dict], list[str]]:
        return self._edited(rgb) if self.edited else self._redacted(rgb, whole)

    def redacted(self, leaks: list[dict]):
        """`leaks` were redacted: the next check looks around them too."""
        self.regions += leaks

    def _redacted(self, rgb, whole):
        """Any face or readable text line: around the regions each detector found, or over the whole output."""
        c = self.config
        whole = whole or c.everywhere or not self.regions or self._changed_elsewhere(rgb)
        leaks = []
        for label, enabled, detect in (("face", c.faces, self._faces), ("text", c.text, self._text)):
            boxes = [d["box"] for d in self.regions if d["label"] == label]
            if enabled and (whole or boxes):
                leaks += detect(rgb, None if whole else _surroundings(boxes, rgb.shape))
        return leaks, []

    def _changed_elsewhere(self, rgb) -> bool:
        """Whether the output differs from the original outside the surroundings of the regions (an image obscured
        whole, a redaction Verify did not see): then no region tells where a leak could be. Asked once per row,
        about the output as it came in."""
        if self.looked_around:
            return False
        self.looked_around = True
        original = self._original()
        if original is None or original.shape != rgb.shape:
            return True
        areas = _surroundings([d["box"] for d in self.regions], rgb.shape, whole_share=None)
        if areas is None:
            return True
        height, _, channels = rgb.shape
        changed = rgb.reshape(height, -1) != original.reshape(height, -1)  # flat rows: ~20x faster than any(axis=2)
        for x0, y0, x1, y1 in areas:
            changed[y0:y1, x0 * channels : x1 * channels] = False
        return bool(changed.any())

    def _edited(self, rgb):
        """A face of the original's person, or a line of the original's text, over the whole output."""
        c = self.config
        leaks, unchecked = [], []
        original = self._original()
        if c.faces:
            if self.tools.people is not None and original is not None:
                leaks += self._same_people(rgb)
            elif self.tools.faces.find(rgb, c.face_threshold, c.face_max_side, c.face_turns):
                unchecked.append(IDENTITY_NOT_CHECKED)
        if c.text:
            lines = self.tools.text.readable(rgb, c.text_threshold)
            if lines and original is not None:
                leaks += self._same_text(lines)
            elif lines:
                unchecked.append(TEXT_NOT_CHECKED)
        if unchecked and original is None:
            unchecked.append(NO_ORIGINAL)
        return leaks, unchecked

    def _same_people(self, rgb) -> list[dict]:
        found = identity.faces(self.tools.people, rgb)
        known = self._original_faces()
        if not found or not len(known):
            return []
        similarity = (np.stack([f.normed_embedding for f in found]) @ known.T).max(axis=1)
        height, width = rgb.shape[:2]
        return [
            _detection("face", s, np.clip(f.bbox, 0, [width, height, width, height]))
            for f, s in zip(found, similarity, strict=True)
            if s >= self.config.identity_threshold
        ]

    def _same_text(self, lines) -> list[dict]:
        from rapidfuzz import fuzz, utils

        known = self._original_lines()
        leaks = []
        for text, _, box in lines:
            match = max((fuzz.token_set_ratio(text, k, processor=utils.default_process) for k in known), default=0)
            if match / 100 >= self.config.text_match_threshold:
                leaks.append(_detection("text", match / 100, box))
        return leaks

    def _faces(self, rgb, areas) -> list[dict]:
        c = self.config
        find = self.tools.faces.find
        return _in_areas(rgb, areas, lambda part: find(part, c.face_threshold, c.face_max_side, c.face_turns))

    def _text(self, rgb, areas) -> list[dict]:
        return _in_areas(rgb, areas, lambda part: self.tools.text(part, self.config.text_threshold))

    def _original(self) -> np.ndarray | None:
        """The original's pixels, or None when the dataset has none or they cannot be read."""
        if "pixels" not in self.known:
            try:
                self.known["pixels"] = images.decode(self.original, self.config.max_pixels)
            except images.ImageError:  # None is an ImageError too ("missing image")
                self.known["pixels"] = None
        return self.known["pixels"]

    def _original_faces(self) -> np.ndarray:
        if "faces" not in self.known:
            found = identity.faces(self.tools.people, self._original())
            self.known["faces"] = np.stack([f.normed_embedding for f in found]) if found else np.zeros((0, 1))
        return self.known["faces"]

    def _original_lines(self) -> list[str]:
        if "lines" not in self.known:
            lines = self.tools.text.readable(self._original(), self.config.text_threshold)
            self.known["lines"] = [text for text, _, _ in lines]
        return self.known["lines"]


def _surroundings(boxes, shape, whole_share: float | None = WHOLE_SHARE) -> list[tuple[int, int, int, int]] | None:
    """Where to look again for `boxes` (see CONTEXT), merged where they overlap; None (look everywhere) when a box
    locates nothing or they cover more than `whole_share` of the image."""
    height, width = shape[:2]
    areas = []
    for box in boxes:
        try:
            x0, y0, x1, y1 = redact.region(box, 0, width, height)
        except redact.RedactionError:
            return None
        around = min(x1 - x0, y1 - y0) * CONTEXT
        pad_x = max(STRONG.margin * (x1 - x0) + around, (MIN_AREA - (x1 - x0)) / 2)
        pad_y = max(STRONG.margin * (y1 - y0) + around, (MIN_AREA - (y1 - y0)) / 2)
        areas.append(redact.grow((x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y), 0, width, height))
    merged = True
    while merged:  # until no two overlap, so that no pixel is searched twice
        merged = False
        for a in range(len(areas)):
            for b in range(a + 1, len(areas)):
                if _overlap(areas[a], areas[b]):
                    one, two = areas[a], areas.pop(b)
                    areas[a] = (min(one[0], two[0]), min(one[1], two[1]), max(one[2], two[2]), max(one[3], two[3]))
                    merged = True
                    break
            if merged:
                break
    covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in areas)
    return None if whole_share is not None and covered > whole_share * width * height else areas


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _in_areas(rgb, areas, detect) -> list[dict]:
    """`detect` over the whole image (areas None) or over each area, with boxes in the image's coordinates."""
    if areas is None:
        return detect(rgb)
    found = []
    for x0, y0, x1, y1 in areas:
        for d in detect(rgb[y0:y1, x0:x1]):
            box = d["box"]
            found.append({**d, "box": [box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0]})
    return found


def _detection(label, score, box) -> dict:
    return {"label": label, "score": float(score), "box": [float(v) for v in box]}


def _describe(leaks, edited: bool) -> str:
    """ "2 faces, 1 text line" (with "matching" for an edited row: what matched the original)."""
    counts = {label: sum(d["label"] == label for d in leaks) for label in ("face", "text")}
    word = {"face": ("face", "faces"), "text": ("text line", "text lines")}
    kind = "matching " if edited else ""
    return ", ".join(f"{k} {kind}{word[label][k != 1]}" for label, k in counts.items() if k)


def _short(exc: Exception) -> str:
    return shorten(f"{type(exc).__name__}: {exc}", 40)


def action(error: str | None) -> str | None:
    """What Verify did to a row, read from its `u2s_error`: "re_edited" (regions redacted again), "obscured",
    "dropped", or None (nothing)."""
    if not error or MARK not in error:
        return None
    said = error.rsplit(MARK, 1)[1]
    if said.endswith("dropped"):
        return "dropped"
    if said.endswith(OBSCURED):
        return "obscured"
    return "re_edited" if REDONE in said else None


def identity_unchecked(error: str | None) -> bool:
    """Whether Verify could not judge a face of this row's edited output."""
    return bool(error) and MARK in error and IDENTITY_NOT_CHECKED in error.rsplit(MARK, 1)[1]
