"""u2s_hf: privacy-safe image datasets on Hugging Face `datasets` (the Unsafe2Safe method)."""

from .config import STATUSES, CaptionConfig, EditConfig, InspectConfig, InstructConfig, ScoreEditConfig, VerifyConfig
from .pipeline import Preset, anonymize, preset
from .publish import publish  # u2s_hf.publish is this function; other names: from u2s_hf.publish import ...
from .stages import Caption, Edit, Inspect, Instruct, ScoreEdit, Verify
from .version import __version__

# Ready map functions: ds.map(u2s.inspect, batched=True). inspect/edit/verify: the lite preset (offline, CPU);
# caption/instruct: the paper preset's models (loaded on first use).
inspect = preset("lite").inspect
edit = preset("lite").edit
verify = preset("lite").verify
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
    "ScoreEdit",
    "ScoreEditConfig",
    "Verify",
    "VerifyConfig",
    "__version__",
    "anonymize",
    "caption",
    "edit",
    "inspect",
    "instruct",
    "preset",
    "publish",
    "verify",
]
