import pytest

from u2s_hf import answers, prompts
from u2s_hf.criteria import CATEGORIES, criteria_text


@pytest.mark.parametrize("text, flag", [
    ("PRIVACY_FLAG: TRUE", True),
    ("PRIVACY_FLAG: FALSE", False),
    ("**Privacy flag**: false", False),
    ("privacy_flag=true", True),
    ("PRIVATE_CAPTION: a man\nPRIVACY_FLAG: FALSE\nthanks!", False),
    ("  False.  ", False),
    ("Yes", True),
])
def test_flags_are_read_from_any_reasonable_answer(text, flag):
    assert answers.parse_flag(text) == (flag, True)


@pytest.mark.parametrize("text", ["", "I cannot tell.", "PRIVACY_FLAG: maybe", "The flag is unclear"])
def test_an_unreadable_flag_counts_as_flagged(text):
    assert answers.parse_flag(text) == (True, False)


FULL = """PRIVACY_FLAG: TRUE
**PRIVACY_REVIEW:**
- Face of a woman: people
2. Name tag reading COMO HOPPER - professional and school settings
* US flag — cultural, political and religious identifiers

PRIVATE_CAPTION: A smiling woman in a navy uniform with a name tag reading COMO HOPPER stands before a US flag.

## Public caption
A person in a dark uniform with medals stands in front of a flag.

Let me know if you need anything else!
"""


def test_a_full_caption_answer():
    captions = answers.parse_captions(FULL)
    assert captions.review == ["Face of a woman: people",
                               "Name tag reading COMO HOPPER: professional and school settings",
                               "US flag: cultural, political and religious identifiers"]
    assert captions.private.startswith("A smiling woman") and "COMO HOPPER" in captions.private
    assert captions.public == "A person in a dark uniform with medals stands in front of a flag."


def test_sections_in_another_order_and_missing_review():
    captions = answers.parse_captions("public caption: Two people walk.\nprivate caption: Ann and Bob walk.")
    assert captions.public == "Two people walk." and captions.private == "Ann and Bob walk."
    assert captions.review == []


@pytest.mark.parametrize("text", ["", "A woman in a uniform.", "PRIVATE_CAPTION: Ann walks.", "PUBLIC_CAPTION:\n\n"])
def test_no_public_caption_is_an_error_and_the_raw_text_is_never_used(text):
    with pytest.raises(answers.AnswerError, match="PUBLIC_CAPTION"):
        answers.parse_captions(text)


def test_phrases_lose_labels_quotes_and_chatter():
    assert answers.parse_phrase('Edit: "change the woman to a tall man with short grey hair"\n\nHope this helps.') \
        == "change the woman to a tall man with short grey hair"
    assert answers.parse_phrase("**Caption:** A man walks a dog.") == "A man walks a dog."
    with pytest.raises(answers.AnswerError, match="empty edit"):
        answers.parse_phrase("  \n ", "edit")


def test_judge_scores():
    assert answers.parse_score("**ANONYMIZATION_SCORE:** 85") == 85
    for bad in ("score: high", "ANONYMIZATION_SCORE: 140"):
        with pytest.raises(answers.AnswerError):
            answers.parse_score(bad)


def test_criteria_default_narrowed_and_custom():
    assert criteria_text().count("\n") == len(CATEGORIES) - 1
    assert criteria_text(["health"]) == f"- health: {CATEGORIES['health']}"
    assert criteria_text({"faces": "any human face"}) == "- faces: any human face"
    with pytest.raises(ValueError, match="unknown privacy criteria"):
        criteria_text(["weather"])


def test_prompts_render_and_refuse_missing_fields():
    flag = prompts.render("flag", criteria=criteria_text())
    assert "PRIVACY_FLAG: TRUE" in flag and "health" in flag and "$" not in flag
    merge = prompts.render("merge", public_caption="A person.", edit="a tall man", class_hint="")
    assert '"a tall man"' in merge and "50 words" in merge
    for name in ("caption", "instruct", "extract_text", "demographics", "judge"):
        assert prompts.template(name).strip()
    with pytest.raises(KeyError):
        prompts.render("instruct")
