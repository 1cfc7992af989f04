"""What a Stage-1 stage asks a language model: a prompt, maybe an image, and a token budget."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .. import runtime


@dataclass(frozen=True)
class ChatRequest:
    prompt: str
    image: np.ndarray | None = None  # RGB, for vision-language models
    max_new_tokens: int = 64


def load_chat(settings):
    """The process's client for a stage's model settings (`config.ModelSettings`)."""
    from ..config import ModelSettings
    from .server import ServerChat

    key = tuple(getattr(settings, f.name) for f in fields(ModelSettings))
    return runtime.cached_model(("chat", *key), lambda: ServerChat(
        settings.base_url, settings.model, concurrency=settings.concurrency, timeout=settings.timeout,
        retries=settings.retries, image_max_side=settings.image_max_side))


def failure(exc: Exception) -> str:
    """A short reason for a request that failed."""
    return f"model request failed: {type(exc).__name__}: {exc}"[:200]
