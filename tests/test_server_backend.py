import asyncio

import numpy as np

from chat_server import ChatServer
from u2s_hf.backends.chat import ChatRequest
from u2s_hf.backends.server import ServerChat

IMAGE = np.zeros((600, 1200, 3), np.uint8)


def test_answers_come_back_in_order_with_images_and_settings():
    seen_sizes = []

    def script(prompt, image):
        if image is not None:
            seen_sizes.append(image.size)
        return f"echo {prompt}"

    with ChatServer(script) as server:
        chat = ServerChat(server.base_url, "some/model", image_max_side=512)
        out = chat.complete([ChatRequest("a", IMAGE, 7), ChatRequest("b"), ChatRequest("c", IMAGE)])
    assert out == ["echo a", "echo b", "echo c"]
    assert seen_sizes == [(512, 256), (512, 256)]
    first = next(r for r in server.requests if isinstance(r["messages"][0]["content"], list)
                 and r["messages"][0]["content"][1]["text"] == "a")  # requests arrive concurrently, in any order
    assert first["model"] == "some/model" and first["max_tokens"] == 7 and first["temperature"] == 0.0


def test_transient_failures_are_retried_and_hard_ones_become_row_errors():
    attempts = {"flaky": 0}

    def script(prompt, image):
        if prompt == "flaky":
            attempts["flaky"] += 1
            return 503 if attempts["flaky"] < 3 else "finally"
        return 400 if prompt == "bad" else "ok"

    with ChatServer(script) as server:
        out = ServerChat(server.base_url, "m", retries=3).complete(
            [ChatRequest("flaky"), ChatRequest("bad"), ChatRequest("fine")])
    assert out[0] == "finally" and attempts["flaky"] == 3
    assert isinstance(out[1], Exception) and out[2] == "ok"


def test_timeouts_become_row_errors():
    with ChatServer(lambda prompt, image: 3.0 if prompt == "slow" else "quick") as server:
        out = ServerChat(server.base_url, "m", timeout=0.5, retries=0).complete(
            [ChatRequest("slow"), ChatRequest("fast")])
    assert isinstance(out[0], Exception) and out[1] == "quick"


def test_concurrency_is_bounded():
    with ChatServer(lambda prompt, image: 0.2) as server:
        out = ServerChat(server.base_url, "m", concurrency=3).complete([ChatRequest(str(i)) for i in range(9)])
    assert out == ["late"] * 9 and server.peak == 3


def test_works_inside_a_running_event_loop():
    async def notebook_cell(chat):
        return chat.complete([ChatRequest("x")])

    with ChatServer(lambda prompt, image: "ok") as server:
        assert asyncio.run(notebook_cell(ServerChat(server.base_url, "m"))) == ["ok"]
