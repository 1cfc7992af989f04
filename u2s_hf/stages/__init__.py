from .edit import Edit
from .inspect import Inspect

__all__ = ["Edit", "Inspect"]
