"""VQA utility: fine-tune a VLM (the paper's Qwen3-VL-2B) on the anonymised train split of a VQA dataset (OK-VQA:
an image, a `question` and the annotators' `answers` per row), answer the questions of the ORIGINAL test split and
score the answers with the standard VQA accuracy (higher is better).

VQA accuracy (Antol et al. 2015; the VQA and OK-VQA evaluation): an answer scores min(#annotators who gave it / 3, 1)
averaged over the ten subsets of nine of the ten annotators, i.e. against each annotator left out in turn, after
the standard normalisation of both sides (`normalize_answer`, the EvalAI answer processor's steps). The
normalisation is applied to every answer, as the EvalAI processor (and lmms-eval's OK-VQA task) does; the offline
vqaEval.py script skips it when all ten answers are identical.

The paper names no training recipe for Qwen3-VL-2B on OK-VQA; these defaults are our choice: the whole model
trained (vision encoder included) on one (image, question, answer) per row, the answer the one most annotators gave,
AdamW with no weight decay, peak lr 1e-5 after a 3% warm-up, cosine to 0, one epoch of batches of 16, the prompt
"<question>\\nAnswer the question using a single word or phrase." (LLaVA-1.5's short-answer instruction) in the
model's chat template, greedy decoding of at most 16 new tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import combinations

from .common import counted, progress
from .finetune import end_token, fine_tune, generate, optimizer_steps, picture, training_batch, usable_rows
from .utility import refuse_overlap, seeded

PAPER_VQA_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
# The paper's Table 5 (OK-VQA): Qwen3-VL-2B trained on the raw and on the U2S (FlowEdit + LLM) train split.
PAPER_SCORES = {"raw": 0.6064, "U2S FE LLM": 0.7093}
INSTRUCTION = "Answer the question using a single word or phrase."
WARMUP = 0.03  # of the optimizer steps

# The answer normalisation of the VQA evaluation (EvalAI's answer processor), as data: number words up to ten
# become digits, articles go, and a contraction written without its apostrophe gets it back ("dont" -> "don't").
NUMBERS = {w: str(n) for n, w in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBERS["none"] = "0"
ARTICLES = {"a", "an", "the"}
# Each form is also matched with any one of its apostrophes left out ("couldnt've" and "couldn'tve" for
# "couldn't've"), which is exactly the standard map's keys for these forms.
CONTRACTED = """
    ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd
    he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've needn't
    not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll
    somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd
    there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll
    what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's
    won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()
CONTRACTIONS = {form[:i] + form[i + 1 :]: form for form in CONTRACTED for i, char in enumerate(form) if char == "'"}
# Marks that become a space between two word characters ("black/white" -> "black white") and vanish next to a space.
MARKS = ';/[]"{}()=+\\_->@<`,?!'
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit goes; "3.5" keeps its


def normalize_answer(text: str) -> str:
    """An answer as the VQA evaluation compares it: lower case, commas and question marks removed, "'s" split off,
    each other mark (`MARKS`) removed where it touches a space in the answer and replaced by a space elsewhere,
    periods not followed by a digit removed, number words to digits, articles dropped, missing apostrophes of
    contractions restored."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = " ".join(text.split())
    spaced = text
    for mark in MARKS:
        touches_space = f"{mark} " in text or f" {mark}" in text
        spaced = spaced.replace(mark, "" if touches_space else " ")
    words = [NUMBERS.get(word, word) for word in _PERIOD.sub("", spaced).split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def vqa_accuracy(predictions, answers) -> dict:
    """Mean VQA accuracy of one predicted answer per question against that question's annotator answers (usually
    ten): for each annotator left out, min(#other annotators who gave the prediction / 3, 1), averaged; both sides
    normalised (`normalize_answer`). Two of ten annotators agreeing with the prediction give (2 x 1/3 + 8 x 2/3) / 10
    = 0.6, three give 0.9, four or more 1.

    A question whose prediction is None or that has no answers is left out and counted (`vqa_accuracy_missing`); an
    empty prediction is a result (it scores 0). Returns vqa_accuracy (None when nothing was scored),
    vqa_accuracy_scored, vqa_accuracy_missing and per_question (None for a question left out)."""
    scores: list = []
    for predicted, given in zip(predictions, answers, strict=True):
        if predicted is None or not given:
            scores.append(None)
            continue
        predicted = normalize_answer(predicted)
        given = [normalize_answer(a) for a in given]
        # Each annotator left out in turn (a lone annotator is kept: there is no one else to compare with).
        subsets = list(combinations(given, len(given) - 1)) if len(given) > 1 else [tuple(given)]
        scores.append(sum(min(subset.count(predicted) / 3, 1.0) for subset in subsets) / len(subsets))
    return {**counted("vqa_accuracy", scores), "per_question": scores}


def _question_answers(question, answers) -> tuple[str, list[str]] | None:
    """(question, the annotators' answers) of a row, the answers strings or dicts with an "answer" (the Hub's
    OK-VQA); None without a question or an answer."""
    given = [
        a.get("answer") if isinstance(a, dict) else a
        for a in ([answers] if isinstance(answers, str) else answers or [])
    ]
    given = [a for a in given if isinstance(a, str) and a.strip()]
    return (question, given) if isinstance(question, str) and question.strip() and given else None


def prompt(processor, question: str) -> str:
    """The question and the short-answer instruction, one user turn with the image, in the model's chat template."""
    turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{question}\n{INSTRUCTION}"}]}
    return processor.apply_chat_template([turn], add_generation_prompt=True, tokenize=False)


def train_eval_vqa(
    train_ds,
    test_ds,
    model: str = PAPER_VQA_MODEL,
    image_column: str = "image",
    question_column: str = "question",
    answers_column: str = "answers",
    epochs: int = 1,
    batch_size: int = 16,
    grad_accum: int = 1,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    device: str | None = None,
    revision: str | None = None,
    allow_overlap: bool = False,
) -> dict:
    """VQA accuracy on `test_ds` of a VLM (transformers' AutoModelForImageTextToText: Qwen3-VL loads as
    Qwen3VLForConditionalGeneration) fine-tuned on `train_ds` (the paper's utility protocol; the recipe is in the
    module docstring).

    Both splits need `image_column`, `question_column` and `answers_column` (a list of answers per row, strings or
    {"answer": ...} dicts); a missing column is a ValueError. A row whose image does not decode, or that has no
    question or no answer, is skipped and counted (`skipped_train`, `skipped_test`; test rows also in
    `vqa_accuracy_missing`). Unless `allow_overlap`, a test image byte-identical to a train image is refused before
    any model loads (OK-VQA asks several questions about one image: only images shared across the splits count).
    Same seed, same result on CPU; the global random states are restored afterwards.
    Returns vqa_accuracy's keys with `per_question` {"answer": the generated answer per test row (None for a
    skipped row), "accuracy"}, `skipped_train` and `skipped_test`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    (train_images, train_rows, train_qas, train_digests), (test_images, test_rows, test_qas, test_digests) = (
        usable_rows(ds, image_column, _question_answers, question_column, answers_column) for ds in (train_ds, test_ds)
    )
    if not allow_overlap:
        refuse_overlap(train_digests, test_digests)
    if not train_rows:
        raise ValueError("no usable training row (every image is unreadable or lacks a question or an answer)")
    # Train on the answer most annotators gave (the first of those tied).
    examples = [(row, q, Counter(a).most_common(1)[0][0]) for row, (q, a) in zip(train_rows, train_qas, strict=True)]

    with seeded(seed):
        vlm = AutoModelForImageTextToText.from_pretrained(model, revision=revision, dtype=torch.float32).to(device)
        processor = AutoProcessor.from_pretrained(model, revision=revision)
        end = end_token(vlm, processor.tokenizer)

        def batch(chunk):
            images = [picture(train_images[row]) for row, _, _ in chunk]
            return training_batch(
                processor, images, [prompt(processor, q) for _, q, _ in chunk], [a for *_, a in chunk], end
            )

        steps = optimizer_steps(len(examples), epochs, batch_size, grad_accum)
        fine_tune(
            vlm,
            examples,
            batch,
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=math.ceil(WARMUP * steps),
            device=device,
            seed=seed,
            name="VQA",
        )
        generated: list = [None] * len(test_ds)
        for start in progress(range(0, len(test_rows), batch_size), "answering the test questions", unit="batch"):
            rows = list(range(start, min(start + batch_size, len(test_rows))))
            texts = generate(
                vlm,
                processor,
                [picture(test_images[test_rows[k]]) for k in rows],
                [prompt(processor, test_qas[k][0]) for k in rows],
                device,
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )
            for k, text in zip(rows, texts, strict=True):
                generated[test_rows[k]] = text
    answers: list = [None] * len(test_ds)
    for row, (_, given) in zip(test_rows, test_qas, strict=True):
        answers[row] = given
    scores = vqa_accuracy(generated, answers)
    return {
        **scores,
        "per_question": {"answer": generated, "accuracy": scores["per_question"]},
        "skipped_train": len(train_ds) - len(train_rows),
        "skipped_test": len(test_ds) - len(test_rows),
    }
