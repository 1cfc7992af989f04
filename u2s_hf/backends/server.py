"""An OpenAI-compatible chat-completions server (vLLM / SGLang `serve`, or any hosted endpoint).

Requests of a batch run concurrently (bounded), each with a timeout; the `openai` client retries connection errors,
429 and 5xx with exponential backoff. A request that still fails comes back as its exception, so the stage can
give that row an error instead of failing the map.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os

from .. import images
from .chat import ChatRequest


class ServerChat:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 16,
                 timeout: float = 120.0, retries: int = 3, image_max_side: int = 1024):
        self.base_url, self.model = base_url, model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # vLLM accepts any key by default
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.image_max_side = image_max_side

    def complete(self, requests: list[ChatRequest]) -> list[str | Exception]:
        """The answer text for each request, or the exception that ended it."""
        return _run(self._complete(requests))

    async def _complete(self, requests):
        import openai

        limit = asyncio.Semaphore(self.concurrency)
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout,
                                      max_retries=self.retries) as client:
            async def one(request: ChatRequest):
                async with limit:
                    try:
                        response = await client.chat.completions.create(
                            model=self.model, messages=[{"role": "user", "content": self._content(request)}],
                            max_tokens=request.max_new_tokens, temperature=0.0)
                        return response.choices[0].message.content or ""
                    except Exception as exc:  # returned, not raised: one failed row must not end the batch
                        return exc

            return await asyncio.gather(*(one(r) for r in requests))

    def _content(self, request: ChatRequest):
        if request.image is None:
            return request.prompt
        return [{"type": "image_url", "image_url": {"url": images.data_url(request.image, self.image_max_side)}},
                {"type": "text", "text": request.prompt}]


def _run(coroutine):
    """asyncio.run, also from code that is itself called inside a running event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
