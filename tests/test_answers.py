import random

import pytest

from u2s_hf import answers, prompts
from u2s_hf.criteria import CATEGORIES, criteria_text


@pytest.mark.parametrize(
    "text, flag",
    [
        ("PRIVACY_FLAG: TRUE", True),
        ("PRIVACY_FLAG: FALSE", False),
        ("**Privacy flag**: false", False),
        ("privacy flag = false", False),
        ("privacy_flag=true", True),
        ("  False.  ", False),
        ("`PRIVACY_FLAG: FALSE`\n", False),
        ("## Privacy flag - No", False),
        ("Yes", True),
    ],
)
def test_flags_are_read_from_one_flag_statement(text, flag):
    assert answers.parse_flag(text) == (flag, True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot tell.",
        "PRIVACY_FLAG: maybe",
        "The flag is unclear",
        # Prose around the answer, a TRUE anywhere, or two answers: never a confident FALSE.
        "PRIVATE_CAPTION: a man\nPRIVACY_FLAG: FALSE\nthanks!",
        "Privacy flag - no faces are visible, but a readable name tag is: TRUE",
        "PRIVACY_FLAG: FALSE\nWait... PRIVACY_FLAG: TRUE",
        "privacy_flag = false only if nothing is readable; PRIVACY_FLAG: TRUE",
        "PRIVACY_FLAG: FALSE\nPRIVACY_FLAG: FALSE",
        "PRIVACY_FLAG: FALSE (no faces)",
        "No, but a name tag is readable.",
        "PRIVACY_FLAG: TRUE\nA face is visible.",
    ],
)
def test_anything_but_one_flag_statement_counts_as_flagged(text):
    assert answers.parse_flag(text) == (True, False)


FALSE_STATEMENTS = [
    "PRIVACY_FLAG: FALSE",
    "privacy flag = false",
    "Privacy flag: false",
    "privacy-flag - no",
    "FALSE",
    "No",
    "false.",
]
TRUE_STATEMENTS = ["PRIVACY_FLAG: TRUE", "privacy flag = yes", "Privacy flag: true", "TRUE", "Yes", "yes."]
PROSE = [
    "Wait...",
    "thanks!",
    "no faces are visible, but a readable name tag is",
    "only if nothing is readable",
    "PRIVATE_CAPTION: a man",
    "I am not sure.",
    "Let me check again:",
    "(a name tag is readable)",
    "Answer:",
    "Hmm",
    "not",
    "no faces",
]
SEPARATORS = ["\n", " ", "; ", "\n\n", ": ", " - ", ", ", ""]


def _variant(rng, fragment):
    """The fragment in another case, with markdown emphasis, code or a heading mark around it."""
    fragment = rng.choice([str, str.upper, str.lower, str.title])(fragment)
    mark = rng.choice(["", "", "**", "`", "__"])
    return rng.choice(["", "", "# ", "> "]) + mark + fragment + mark


def test_fuzzed_answers_are_false_only_when_they_are_one_false_statement():
    rng = random.Random(9)
    read_false = 0
    for _ in range(5000):
        kinds = [rng.choice(["false", "false", "true", "prose"]) for _ in range(rng.choice([1, 1, 2, 2, 3, 4]))]
        pools = {"false": FALSE_STATEMENTS, "true": TRUE_STATEMENTS, "prose": PROSE}
        text = _variant(rng, rng.choice(pools[kinds[0]]))
        for kind in kinds[1:]:
            text += rng.choice(SEPARATORS) + _variant(rng, rng.choice(pools[kind]))
        period = "" if text.rstrip("*`_").endswith(".") else rng.choice(["", ".", " .\n"])  # one at most
        text = rng.choice(["", " ", "\n"]) + text + period + rng.choice(["", " ", "\n"])
        flag, understood = answers.parse_flag(text)
        if kinds == ["false"]:
            assert (flag, understood) == (False, True), text
            read_false += 1
        else:  # a TRUE/YES, prose, or a second statement anywhere: flagged
            assert flag, text
            assert understood == (kinds == ["true"]), text
    assert read_false > 500


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
    assert captions.review == [
        "Face of a woman: people",
        "Name tag reading COMO HOPPER: professional and school settings",
        "US flag: cultural, political and religious identifiers",
    ]
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


@pytest.mark.parametrize(
    "text, section",
    [
        ("PUBLIC_CAPTION: A person walks.\nPRIVATE_CAPTION: Ann walks.\nPUBLIC_CAPTION: Ann walks her dog.", "PUBLIC"),
        ("PRIVATE_CAPTION: Ann walks.\n\nPRIVATE_CAPTION:\nAnn Lee walks.\nPUBLIC_CAPTION: A person walks.", "PRIVATE"),
    ],
)
def test_a_caption_section_given_twice_with_different_text_is_an_error(text, section):
    with pytest.raises(answers.AnswerError, match=f"two different {section}_CAPTION"):
        answers.parse_captions(text)


def test_a_caption_section_repeated_word_for_word_is_read():
    captions = answers.parse_captions(
        "PUBLIC_CAPTION: A person walks.\n\n**PUBLIC_CAPTION:**\nA person  walks.\n\n"
        "PRIVATE_CAPTION: Ann walks.\nPRIVATE_CAPTION:"
    )
    assert captions.public == "A person walks." and captions.private == ""


def test_phrases_lose_labels_quotes_and_chatter():
    assert (
        answers.parse_phrase('Edit: "change the woman to a tall man with short grey hair"\n\nHope this helps.')
        == "change the woman to a tall man with short grey hair"
    )
    assert answers.parse_phrase("**Caption:** A man walks a dog.") == "A man walks a dog."
    with pytest.raises(answers.AnswerError, match="empty edit"):
        answers.parse_phrase("  \n ", "edit")


def test_judge_scores():
    assert answers.parse_score("**ANONYMIZATION_SCORE:** 85") == 85
    assert answers.parse_score("ANONYMIZATION_SCORE: 85\n\nANONYMIZATION_SCORE: 85") == 85
    for bad in ("score: high", "ANONYMIZATION_SCORE: 140", "ANONYMIZATION_SCORE: 1000"):
        with pytest.raises(answers.AnswerError, match="no ANONYMIZATION_SCORE"):
            answers.parse_score(bad)


@pytest.mark.parametrize(
    "text",
    [
        "ANONYMIZATION_SCORE: 20\nOn reflection: ANONYMIZATION_SCORE: 85",
        "**ANONYMIZATION_SCORE:** 90 ... ANONYMIZATION_SCORE: 140",
    ],
)
def test_a_judge_that_changes_its_mind_is_unreadable(text):
    with pytest.raises(answers.AnswerError, match="two different ANONYMIZATION_SCORE"):
        answers.parse_score(text)


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
