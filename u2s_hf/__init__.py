"""u2s_hf: privacy-safe image datasets on Hugging Face `datasets` (the Unsafe2Safe method)."""
__version__ = "0.1.0"

from .config import STATUSES, EditConfig, InspectConfig  # noqa: E402
from .pipeline import Preset, anonymize, preset  # noqa: E402
from .stages import Edit, Inspect  # noqa: E402

# Ready map functions with the lite preset's settings: ds.map(u2s.inspect, batched=True).
inspect = preset("lite").inspect
edit = preset("lite").edit

__all__ = ["Edit", "EditConfig", "Inspect", "InspectConfig", "Preset", "STATUSES", "__version__", "anonymize",
           "edit", "inspect", "preset"]
