"""Settings: the checked base of every config (stage configs in `config.py`, editor settings in `editors/`).

A leaf module (it imports nothing from the package), so that both `config.py` and the editors can build on it.
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import fields

# Caps on pixelation, measured against identity (ArcFace as in tests/test_identity.py, a match is cosine >= 0.35;
# a dlib face encoder agreed on 8 cells). Face regions (grown by 0.25) pixelated to 8 cells across their
# longer side matched no original face on any test photo (highest cosine 0.23), while at 12 and 16 cells the
# crowd photo's small faces matched again (0.57 and 0.66): so regions get at most 8. Whole images obscured with 16
# cells left no detectable face even when the image is one face (25 face crops of those photos): at most 16.
MAX_CELLS = 8
MAX_WHOLE_IMAGE_CELLS = 16


def _positive(v):
    return v > 0


# Allowed values of numeric settings, by field name (None, where a field allows it, is always allowed).
RANGES = {
    **dict.fromkeys(
        ("face_threshold", "text_threshold", "identity_threshold", "text_match_threshold"),
        (lambda v: 0 < v <= 1, "in (0, 1]"),
    ),
    **dict.fromkeys(
        (
            "face_max_side",
            "text_max_side",
            "image_max_side",
            "max_new_tokens",
            "merge_max_new_tokens",
            "resolution",
            "batch_size",
            "steps",
            "max_pixels",
            "timeout",
            "concurrency",
            "threads",
        ),
        (_positive, "> 0"),
    ),
    **dict.fromkeys(("retries", "rounds"), (lambda v: v >= 0, ">= 0")),
    "margin": (lambda v: v >= 0, ">= 0"),
    "self_replace_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "cells": (lambda v: 1 <= v <= MAX_CELLS, f"between 1 and {MAX_CELLS} (more cells keep faces recognisable)"),
    "whole_image_cells": (
        lambda v: 1 <= v <= MAX_WHOLE_IMAGE_CELLS,
        f"between 1 and {MAX_WHOLE_IMAGE_CELLS} (more cells keep faces recognisable)",
    ),
}
_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "None"}


@functools.cache
def _field_types(config_class) -> dict:
    """{field: the types its annotation allows}; None for fields that check themselves (object, tuple)."""
    hints = typing.get_type_hints(config_class)
    kinds = {}
    for f in fields(config_class):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        kinds[f.name] = allowed if all(k in _KINDS for k in allowed) else None
    return kinds


def _is(kind, value) -> bool:
    """Whether `value` is of the annotated `kind`: a bool is not an int, an int is a float, NaN/inf are not."""
    if kind is type(None):
        return value is None
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


class Settings:
    """Base of every config: each field is checked against its annotation and its range (RANGES) when the config
    is made, then the config's own `validate()` runs. A setting that cannot be used is refused, never ignored."""

    def __post_init__(self):
        for name, kinds in _field_types(type(self)).items():
            value = getattr(self, name)
            if kinds is not None and not any(_is(kind, value) for kind in kinds):
                raise TypeError(f"{name} must be {' or '.join(_KINDS[k] for k in kinds)}, not {value!r}")
            if name in RANGES and value is not None and not RANGES[name][0](value):
                raise ValueError(f"{name} must be {RANGES[name][1]}, not {value!r}")
        self.validate()

    def validate(self):
        """The config's own checks (settings that depend on each other)."""

    @classmethod
    def setting_names(cls) -> set[str]:
        """The settings this config takes by name (its fields, unless a config takes more)."""
        return {f.name for f in fields(cls)}

    @classmethod
    def field_kinds(cls) -> dict:
        """{field: the types its annotation allows}; None for fields that check themselves (object, tuple)."""
        return _field_types(cls)

    def refuse_changed(self, names, owner: str, here: str, defaults: dict | None = None):
        """Refuse any of `names` changed from its default (or `defaults[name]`): it is `owner`'s, unused `here`."""
        defaults = {**{f.name: f.default for f in fields(self)}, **(defaults or {})}
        for name in names:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{name} is {owner}; {here} does not use it (leave it at {defaults[name]!r})")
