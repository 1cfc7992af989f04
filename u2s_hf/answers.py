"""Reading model answers. Tolerant of case, markdown emphasis, bullets, extra or missing sections and chatter;
strict where a wrong guess would leak, and an ambiguous answer is read on the fail-closed side: a flag is FALSE
only when the whole answer is one FALSE statement (anything else counts as flagged), a caption answer without a
public caption, or with a caption section given twice with different text, is an error (never a caption made
from the raw text), and a judge answer with two different scores is unreadable. A request that failed comes back
from a chat backend as its exception: `parse_reply` makes it an AnswerError whose reason starts with FAILED."""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARKDOWN = re.compile(r"\*\*|__|[*`]|^\s*[#>]+\s*", re.MULTILINE)  # emphasis, code, headings, quotes
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
# One flag statement and nothing else: "PRIVACY_FLAG: FALSE", "privacy flag = no", or a bare "FALSE" / "Yes".
_FLAG = re.compile(r"(?:privacy[\s_-]*flag\s*[:=\-]?\s*)?(true|false|yes|no)", re.IGNORECASE)
_SECTIONS = ("privacy_review", "private_caption", "public_caption")
_HEADING = re.compile(
    r"^\s*(privacy[\s_-]*review|private[\s_-]*caption|public[\s_-]*caption|privacy[\s_-]*flag)"
    r"\s*[:\-]?\s*(.*)$",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(?:edit(?:ed)?(?:\s+instruction)?|instruction|changes?|caption|merged\s+caption|answer)"
    r"\s*:\s*",
    re.IGNORECASE,
)
# An answer (or list item) saying that nobody is visible: "NONE", "No people are visible", "There is no one".
_NOBODY = re.compile(
    r"none(?:\s+visible)?|nobody\b.*|no[\s-]?one\b.*|(?:there\s+(?:are|is)\s+)?no\s+(?:visible\s+)?"
    r"(?:people|persons?|humans?|individuals?|faces?)\b.*",
    re.IGNORECASE,
)
# A score statement: the number as written (sign, digits, separators) and what follows on its line, up to the
# next statement.
_SCORE = re.compile(
    r"anonymi[sz]ation[\s_-]*score\s*[:=]?\s*([-+]?\d(?:[\d.,]*\d)?)((?:(?!anonymi[sz]ation[\s_-]*score)[^\n])*)",
    re.IGNORECASE,
)
_SCORE_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # 85, 7.5; not 1,000, 7,5, 1.2.3 or a signed number
# A scale on the score's line ("/10", "out of 10", "on a scale of 0-10", "(scale 1 to 10)"): only 100 is the score's.
_SCALE = re.compile(r"(?:/|\bout\s+of\b|\bscale\b)\s*(?:of\s+)?(?:[01]\s*(?:-|–|to)\s*)?(\d+(?:\.\d+)?)", re.IGNORECASE)


class AnswerError(ValueError):
    """An answer that cannot be used; the message is short and meant for `u2s_error`."""


# How every failed model request starts its reason in `u2s_error` (reports count these rows).
FAILED = "model request failed"


def failure(exc: Exception) -> str:
    """The reason for a request that failed (Outcome shortens reasons that are too long)."""
    return f"{FAILED}: {type(exc).__name__}: {exc}"


def parse_reply(reply, parse):
    """`parse(reply)`; a request that failed (a chat backend returns its exception in place of the answer) raises
    AnswerError with why."""
    if isinstance(reply, Exception):
        raise AnswerError(failure(reply))
    return parse(reply)


@dataclass(frozen=True)
class Captions:
    review: list[str]
    private: str
    public: str


def parse_flag(text: str) -> tuple[bool, bool]:
    """(flag, understood). Fail-closed: FALSE only when the whole answer, without markdown marks, surrounding space
    and a trailing period, is one FALSE/NO statement. One TRUE/YES statement is (True, True); anything else (a
    TRUE anywhere, two statements, prose around the answer, no answer) is (True, False): counted as flagged."""
    plain = _MARKDOWN.sub("", text or "").strip()
    plain = plain[:-1].rstrip() if plain.endswith(".") else plain
    match = _FLAG.fullmatch(plain)
    if match is None:
        return True, False
    return match.group(1).lower() in ("true", "yes"), True


def parse_captions(text: str) -> Captions:
    """The three sections of a caption answer; a leading PRIVACY_FLAG line and any chatter are ignored."""
    sections: dict[str, list[str]] = {}
    given: dict[str, list[list[str]]] = {}  # every time a section was written
    current = None
    for raw in (text or "").splitlines():
        line = _MARKDOWN.sub("", raw).strip()
        heading = _HEADING.match(line)
        if heading:
            name = re.sub(r"[\s_\-]+", "_", heading.group(1).lower())
            current = name if name in _SECTIONS else None
            if current:
                sections[current] = [heading.group(2).strip()] if heading.group(2).strip() else []
                given.setdefault(current, []).append(sections[current])
            continue
        if current:
            sections[current].append(line)
    for name in ("private_caption", "public_caption"):  # the model changed its mind: neither text can be trusted
        if len({_first_paragraph(lines) for lines in given.get(name, [])} - {""}) > 1:
            raise AnswerError(f"caption answer has two different {name.upper()} sections")
    public = _first_paragraph(sections.get("public_caption", []))
    if not public:
        raise AnswerError("caption answer has no PUBLIC_CAPTION section")
    review = [_review_item(line) for line in sections.get("privacy_review", []) if _review_item(line)]
    return Captions(review=review[:10], private=_first_paragraph(sections.get("private_caption", [])), public=public)


def parse_phrase(text: str, what: str = "answer") -> str:
    """One cleaned phrase from a free-text answer (an edit instruction, a merged caption)."""
    lines = [_MARKDOWN.sub("", line).strip() for line in (text or "").splitlines()]
    phrase = _LABEL.sub("", _first_paragraph(lines))
    phrase = phrase.strip().strip("\"“”'").strip()
    if not phrase:
        raise AnswerError(f"empty {what}")
    return phrase


def parse_score(text: str) -> float:
    """The judge's 0-100 ANONYMIZATION_SCORE (7.5 is 7.5). Read on the unreadable side: two different scores, a
    number that is not plainly one value in 0..100 ("1,000", "7,5", "1e2", "-5", "140") or one given on another
    scale ("7.5/10", "8 out of 10", "7 (scale 0-10)") make the answer unreadable; "85/100", "85 out of 100" and
    "85%" are 85."""
    scores = set()
    for number, rest in _SCORE.findall(_MARKDOWN.sub("", text or "")):
        said = (number + rest).strip()[:60]
        if any(float(scale) != 100 for scale in _SCALE.findall(rest)):
            raise AnswerError(f"ANONYMIZATION_SCORE given on another scale than 0-100: {said!r}")
        if not _SCORE_NUMBER.fullmatch(number) or rest[:1].isalnum() or rest[:1] == "_":
            raise AnswerError(f"ANONYMIZATION_SCORE is not one number between 0 and 100: {said!r}")
        scores.add(float(number))
    if len(scores) > 1:
        raise AnswerError(f"two different ANONYMIZATION_SCORE values in the answer: {sorted(scores)}")
    if len(scores) != 1 or not 0 <= min(scores) <= 100:
        raise AnswerError("no ANONYMIZATION_SCORE between 0 and 100 in the answer")
    return scores.pop()


def _first_paragraph(lines: list[str]) -> str:
    """Lines up to the first blank line after some text, joined: what follows is usually chatter."""
    kept = []
    for line in lines:
        if line:
            kept.append(line)
        elif kept:
            break
    return " ".join(" ".join(kept).split())


def _review_item(line: str) -> str:
    """ "- ITEM: REASON" (or "1. ITEM - REASON") as "ITEM: REASON"."""
    item = _BULLET.sub("", line).strip()
    parts = re.split(r"\s*(?::|\s[-–—]\s)\s*", item, maxsplit=1)
    return f"{parts[0]}: {parts[1]}" if len(parts) == 2 and parts[1] else item


def parse_text(text: str) -> str:
    """The transcribed text, one piece per line; "" when the model saw none."""
    lines = [_BULLET.sub("", _MARKDOWN.sub("", line)).strip() for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    return "" if [line.upper().rstrip(".") for line in lines] in ([], ["NONE"]) else "\n".join(lines)


def parse_groups(text: str) -> list[str]:
    """One label per listed person, as said (markdown, bullets, a "Person 1:" lead and a trailing period removed);
    [] when nobody is visible ("NONE", "No people are visible.", "Nobody"). "White, Asian" is two people. Which
    group a label names (if any) is read in one place, `scoring.privacy.race_category`; a label that names none
    ("I cannot determine") is kept here and counted as unparsed there."""
    groups = []
    for line in (text or "").splitlines():
        line = _BULLET.sub("", _MARKDOWN.sub("", line)).rsplit(":", 1)[-1]
        groups += [group.strip().rstrip(".").strip() for group in line.split(",")]
    return [group for group in groups if group and not _NOBODY.fullmatch(group)]
