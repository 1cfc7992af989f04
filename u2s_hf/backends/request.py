"""What a Stage-1 stage asks a language model: a prompt, maybe an image, and a token budget (every chat backend
takes a list of these; `chat.load_chat` picks the backend)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChatRequest:
    prompt: str
    image: np.ndarray | None = None  # RGB, for vision-language models
    max_new_tokens: int = 64
