"""A small in-process HTTP server that speaks the chat-completions API with scripted answers.

`script(prompt, image) -> answer` where answer is a string, an int (reply with that HTTP status), or a float
(sleep that many seconds, then answer "late"). Every request is recorded.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


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
                    answer = server.script(*_prompt_and_image(body))
                    if isinstance(answer, float):
                        time.sleep(answer)
                        answer = "late"
                    if isinstance(answer, int):
                        self.send_response(answer)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                        return
                    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": answer}}]}
                    data = json.dumps(reply).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
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
