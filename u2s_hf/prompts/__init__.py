"""Prompt templates (our own wording of the paper's structure), read from the .txt files beside this module."""

from __future__ import annotations

import functools
import string
from importlib import resources


@functools.cache
def template(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def render(name: str, **fields) -> str:
    """The template with its `$fields` filled; a missing field is an error, not a silent blank."""
    return string.Template(template(name)).substitute(fields).strip()
