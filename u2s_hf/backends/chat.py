"""What a Stage-1 stage asks a language model: a prompt, maybe an image, and a token budget."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash

from .. import answers, runtime
from ..config import public_url


@dataclass(frozen=True)
class ChatRequest:
    prompt: str
    image: np.ndarray | None = None  # RGB, for vision-language models
    max_new_tokens: int = 64


def load_chat(settings, rank=None) -> Callable[[list[ChatRequest]], list]:
    """`complete(requests) -> answers` for a stage's model settings (`config.ModelSettings`).

    Local models are loaded once per process and device, and shared by every stage that names the same model.
    """
    if settings.backend == "server":
        from .server import ServerChat

        names = ("model", "concurrency", "timeout", "retries", "image_max_side")
        key = tuple(getattr(settings, name) for name in names)
        # The key is logged: the URL shows without credentials, and their hash tells two logins apart.
        url = (public_url(settings.base_url), xxhash.xxh64_hexdigest(settings.base_url.encode()))
        return runtime.cached_model(
            ("server", *url, *key),
            lambda: ServerChat(
                settings.base_url,
                settings.model,
                concurrency=settings.concurrency,
                timeout=settings.timeout,
                retries=settings.retries,
                image_max_side=settings.image_max_side,
            ),
        ).complete
    from .local import LocalChat

    runtime.configure_threads()
    device = runtime.device_for(rank)
    vision = settings.backend == "vlm"
    model = runtime.cached_model(
        (settings.backend, settings.model, settings.revision, settings.dtype, device),
        lambda: LocalChat(
            settings.model, settings.revision, device, vision, settings.dtype, settings.trust_remote_code
        ),
    )
    return functools.partial(model.complete, batch_size=settings.batch_size, image_max_side=settings.image_max_side)


# How every failed model request starts its reason in `u2s_error` (reports count these rows).
FAILED = "model request failed"


def failure(exc: Exception) -> str:
    """A short reason for a request that failed."""
    return f"{FAILED}: {type(exc).__name__}: {exc}"[:200]


def parse_reply(reply, parse):
    """`parse(reply)`; a request that failed (its exception in place of the answer) raises AnswerError with why."""
    if isinstance(reply, Exception):
        raise answers.AnswerError(failure(reply))
    return parse(reply)
