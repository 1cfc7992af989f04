import asyncio

import numpy as np
import pytest

import u2s_hf as u2s
from u2s_hf.backends.request import ChatRequest
from u2s_hf.backends.server import MAX_ANSWER_BYTES, ServerChat

import corpus
from chat_server import ChatServer, Reply

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
    first = next(
        r
        for r in server.requests
        if isinstance(r["messages"][0]["content"], list) and r["messages"][0]["content"][1]["text"] == "a"
    )  # requests arrive concurrently, in any order
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
            [ChatRequest("flaky"), ChatRequest("bad"), ChatRequest("fine")]
        )
    assert out[0] == "finally" and attempts["flaky"] == 3
    assert isinstance(out[1], Exception) and out[2] == "ok"


def test_timeouts_become_row_errors():
    with ChatServer(lambda prompt, image: 3.0 if prompt == "slow" else "quick") as server:
        out = ServerChat(server.base_url, "m", timeout=0.5, retries=0).complete(
            [ChatRequest("slow"), ChatRequest("fast")]
        )
    assert isinstance(out[0], Exception) and out[1] == "quick"


def test_an_answer_trickled_byte_by_byte_is_abandoned_after_the_timeout():
    # Each byte comes long before httpx's per-read timeout; the whole body would take 6 s.
    trickled = Reply("PRIVACY_FLAG: FALSE", trickle=6.0)
    with ChatServer(lambda prompt, image: trickled if prompt == "slow" else "quick") as server:
        out = ServerChat(server.base_url, "m", timeout=2).complete([ChatRequest("slow"), ChatRequest("fast")])
    assert isinstance(out[0], TimeoutError) and str(out[0]) == "no answer within 2 s"
    assert out[1] == "quick"


def test_retries_count_against_the_timeout():
    attempts = []

    def script(prompt, image):  # two slow 503s (each well within the per-read timeout), then the answer
        attempts.append(prompt)
        return Reply(503, delay=1.2) if len(attempts) < 3 else "PRIVACY_FLAG: FALSE"

    with ChatServer(script) as server:
        out = ServerChat(server.base_url, "m", timeout=2, retries=3).complete([ChatRequest("x")])
    assert isinstance(out[0], TimeoutError) and len(attempts) < 3  # the answering attempt was never made


def test_a_trickled_flag_answer_is_an_error_row_that_stays_flagged(photos):
    rows = corpus.image_dataset({"coffee": photos["coffee"], "small": photos["coffee"].resize((64, 64))})

    def script(prompt, image):  # the same answer: trickled for the big image, at once for the small one
        return Reply("PRIVACY_FLAG: FALSE", trickle=6.0) if image.width > 64 else "PRIVACY_FLAG: FALSE"

    with ChatServer(script) as server:
        stage = u2s.Inspect(backend="server", base_url=server.base_url, model="m", timeout=2, debug_column="raw")
        out = rows.map(stage, batched=True)
    assert out["privacy_flag"] == [True, False] and out["u2s_status"] == ["error", None]
    assert out["u2s_error"][0] == "model request failed: TimeoutError: no answer within 2 s"
    assert out["raw"] == [None, "PRIVACY_FLAG: FALSE"]


def test_a_huge_answer_is_refused():
    huge = Reply("PRIVACY_FLAG: FALSE", padding=MAX_ANSWER_BYTES)  # valid JSON, a little over the limit
    with ChatServer(lambda prompt, image: huge if prompt == "huge" else "ok") as server:
        out = ServerChat(server.base_url, "m", retries=0).complete([ChatRequest("huge"), ChatRequest("fine")])
    assert isinstance(out[0], ValueError) and f"over {MAX_ANSWER_BYTES} bytes" in str(out[0])
    assert out[1] == "ok"


@pytest.mark.parametrize(
    "body, why",
    [(b'{"choices": [{"message": {"content": 5}}]}', "not text"), (b"<html>busy</html>", "not a chat completion")],
)
def test_an_answer_that_is_not_chat_text_is_a_row_error(body, why):
    with ChatServer(lambda prompt, image: Reply(body=body)) as server:
        out = ServerChat(server.base_url, "m", retries=0).complete([ChatRequest("x")])
    assert isinstance(out[0], ValueError) and why in str(out[0])


def test_concurrency_is_bounded():
    with ChatServer(lambda prompt, image: 0.2) as server:
        out = ServerChat(server.base_url, "m", concurrency=3).complete([ChatRequest(str(i)) for i in range(9)])
    assert out == ["late"] * 9 and server.peak == 3


def test_works_inside_a_running_event_loop():
    async def notebook_cell(chat):
        return chat.complete([ChatRequest("x")])

    with ChatServer(lambda prompt, image: "ok") as server:
        assert asyncio.run(notebook_cell(ServerChat(server.base_url, "m"))) == ["ok"]
