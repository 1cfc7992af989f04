"""The metrics that ask a vision-language model, against a scripted chat-completions server, and RapidOCR."""

import numpy as np
import pytest

from u2s_hf import answers, scoring
from u2s_hf.judge_config import JudgeConfig

from chat_server import ChatServer


def _judge(server):
    return JudgeConfig(backend="server", model="judge", base_url=server.base_url, retries=0, timeout=10)


def judge_script(prompt, image):
    """Scores by how the two halves differ; reads text and people from the image's size (scripted, not seen)."""
    if "ANONYMIZATION_SCORE" in prompt:
        if image.width == 3 * image.height:  # the 'broken' pair below: an answer without a score
            return "I would rather not say."
        halves = np.asarray(image.convert("RGB"), dtype=float)
        left, right = halves[:, : image.width // 2], halves[:, image.width // 2 :]
        same = np.abs(left - right).mean() < 5  # the request's JPEG encoding changes a few values
        return "**ANONYMIZATION_SCORE:** 0" if same else "ANONYMIZATION_SCORE: 85"
    if "Transcribe" in prompt:
        return "- COMO HOPPER\n" if image.width > 100 else "NONE"
    if "racial group" in prompt:
        return "White\nPerson 2: Asian\nmartian" if image.width > 100 else "NONE."
    raise AssertionError(prompt)


@pytest.fixture
def server():
    with ChatServer(judge_script) as server:
        yield server


def test_vlm_score_sees_the_pair_side_by_side_and_reports_unreadable_answers(server, photos):
    astronaut, coffee = photos["astronaut"], photos["coffee"]
    wide = astronaut.resize((256, 128))  # anonymised image scaled to the original's height -> 3x as wide as high
    out = scoring.vlm_score(
        [astronaut, astronaut, astronaut.resize((128, 128)), coffee, b"junk"],
        [astronaut, coffee, wide, None, astronaut],
        judge=_judge(server),
    )
    assert out["per_image"] == [0, 85, None, None, None]
    assert out["vlm_score"] == pytest.approx(42.5) and out["unreadable"] == 1 and out["image_unreadable"] == 2
    first = server.requests[0]["messages"][-1]["content"]
    assert any(part["type"] == "image_url" for part in first)
    assert len(server.requests) == 3  # the missing and the undecodable pairs are never sent


def test_read_text_and_list_groups_with_a_judge(server, photos):
    judge = _judge(server)
    pictures = [photos["grace_hopper"], photos["coffee"].resize((64, 64)), None]
    assert scoring.read_text(pictures, judge) == ["COMO HOPPER", "", None]
    groups = scoring.list_groups(pictures, judge)
    assert groups == [["White", "Asian", "martian"], [], None]
    # "martian" names no group: it counts for nothing (not as Other)
    assert scoring.race_labels_to_counts(groups) == {"White": 1, "Black": 0, "Asian": 1, "Hispanic": 0, "Other": 0}


def test_read_text_offline_with_rapidocr(photos):
    texts = scoring.read_text([photos["grace_hopper"], photos["coffee"], b"not an image"])
    assert "HOPPER" in texts[0].upper() and texts[1] == "" and texts[2] is None
    with pytest.raises(ValueError, match="reader"):
        scoring.read_text([photos["coffee"]], reader="tesseract")


def test_a_failing_judge_gives_none_not_scores(photos):
    with ChatServer(lambda prompt, image: 500) as server:
        out = scoring.vlm_score([photos["astronaut"]], [photos["coffee"]], judge=_judge(server))
    assert out == {"vlm_score": None, "per_image": [None], "unreadable": 1, "image_unreadable": 0}


@pytest.mark.parametrize(
    "text, expected",
    [("NONE", ""), ("none.", ""), ("", ""), ("1. ALICE JONES\n\n2. Plate ABC 1234", "ALICE JONES\nPlate ABC 1234")],
)
def test_parse_text(text, expected):
    assert answers.parse_text(text) == expected


def test_parse_groups():
    assert answers.parse_groups("- **White**\n- Black, Hispanic\nNONE") == ["White", "Black", "Hispanic"]
    assert answers.parse_groups("NONE") == []


def test_a_judge_given_by_id_runs_in_this_process(photos, tmp_path):
    import tiny_models

    model = tiny_models.vlm(tmp_path / "judge", "ANONYMIZATION_SCORE: 55")
    out = scoring.vlm_score([photos["astronaut"]], [photos["coffee"]], judge=str(model))
    assert out == {"vlm_score": 55, "per_image": [55], "unreadable": 0, "image_unreadable": 0}
