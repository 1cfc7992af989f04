"""An OpenAI-compatible chat-completions server (vLLM / SGLang `serve`, or any hosted endpoint).

Requests of a batch run concurrently (bounded); the `openai` client retries connection errors, 429 and 5xx with
exponential backoff. Each request, retries included, is abandoned `timeout` seconds after it was sent (a server
that trickles its answer byte by byte never gets it accepted late), and an answer body over MAX_ANSWER_BYTES is
refused. A request that fails comes back as its exception, so the stage can give that row an error instead of
failing the map.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os

from .. import images
from .request import ChatRequest

MAX_ANSWER_BYTES = 4 << 20  # a chat completion is a few KB; a bigger body is a broken or hostile server


class ServerChat:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        retries: int = 3,
        image_max_side: int = 1024,
    ):
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
        async with openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=self.retries
        ) as client:

            async def one(request: ChatRequest):
                async with limit:  # waiting for a slot is not part of the request's time
                    try:
                        content = self._content(request)
                        return await asyncio.wait_for(self._ask(client, content, request.max_new_tokens), self.timeout)
                    except asyncio.TimeoutError:  # httpx's own timeouts are per read: this bounds the whole request
                        return TimeoutError(f"no answer within {self.timeout:g} s")
                    except Exception as exc:  # returned, not raised: one failed row must not end the batch
                        return exc

            return await asyncio.gather(*(one(r) for r in requests))

    async def _ask(self, client, content, max_tokens: int) -> str:
        """One chat completion, its body read with a size limit."""
        async with client.chat.completions.with_streaming_response.create(
            model=self.model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0.0
        ) as response:
            body = bytearray()
            async for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise ValueError(f"answer body over {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError) as exc:
            raise ValueError(f"answer is not a chat completion: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, (str, type(None))):
            raise ValueError(f"answer content is {type(answer).__name__}, not text")
        return answer or ""

    def _content(self, request: ChatRequest):
        if request.image is None:
            return request.prompt
        return [
            {"type": "image_url", "image_url": {"url": images.data_url(request.image, self.image_max_side)}},
            {"type": "text", "text": request.prompt},
        ]


def _run(coroutine):
    """asyncio.run, also from code that is itself called inside a running event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
