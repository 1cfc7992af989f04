"""The chat model a stage's settings name: loaded in this process (`local`) or behind a server (`server`), once per
process and shared. Requests are `request.ChatRequest`s; answers are read by `u2s_hf.answers`."""

from __future__ import annotations

import functools
from collections.abc import Callable

import xxhash

from .. import runtime
from ..config import public_url
from .request import ChatRequest


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
