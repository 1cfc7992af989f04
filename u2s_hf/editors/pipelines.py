"""What the diffusion editors share: loading, device placement and the aspect-keeping fit to the model's size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import runtime

# Stable Diffusion 1.x checkpoints ship a safety checker that blanks images it judges unsafe: an edit must never be
# replaced by a black image behind Edit's back, so the SD 1.x editors load without it.
NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}


def load(pipeline_class, settings, device: str, **components):
    """`pipeline_class.from_pretrained` for an editor's settings: its model and revision, in its dtype on `device`
    (`components` replace or leave out parts of the pipeline)."""
    dtype = runtime.torch_dtype(settings.dtype, device)
    return pipeline_class.from_pretrained(settings.model, revision=settings.revision, dtype=dtype, **components)


def place(pipe, device: str, cpu_offload: bool):
    """Move the pipeline to its device (or let accelerate stream it there), without progress bars."""
    if device.startswith("cuda") and cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fit_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The size to edit at: the longest side scaled to `resolution`, each side rounded to `multiple` (>= multiple)."""
    scale = resolution / max(width, height)
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def by_fit_size(images: list[np.ndarray], resolution: int, multiple: int) -> dict[tuple[int, int], list[int]]:
    """Row indices grouped by the size they are edited at, so each group runs as one batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, rgb in enumerate(images):
        groups.setdefault(fit_size(rgb.shape[1], rgb.shape[0], resolution, multiple), []).append(i)
    return groups


def at_size(rgb: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rgb).resize(size, Image.BICUBIC)


def back_to(edited: Image.Image, like: np.ndarray) -> np.ndarray:
    """An edited image resized back to the size of the row's input."""
    return np.asarray(edited.convert("RGB").resize((like.shape[1], like.shape[0]), Image.BICUBIC))
