"""A small in-process HTTP server that speaks the chat-completions API with scripted answers.

`script(prompt, image) -> answer` where answer is a string, an int (reply with that HTTP status), a float
(sleep that many seconds, then answer "late"), or a `Reply` (an answer sent late, slowly, padded or broken).
Every request is recorded.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@dataclass(frozen=True)
class Reply:
    """`answer` (a string, or an HTTP status) after `delay` seconds; its body preceded by `padding` spaces (still
    valid JSON), or replaced by `body`; sent one byte at a time spread over `trickle` seconds, so that each byte
    comes well within any read timeout. Every loop is bounded: the handler ends by itself."""

    answer: str | int = "late"
    delay: float = 0.0
    trickle: float = 0.0
    padding: int = 0
    body: bytes | None = None


class ChatServer:
    def __init__(self, script):
        self.script = script
        self.requests: list[dict] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                try:
                    reply = server.script(*_prompt_and_image(body))
                    if not isinstance(reply, Reply):
                        reply = Reply(delay=reply) if isinstance(reply, float) else Reply(reply)
                    time.sleep(reply.delay)
                    answer = reply.answer
                    if isinstance(answer, int):
                        self.send_response(answer)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                        return
                    completion = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
                        ],
                    }
                    data = reply.body if reply.body is not None else json.dumps(completion).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(reply.padding + len(data)))
                    self.end_headers()
                    for start in range(0, reply.padding, 1 << 16):
                        self.wfile.write(b" " * min(1 << 16, reply.padding - start))
                    if not reply.trickle:
                        self.wfile.write(data)
                    for i in range(len(data) if reply.trickle else 0):
                        self.wfile.write(data[i : i + 1])
                        time.sleep(reply.trickle / len(data))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _prompt_and_image(body):
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content, None
    prompt = next(part["text"] for part in content if part["type"] == "text")
    url = next((part["image_url"]["url"] for part in content if part["type"] == "image_url"), None)
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) if url else None
    return prompt, image
