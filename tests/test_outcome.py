"""The per-batch fail-closed bookkeeping every stage uses (`stages.base.Outcome`), and the stages that rely on it."""

import io

import datasets
import numpy as np
import pytest
from PIL import Image

import u2s_hf as u2s
from u2s_hf import answers, images
from u2s_hf.stages.base import (
    DETECTIONS,
    DROPPED,
    EDITED,
    ERROR,
    KEPT_SAFE,
    REASON_LIMIT,
    REDACTED,
    Outcome,
    read_replies,
    shorten,
)

from chat_server import ChatServer


def png(h, w, seed=0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG")
    return out.getvalue()


def earlier(statuses, errors) -> dict:
    return {"u2s_status": statuses, "u2s_error": errors}


def test_an_earlier_error_is_kept_and_new_reasons_follow_it():
    outcome = Outcome(earlier(["error", "error", None, "redacted"], ["not read", None, None, "note"]), 4)
    assert outcome.failed(0) and outcome.failed(1) and not outcome.failed(2)
    assert outcome.columns()["u2s_error"][1] == "error"  # an error row always says why
    outcome.fail(0, "no image")
    outcome.fail(2, "model request failed: boom")
    outcome.done(3, REDACTED, "no prompt to edit with")
    assert outcome.columns() == {
        "u2s_status": ["error", "error", "error", "redacted"],
        "u2s_error": ["not read; no image", "error", "model request failed: boom", "note; no prompt to edit with"],
    }


def test_a_fresh_outcome_keeps_only_earlier_errors():
    outcome = Outcome(earlier(["error", "redacted", None], ["not read", "old reason", "flag answer"]), 3, fresh=True)
    assert outcome.columns() == {"u2s_status": ["error", None, None], "u2s_error": ["not read", None, None]}
    outcome.note(1, "flag answer not understood")
    assert outcome.columns()["u2s_status"][1] is None and outcome.columns()["u2s_error"][1] == (
        "flag answer not understood"
    )


def test_a_batch_without_outcome_columns_starts_empty():
    outcome = Outcome({"image": [None, None]}, 2)
    assert outcome.columns() == {"u2s_status": [None, None], "u2s_error": [None, None]}


def test_final_statuses():
    outcome = Outcome(earlier([None, None, "error"], ["stale note", "caption note", "caption failed"]), 3)
    outcome.done(0, KEPT_SAFE)  # kept as it was: nothing to explain
    outcome.done(1, EDITED)
    outcome.done(2, DROPPED, "flagged, but no region was located: dropped")
    assert outcome.columns() == {
        "u2s_status": ["kept_safe", "edited", "dropped"],
        "u2s_error": [None, "caption note", "caption failed; flagged, but no region was located: dropped"],
    }
    for status in (ERROR, "fine", None):
        with pytest.raises(ValueError, match="not a final status"):
            outcome.done(0, status)


def test_reasons_are_shortened_once_keeping_their_start_and_end():
    long = "detector failed: RuntimeError: " + "x" * 1000 + ": whole image obscured"
    short = shorten(long)
    assert len(short) == REASON_LIMIT and short.count("...") == 1
    assert short.startswith("detector failed: RuntimeError: xxx") and short.endswith("xxx: whole image obscured")
    assert shorten(short) == short and shorten("fits") == "fits" and shorten(None) is None
    outcome = Outcome(earlier([None, "error"], [None, "e" * 150]), 2)
    outcome.fail(0, long)
    outcome.done(1, REDACTED, "redaction failed (" + "y" * 300 + "): whole image obscured")
    first, second = outcome.columns()["u2s_error"]
    assert first == short
    assert len(second) <= REASON_LIMIT and second.count("...") == 1
    assert second.startswith("eeee") and second.endswith("y): whole image obscured")


def test_a_decode_failure_is_a_row_error_with_the_decoders_reason():
    big, small, broken = png(300, 400), png(20, 30), b"not an image at all"
    outcome = Outcome(earlier([None, None, None, "error"], [None, None, None, "image cell not read"]), 4)
    with pytest.raises(images.ImageError) as over:
        images.decode(big, 50_000)
    with pytest.raises(images.ImageError) as unreadable:
        images.decode(broken)
    assert outcome.decode(0, big, 50_000) is None
    assert outcome.decode(1, broken, None) is None
    assert outcome.decode(2, big, None, max_side=100).shape == (75, 100, 3)  # the pixel guard is None: Pillow's
    assert outcome.decode(3, broken, None) is None  # already failed: the earlier reason explains it alone
    assert outcome.columns() == {
        "u2s_status": ["error", "error", None, "error"],
        "u2s_error": [str(over.value), str(unreadable.value), None, "image cell not read"],
    }
    assert outcome.decode(0, small, 50_000).shape == (20, 30, 3)


def test_read_replies_fails_rows_whose_reply_is_a_failure_or_unreadable():
    outcome = Outcome(earlier([None, None, None], ["note", None, None]), 3)
    replies = [TimeoutError("no answer within 2 s"), "Edit: make it blue", "nothing useful"]

    def parse(reply):
        if not reply.startswith("Edit:"):
            raise answers.AnswerError("edit instruction not found")
        return reply[5:].strip()

    assert read_replies([0, 1, 2], replies, parse, outcome) == {1: "make it blue"}
    assert outcome.columns() == {
        "u2s_status": ["error", None, "error"],
        "u2s_error": [
            "note; model request failed: TimeoutError: no answer within 2 s",
            None,
            "edit instruction not found",
        ],
    }


def test_caption_honours_max_pixels_without_asking_the_model():
    answer = "PRIVACY_REVIEW:\n- face: people\nPRIVATE_CAPTION: Ada at her desk.\nPUBLIC_CAPTION: A person at a desk."
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(300, 400), "path": None}, {"bytes": png(20, 30, 1), "path": None}]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    with ChatServer(lambda prompt, image: answer) as server:
        settings = {"backend": "server", "model": "org/vlm", "base_url": server.base_url, "retries": 0}
        out = ds.map(u2s.Caption(max_pixels=50_000, **settings), batched=True)
        assert len(server.requests) == 1  # only the small image was sent
    with pytest.raises(images.ImageError) as over:
        images.decode(png(300, 400), 50_000)
    assert out["u2s_status"] == ["error", None]
    assert out["u2s_error"][0] == str(over.value) and out["c_pub"] == [None, "A person at a desk."]


def test_edit_shortens_a_long_redaction_failure_once_and_keeps_what_was_done(monkeypatch):
    from u2s_hf.editors import redact

    def broken(*args, **kwargs):
        raise RuntimeError("z" * 1000)

    monkeypatch.setattr(redact, "redact", broken)
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.open(io.BytesIO(png(64, 64)))],
            "privacy_flag": [True],
            "detections": [[{"label": "face", "score": 0.9, "box": [8, 8, 40, 40]}]],
        },
        features=datasets.Features(
            {"image": datasets.Image(), "privacy_flag": datasets.Value("bool"), "detections": DETECTIONS}
        ),
    )
    row = ds.map(u2s.Edit(), batched=True)[0]
    assert row["u2s_status"] == "redacted" and row["safe_image"] is not None
    reason = row["u2s_error"]
    assert len(reason) <= REASON_LIMIT and reason.count("...") == 1
    assert reason.startswith("redaction failed (RuntimeError: zzz") and reason.endswith("whole image obscured")
