from .caption import Caption
from .edit import Edit
from .inspect import Inspect
from .instruct import Instruct
from .verify import Verify

__all__ = ["Caption", "Edit", "Inspect", "Instruct", "Verify"]
