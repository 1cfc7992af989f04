"""What Edit calls on flagged rows: the diffusion editors, found by name here, and `redact`, its own fallback.

Adding an editor: one module in this package with its frozen settings (a subclass of `base.EditorSettings`: its
defaults, each said in its docstring, its checks, `prompt_columns()`, `LOAD_SETTINGS`) and its class (a subclass of
`base.Editor`: `from_pretrained(settings, device)`, `edit(images, prompts, seeds)`), plus one line below. Then
`Edit(editor=NAME, **settings)` takes exactly those settings, refuses the other editors' by name, and keys the
model cache and the dataset cache on them; stages/edit.py needs no change.
"""

from __future__ import annotations

from .base import Editor, EditorSettings
from .flowedit import FlowEdit, FlowEditSettings
from .freeprompt import FreePrompt, FreePromptSettings
from .instruct_pix2pix import InstructPix2Pix, InstructPix2PixSettings

# name -> (settings class, editor class)
EDITORS: dict[str, tuple[type[EditorSettings], type[Editor]]] = {
    "instruct-pix2pix": (InstructPix2PixSettings, InstructPix2Pix),
    "flowedit": (FlowEditSettings, FlowEdit),
    "freeprompt": (FreePromptSettings, FreePrompt),
}
