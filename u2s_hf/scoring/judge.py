"""Metrics that ask a vision-language model: VLMScore, the text in an image and the apparent demographic groups.

Text can also be read offline with RapidOCR (the detector the lite preset uses). A request that fails or an answer
that cannot be read is reported as None and counted, never scored as if it were an answer; so is an image that is
missing or cannot be decoded (it is never sent).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import answers, prompts, runtime
from ..backends.chat import ChatRequest, load_chat
from ..config import InspectConfig
from ..judge_config import JudgeConfig
from .common import Images, mean, pixels, progress

# Why an image has no answer when it was never sent (the other reasons are the answers' own, see `ask_groups`).
IMAGE_UNREADABLE = "image missing or unreadable"


def vlm_score(originals: Images, anonymized: Images, judge: JudgeConfig | str | None = None) -> dict:
    """The judge's 0-100 ANONYMIZATION_SCORE for each pair, shown side by side (original left); higher = harder
    to link. Pairs without a score are None in `per_image` and left out of the mean: `unreadable` counts those
    whose request failed or whose answer had no readable score (`answers.parse_score`), `image_unreadable` those
    never sent because either image is missing or cannot be decoded. `judge` is a JudgeConfig or a model id
    loaded in this process (default: the paper's judge)."""
    pairs = [_side_by_side(pixels(a), pixels(b)) for a, b in zip(originals, anonymized, strict=True)]
    scores, reasons = _ask(judge, pairs, prompts.render("judge"), 32, answers.parse_score)
    image_unreadable = reasons.count(IMAGE_UNREADABLE)
    unreadable = len(reasons) - reasons.count(None) - image_unreadable
    return {
        "vlm_score": mean(scores),
        "per_image": scores,
        "unreadable": unreadable,
        "image_unreadable": image_unreadable,
    }


def read_text(
    pictures: Images, reader: str | JudgeConfig = "ocr", min_confidence: float = InspectConfig.text_threshold
) -> list[str | None]:
    """The text readable in each image ("" when none; None when the image is missing or could not be read).

    `reader` is "ocr" (offline RapidOCR: lines of at least `min_confidence` with two or more letters or digits,
    the rule the lite preset flags text by) or a `JudgeConfig` (the paper reads text with a VLM).
    """
    if isinstance(reader, JudgeConfig):
        return _ask(reader, [pixels(p) for p in pictures], prompts.render("extract_text"), 256, answers.parse_text)[0]
    if reader != "ocr":
        raise ValueError(f"reader must be 'ocr' or a JudgeConfig, not {reader!r}")
    from ..backends.detectors import load_text_detector

    threads = runtime.configure_threads()
    ocr = load_text_detector(runtime.device_for(None), threads, InspectConfig.text_max_side)
    decoded = map(pixels, pictures)
    return [
        None if rgb is None else "\n".join(text for text, _, _ in ocr.readable(rgb, min_confidence))
        for rgb in progress(decoded, "OCR", len(pictures))
    ]


def list_groups(pictures: Images, judge: JudgeConfig | str | None = None) -> list[list[str] | None]:
    """The judge's label for each visible person, per image (`answers.parse_groups`; `race_labels_to_counts` reads
    them): [] when the judge says nobody is visible, None when there is no answer to use (`ask_groups` says why:
    the image is missing or unreadable, or the request failed)."""
    return ask_groups(pictures, judge)[0]


def ask_groups(
    pictures: Images, judge: JudgeConfig | str | None = None
) -> tuple[list[list[str] | None], list[str | None]]:
    """`list_groups` with the reason for each None: (labels per image, reasons per image). A reason is None for an
    answer used (nobody visible included), IMAGE_UNREADABLE for an image never sent, else why the answer was not
    used (a failed request's reason starts with `answers.FAILED`)."""
    return _ask(judge, [pixels(p) for p in pictures], prompts.render("demographics"), 256, answers.parse_groups)


def _ask(
    judge: JudgeConfig | str | None, pixels: list, prompt: str, max_new_tokens: int, parse
) -> tuple[list, list[str | None]]:
    """(parsed answer or None, None or why not) per image; images that are None are never sent."""
    judge = JudgeConfig.named(judge) if isinstance(judge, str) else judge or JudgeConfig()
    rows = [i for i, image in enumerate(pixels) if image is not None]
    replies = load_chat(judge)([ChatRequest(prompt, pixels[i], max_new_tokens) for i in rows])
    results: list = [None] * len(pixels)
    reasons: list[str | None] = [IMAGE_UNREADABLE] * len(pixels)
    for i, reply in zip(rows, replies, strict=True):
        try:
            results[i], reasons[i] = answers.parse_reply(reply, parse), None
        except answers.AnswerError as error:
            reasons[i] = str(error)
            runtime.logger.warning("judge answer for row %d not used: %s", i, error)
    return results, reasons


def _side_by_side(original: np.ndarray | None, anonymized: np.ndarray | None) -> np.ndarray | None:
    """Original on the left, the anonymised image scaled to the same height on the right."""
    if original is None or anonymized is None:
        return None
    height, _width = original.shape[:2]
    if anonymized.shape[0] != height:
        scaled = round(anonymized.shape[1] * height / anonymized.shape[0])
        anonymized = np.asarray(Image.fromarray(anonymized).resize((max(1, scaled), height), Image.BICUBIC))
    return np.concatenate([original, anonymized], axis=1)
