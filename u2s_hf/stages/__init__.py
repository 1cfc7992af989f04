from .caption import Caption
from .edit import Edit
from .inspect import Inspect
from .instruct import Instruct

__all__ = ["Caption", "Edit", "Inspect", "Instruct"]
