"""The editor contract: an editor's frozen settings (`EditorSettings`) and the class that edits with them (`Editor`).

Edit knows editors only through this contract and the registry in `editors/__init__.py`; see there for how to add
one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from ..settings import Settings

# Where a row's prompt can come from: the paper's text priors, the columns the earlier stages write, or "class"
# ("A realistic image of <class>." from `class_column`).
PROMPT_SOURCES = ("c_priv", "c_pub", "c_edit", "c_llm", "class")


@dataclass(frozen=True)
class EditorSettings(Settings):
    """What every diffusion editor's settings share; an editor subclasses it (frozen) with its own settings.

    model / revision: a Hub id or a local folder, and its revision (None: the default branch).
    dtype: "auto" (float16 on CUDA, float32 on the CPU), "float16", "bfloat16" or "float32".
    cpu_offload: False; True streams the model to the GPU piece by piece (accelerate), for small GPUs.
    batch_size: 4 rows per call of `Editor.edit` (a failing call is retried row by row).
    key_column: None; a column with a stable row id to draw each row's seed from (None: the image's pixels).
    class_column / class_names: where the "class" text comes from; integer labels need their names.

    A subclass adds `seed` (Edit draws each row's seed from it and the row key), its other settings (usually `steps`
    and `resolution`), and says every default in its docstring. It answers `prompt_columns()` (the columns a row's
    prompt is read from) and lists what changes the loaded model in `LOAD_SETTINGS` (the per-process cache key).
    A field that allows None but defaults to a value (`steps: int | None = 100`) takes that value when given None.
    """

    LOAD_SETTINGS: ClassVar[tuple[str, ...]] = ("model", "revision", "dtype", "cpu_offload")

    model: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    cpu_offload: bool = False
    batch_size: int = 4
    key_column: str | None = None
    class_column: str | None = None
    class_names: tuple | None = None

    def __post_init__(self):
        kinds = self.field_kinds()
        for f in fields(self):
            if getattr(self, f.name) is None and f.default is not None and type(None) in (kinds[f.name] or ()):
                object.__setattr__(self, f.name, f.default)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        super().__post_init__()

    def prompt_columns(self) -> tuple[str, ...]:
        """The columns (among PROMPT_SOURCES) each row's prompt is read from, in order: one column gives a str per
        row, several a tuple. A row missing any of them is not edited (it is redacted instead)."""
        raise NotImplementedError

    def load_key(self) -> tuple:
        """The settings that change what `Editor.from_pretrained` loads (with the device: the model cache key)."""
        return tuple(getattr(self, name) for name in self.LOAD_SETTINGS)

    def validate(self):
        if not self.model:
            raise ValueError(f"{type(self).__name__} needs model=... (a Hub id or a local folder)")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError("dtype must be auto, bfloat16, float16 or float32")
        columns = self.prompt_columns()
        if any(c not in PROMPT_SOURCES for c in columns):
            raise ValueError(f"prompts must come from {', '.join(PROMPT_SOURCES)}")
        if "class" in columns and not self.class_column:
            raise ValueError("a 'class' prompt needs class_column=...")
        if getattr(self, "resolution", 8) < 8:
            raise ValueError("resolution must be >= 8")


class Editor:
    """A diffusion editor: loaded once per process and device, then asked to edit batches of flagged rows.

    - `from_pretrained(settings, device)`: load the model `settings` name on `device` ("cpu", "cuda:0"); what is
      loaded depends only on `settings.load_key()`, so Edit keeps one per load key and device in each process.
    - `edit(images, prompts, seeds) -> images`: RGB uint8 arrays (H, W, 3) in, arrays of the same sizes out, one
      prompt (see `EditorSettings.prompt_columns`) and one seed per row; a row's result must not depend on the other
      rows of the batch. The other settings (steps, guidance, ...) come from `self.settings`.
    - `check()`: raise when the loaded model no longer is what its settings describe. Edit calls it before every
      batch, outside the row-by-row retry, so such an error stops the map instead of redacting every row.
    - `with_settings(settings)`: the same loaded model with other settings of the same load key.
    """

    def __init__(self, pipe, settings: EditorSettings, device: str):
        self.pipe, self.settings, self.device = pipe, settings, device

    @classmethod
    def from_pretrained(cls, settings: EditorSettings, device: str) -> Editor:
        raise NotImplementedError

    def edit(self, images: list[np.ndarray], prompts: list, seeds: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    def check(self) -> None:
        """Nothing to check unless an editor patches its model after loading."""

    def with_settings(self, settings: EditorSettings) -> Editor:
        if type(settings) is not type(self.settings) or settings.load_key() != self.settings.load_key():
            raise ValueError("with_settings needs settings that load the same model (the same load_key())")
        other = copy.copy(self)
        other.settings = settings
        return other
