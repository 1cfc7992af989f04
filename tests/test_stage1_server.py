"""Stage 1 (flag, captions, instruction, merge) against an OpenAI-compatible server with scripted answers."""

import os

import numpy as np
import pytest
from datasets.fingerprint import Hasher

import u2s_hf as u2s

import corpus
from chat_server import ChatServer

PEOPLE = ("astronaut", "camera", "grace_hopper")
CAPTION = """PRIVACY_FLAG: TRUE
PRIVACY_REVIEW:
- face: people
- name tag: professional and school settings
PRIVATE_CAPTION: Grace Hopper in uniform, name tag COMO HOPPER.
PUBLIC_CAPTION: A person in a dark uniform in front of a flag.
"""


def script(photos):
    def which(image):
        """The photo the server was sent (same size, closest mean: transport is JPEG)."""
        if image is None:
            return None
        mean = np.asarray(image.convert("RGB"), float).mean()
        same = [n for n in photos if photos[n].size == image.size]
        return min(same, key=lambda n: abs(np.asarray(photos[n].convert("RGB"), float).mean() - mean), default=None)

    def answer(prompt, image):
        name = which(image)
        if prompt.startswith("You check images"):
            return {"chelsea": "hmm, hard to say"}.get(name, f"PRIVACY_FLAG: {'TRUE' if name in PEOPLE else 'FALSE'}")
        if prompt.startswith("You prepare images"):
            return {"camera": "PRIVATE_CAPTION: a man with a camera", "astronaut": 400}.get(name, CAPTION)
        if prompt.startswith("This describes"):
            return 'Edit: "make the person a tall man with curly red hair, a green sweater and freckles"'
        if prompt.startswith("Combine"):
            return "A tall man with curly red hair in a green sweater stands in front of a flag."
        return 500

    return answer


@pytest.fixture
def server(photos):
    with ChatServer(script(photos)) as running:
        yield running


def settings(server, **more):
    return {"backend": "server", "model": "org/vlm", "base_url": server.base_url, "retries": 0, **more}


@pytest.fixture
def rows(photos, tmp_path):
    names = ("astronaut", "camera", "grace_hopper", "coffee", "chelsea")
    return corpus.image_dataset({n: photos[n] for n in names}, tmp_path / "ds")


def test_flags_from_the_model(server, rows):
    out = rows.map(u2s.Inspect(**settings(server, debug_column="flag_answer")), batched=True, batch_size=2)
    assert out["privacy_flag"] == [True, True, True, False, True]
    assert out["u2s_error"][4] == "flag answer not understood: counted as flagged"
    assert out["flag_answer"][3] == "PRIVACY_FLAG: FALSE"
    assert out["detections"] == [[]] * 5
    prompt = server.requests[0]["messages"][0]["content"][1]["text"]
    assert "health:" in prompt and "PRIVACY_FLAG: TRUE" in prompt


def test_custom_criteria_reach_the_prompt_and_the_cache_key(server, rows):
    narrow = u2s.Inspect(**settings(server, criteria={"faces": "any human face"}))
    rows.map(narrow, batched=True)
    prompt = server.requests[-1]["messages"][0]["content"][1]["text"]
    assert "- faces: any human face" in prompt and "health" not in prompt
    assert Hasher.hash(narrow) != Hasher.hash(u2s.Inspect(**settings(server)))
    other_model = u2s.Inspect(**settings(server, model="org/other"))
    assert Hasher.hash(other_model) != Hasher.hash(u2s.Inspect(**settings(server)))


def test_captions_only_for_flagged_rows_and_errors_fail_closed(server, rows):
    flagged = rows.map(u2s.Inspect(**settings(server)), batched=True)
    before = len(server.requests)
    out = flagged.map(u2s.Caption(**settings(server)), batched=True)
    assert len(server.requests) - before == 4  # coffee was not flagged: no request
    grace = out[2]
    assert grace["c_pub"] == "A person in a dark uniform in front of a flag."
    assert "COMO HOPPER" in grace["c_priv"]
    assert grace["privacy_review"][1] == "name tag: professional and school settings"
    assert out[3]["c_pub"] is None and out[3]["u2s_status"] is None
    camera, astronaut = out[1], out[0]
    assert camera["u2s_status"] == "error" and "PUBLIC_CAPTION" in camera["u2s_error"] and camera["c_pub"] is None
    assert astronaut["u2s_status"] == "error" and "model request failed" in astronaut["u2s_error"]
    assert camera["privacy_flag"] and astronaut["privacy_flag"]


def test_instructions_use_the_public_caption_only_and_merge_class_aware(server, photos):
    ds = (
        corpus.image_dataset({"grace_hopper": photos["grace_hopper"]})
        .add_column("c_pub", ["A person in a dark uniform in front of a flag."])
        .add_column("label", [1])
    )
    stage = u2s.Instruct(**settings(server, class_column="label", class_names=["cat", "officer"]))
    out = ds.map(stage, batched=True)
    assert out[0]["c_edit"] == "make the person a tall man with curly red hair, a green sweater and freckles"
    assert out[0]["c_llm"].startswith("A tall man")
    instruct, merge = (r["messages"][0]["content"] for r in server.requests[-2:])
    assert isinstance(instruct, str) and "dark uniform" in instruct  # text only: no image, no private caption
    assert 'image of "officer"' in merge and "curly red hair" in merge
    with pytest.raises(ValueError, match="class_names"):
        ds.map(u2s.Instruct(**settings(server, class_column="label")), batched=True)


def test_demographics_are_drawn_per_row_deterministically(server):
    uniform = u2s.Instruct(**settings(server, demographics="uniform", seed=3))
    again = u2s.Instruct(**settings(server, demographics="uniform", seed=3))
    draws = [uniform.group_for(f"row {i}") for i in range(64)]
    assert draws == [again.group_for(f"row {i}") for i in range(64)]
    assert set(draws) == set(u2s.config.DEMOGRAPHIC_GROUPS)
    other_seed = u2s.Instruct(**settings(server, demographics="uniform", seed=4))
    assert draws != [other_seed.group_for(f"row {i}") for i in range(64)]
    own = u2s.Instruct(**settings(server, demographics=["Group A", "Group B"]))
    assert {own.group_for(i) for i in range(20)} == {"Group A", "Group B"}
    assert u2s.Instruct(**settings(server)).group_for("x") is None


def test_num_proc_with_rank_and_cache_hits(server, rows):
    stage = u2s.Inspect(**settings(server))
    first = rows.map(stage, batched=True, batch_size=2, num_proc=2, with_rank=True)
    assert first["privacy_flag"] == [True, True, True, False, True]
    files = [f["filename"] for f in first.cache_files]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    count = len(server.requests)
    again = rows.map(stage, batched=True, batch_size=2, num_proc=2, with_rank=True)  # same object, used
    assert [f["filename"] for f in again.cache_files] == files and len(server.requests) == count
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    other = rows.map(u2s.Inspect(**settings(server, model="org/other")), batched=True, batch_size=2)
    assert [f["filename"] for f in other.cache_files] != files


def test_a_whole_chain_fails_closed(server, rows):
    chain = u2s.Preset(
        name="custom",
        inspect=u2s.Inspect(**settings(server)),
        caption=u2s.Caption(**settings(server)),
        instruct=u2s.Instruct(**settings(server)),
        edit=u2s.Edit(),
    )
    out = u2s.anonymize(rows, chain)
    assert out["u2s_status"] == ["redacted", "redacted", "redacted", "kept_safe", "redacted"]
    assert out[2]["c_llm"].startswith("A tall man") and out[2]["u2s_error"].endswith("whole image obscured")
    # The camera's caption failed: it stays flagged, no caption reaches later stages, and it is obscured whole.
    assert "PUBLIC_CAPTION" in out[1]["u2s_error"] and out[1]["c_pub"] is None and out[1]["c_edit"] is None


def test_model_settings_are_checked():
    with pytest.raises(ValueError, match="unknown"):
        u2s.Caption(backend="llm", model="x")
    with pytest.raises(ValueError, match="base_url"):
        u2s.Instruct(backend="server", model="x")
    with pytest.raises(ValueError, match="needs model"):
        u2s.Caption()
    with pytest.raises(ValueError, match="max_new_tokens >= 300"):
        u2s.Caption(model="x", base_url="http://h/v1", max_new_tokens=50)
