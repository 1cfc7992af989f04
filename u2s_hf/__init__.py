"""u2s_hf: privacy-safe image datasets on Hugging Face `datasets` (the Unsafe2Safe method)."""

from .config import STATUSES, CaptionConfig, EditConfig, InspectConfig, InstructConfig
from .pipeline import Preset, anonymize, preset
from .stages import Caption, Edit, Inspect, Instruct
from .version import __version__

# Ready map functions: ds.map(u2s.inspect, batched=True). inspect/edit: the lite preset (offline, CPU);
# caption/instruct: the paper preset's models (loaded on first use).
inspect = preset("lite").inspect
edit = preset("lite").edit
caption = preset("paper").caption
instruct = preset("paper").instruct

__all__ = [
    "STATUSES",
    "Caption",
    "CaptionConfig",
    "Edit",
    "EditConfig",
    "Inspect",
    "InspectConfig",
    "Instruct",
    "InstructConfig",
    "Preset",
    "__version__",
    "anonymize",
    "caption",
    "edit",
    "inspect",
    "instruct",
    "preset",
]
