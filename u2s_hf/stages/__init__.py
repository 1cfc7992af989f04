from .caption import Caption
from .edit import Edit
from .inspect import Inspect
from .instruct import Instruct
from .score_edit import ScoreEdit
from .verify import Verify

__all__ = ["Caption", "Edit", "Inspect", "Instruct", "ScoreEdit", "Verify"]
