"""Captioning utility: fine-tune BLIP-2 on the anonymised train split (its images and their `captions`), caption the
ORIGINAL test split, and score those captions against the original test captions with the COCO caption
evaluation's own scorers (pycocoevalcap's Bleu(4) and Cider, i.e. CIDEr-D). Higher is better for both.

The paper fine-tunes BLIP-2 on COCO and reports BLEU-4 and CIDEr (Table 4); it names no recipe, so the defaults are
BLIP-2's own COCO fine-tuning (LAVIS `caption_coco_ft.yaml` with `blip2_opt` / `caption_coco_opt2.7b`, run on 16
GPUs): the vision encoder, Q-Former and projection trained, the OPT language model frozen; prompt "a photo of";
images 364 px (random resized crop, scale 0.5-1, bicubic, and a horizontal flip for training; a bicubic resize for
testing); captions lower-cased with . ! " ( ) * # : ; ~ removed, at most 50 words; AdamW, weight decay 0.05, peak lr
1e-5 after 1,000 warm-up steps, cosine to 0, 5 epochs, 256 captions per step (16 per GPU x 16 GPUs: here batch 16
x accumulation 16), one training example per (image, caption); beam search with 5 beams, 8 to 30 new tokens.
Differences: LAVIS warms up from 1e-8 and steps its cosine once per epoch (here: per optimizer step), truncates
prompt + caption to 32 tokens (here: whole captions), uses fp16 (here: bf16 autocast on CUDA, fp32 on CPU) and
gradient checkpointing in the vision encoder.

METEOR, ROUGE-L and SPICE are not computed: the paper reports none of them, and METEOR and SPICE are Java programs
of their own. The COCO evaluation tokenises captions with Stanford CoreNLP's PTBTokenizer, also Java:
`tokenizer="ptb"` (default) runs it from the pycocoevalcap wheel; `tokenizer="python"` is our pure-Python
approximation of it (lower-case, PTB-style word and clitic splitting, the same punctuation removed) for machines
without Java; the two can differ on unusual punctuation, so compare runs made with the same tokenizer.
"""

from __future__ import annotations

import re
import shutil

from .common import counted, progress
from .finetune import end_token, fine_tune, generate, picture, training_batch, usable_rows
from .utility import refuse_overlap, seeded

PAPER_CAPTIONER = "Salesforce/blip2-opt-2.7b"  # BLIP-2 with OPT-2.7B, the model of LAVIS's COCO fine-tuning config
# The paper's Table 4 (COCO captioning), BLIP-2 fine-tuned on the raw and on the U2S (FlowEdit + LLM) train split.
PAPER_SCORES = {"raw": {"bleu4": 0.436, "cider": 1.413}, "U2S FE LLM": {"bleu4": 0.423, "cider": 1.363}}
PROMPT = "a photo of"
TOKENIZERS = ("ptb", "python")
MAX_WORDS = 50  # LAVIS's blip_caption max_words
# What the COCO evaluation drops after PTB tokenisation (pycocoevalcap's tokenizer: quotes, brackets, . ? ! , : ; -)
PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}


def caption_scores(predictions, references, tokenizer: str = "ptb") -> dict:
    """BLEU-4 and CIDEr of one caption per item against that item's reference captions, as the COCO caption
    evaluation computes them: both sides tokenised (`tokenizer`), BLEU-4 over the whole corpus (n-gram counts pooled,
    brevity from the closest reference length) and CIDEr-D averaged over items (its n-gram weights come from the
    scored items' references, so one item alone scores 0).

    References are a list of captions per item (or one string). An item whose prediction is None or that has no
    reference caption is left out and counted:
    `bleu4_scored`/`bleu4_missing`, `cider_scored`/`cider_missing`. An empty prediction is a result (it scores 0).
    Returns those with `per_image` ({"bleu4": sentence BLEU-4, "cider": CIDEr-D}, None for an item left out);
    both means are None when nothing could be scored.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    references = [_captions(r) for r in references]
    items = [i for i, (p, r) in enumerate(zip(predictions, references, strict=True)) if p is not None and r]
    per_image: dict = {"bleu4": [None] * len(predictions), "cider": [None] * len(predictions)}
    bleu4 = None
    if items:
        texts = [predictions[i] for i in items] + [ref for i in items for ref in references[i]]
        tokens = iter(tokenize(texts, tokenizer))
        hypotheses = {k: [next(tokens)] for k in range(len(items))}
        gts = {k: [next(tokens) for _ in references[i]] for k, i in enumerate(items)}
        bleu, sentence_bleu = Bleu(4).compute_score(gts, hypotheses, verbose=0)
        _, cider = Cider().compute_score(gts, hypotheses)
        bleu4 = float(bleu[3])
        for k, i in enumerate(items):
            per_image["bleu4"][i], per_image["cider"][i] = float(sentence_bleu[3][k]), float(cider[k])
    # BLEU-4 is the corpus score, not the mean of the sentence scores: only its counts come from `counted`.
    return {
        **counted("bleu4", per_image["bleu4"]),
        "bleu4": bleu4,
        **counted("cider", per_image["cider"]),
        "per_image": per_image,
    }


def tokenize(captions: list[str], tokenizer: str = "ptb") -> list[str]:
    """Each caption as the COCO evaluation compares it: lower-cased tokens joined by spaces, punctuation removed."""
    if tokenizer == "python":
        return [_simple_tokens(caption) for caption in captions]
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    need_java(tokenizer)
    # The Java tokenizer reads one caption per line: an empty caption would shift the lines after it.
    given = {k: [{"caption": " ".join(c.split())}] for k, c in enumerate(captions) if c.strip()}
    tokenized = PTBTokenizer().tokenize(given) if given else {}
    if sorted(tokenized) != sorted(given):
        raise RuntimeError(f"the PTB tokenizer (Java) returned {len(tokenized)} of {len(given)} captions")
    return [tokenized[k][0] if k in given else "" for k in range(len(captions))]


_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'\w+|(?:[a-z]\.){2,}|\d+(?:,\d{3})+(?:\.\d+)?|\w+(?:[-./&']\w+)*|\.\.\.|--|\S")
# PTB writes brackets as -LRB- etc., lower-cased by -lowerCase, so the COCO evaluation's removal (upper case) keeps
# them; it writes quotes as `` and '', which it drops.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def _simple_tokens(caption: str) -> str:
    """Our approximation of PTBTokenizer -lowerCase followed by the COCO punctuation removal: words keep inner
    hyphens, dots, slashes, ampersands and apostrophes ("t-shirt", "3.5", "o'clock"), numbers their thousands
    commas ("1,000"), abbreviations their dots ("u.s."); brackets become -lrb- etc. as PTB writes them; clitics
    split off ("don't" -> "do n't", "man's" -> "man 's"); every other symbol is its own token, and the punctuation
    the COCO evaluation drops is dropped."""
    spaced = _CLITIC.sub(r" \1", caption.lower())
    tokens = _TOKEN.findall(spaced)
    tokens = [_BRACKETS.get(token, token) for token in tokens]
    return " ".join(token for token in tokens if token not in PUNCTUATION and token != '"')


def need_java(tokenizer: str) -> None:
    """Refuse `tokenizer="ptb"` on a machine without Java, before anything is trained."""
    if tokenizer == "ptb" and shutil.which("java") is None:
        raise ValueError(
            "the COCO evaluation's PTB tokenizer needs Java (`java` is not on PATH): install a Java runtime, or pass "
            "tokenizer='python' (u2s evaluate: --caption-tokenizer python) for the pure-Python approximation"
        )


def clean_caption(caption: str) -> str:
    """A training caption as LAVIS's blip_caption processor writes it: lower case, . ! " ( ) * # : ; ~ turned into
    spaces, spaces collapsed, at most 50 words."""
    words = re.sub(r"[.!\"()*#:;~]", " ", caption.lower()).split()
    return " ".join(words[:MAX_WORDS])


def _captions(value) -> list[str] | None:
    """The captions of a row: a list of strings (COCO's five) or one string; None when there is none."""
    captions = [value] if isinstance(value, str) else list(value or [])
    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    return captions or None


def train_eval_captioner(
    train_ds,
    test_ds,
    model: str = PAPER_CAPTIONER,
    image_column: str = "image",
    captions_column: str = "captions",
    epochs: int = 5,
    batch_size: int = 16,
    grad_accum: int = 16,
    lr: float = 1e-5,
    weight_decay: float = 0.05,
    warmup_steps: int = 1000,
    image_size: int = 364,
    num_beams: int = 5,
    max_new_tokens: int = 30,
    min_new_tokens: int = 8,
    seed: int = 0,
    device: str | None = None,
    revision: str | None = None,
    allow_overlap: bool = False,
    tokenizer: str = "ptb",
) -> dict:
    """BLEU-4 and CIDEr on `test_ds` of a BLIP-2 (`Blip2ForConditionalGeneration`, Hub id or folder) fine-tuned on
    `train_ds` (the paper's utility protocol; the recipe is in the module docstring).

    Both splits need `image_column` and `captions_column` (a list of captions per image, or one string); a missing
    column is a ValueError. A row whose image does not decode or that has no caption is skipped and counted
    (`skipped_train`, `skipped_test`; test rows also in `bleu4_missing`/`cider_missing`). Unless `allow_overlap`, a
    test image byte-identical to a train image is refused before any model loads, and so is `tokenizer="ptb"`
    without Java. Same seed, same result on CPU; the global random states are restored afterwards.
    Returns caption_scores' keys with `per_image` {"caption": the generated caption per test row (None for a skipped
    row), "bleu4", "cider"}, `skipped_train`, `skipped_test` and `train_pairs` (the (image, caption) pairs trained on).
    """
    import torch

    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    need_java(tokenizer)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_images, train_rows, train_captions, train_digests = usable_rows(
        train_ds, image_column, _captions, captions_column
    )
    test_images, test_rows, test_captions, test_digests = usable_rows(test_ds, image_column, _captions, captions_column)
    if not allow_overlap:
        refuse_overlap(train_digests, test_digests)
    pairs = [
        (row, clean_caption(c)) for row, captions in zip(train_rows, train_captions, strict=True) for c in captions
    ]
    if not pairs:
        raise ValueError("no usable training row (every image is unreadable or has no caption)")

    with seeded(seed):  # the augmentation and the batch order draw from the global random states
        captioner, processor = load_captioner(model, revision, device, image_size)
        end = end_token(captioner, processor.tokenizer)
        augment = train_transform(image_size)
        # A size other than the checkpoint's needs its position embeddings interpolated (LAVIS: 224 -> 364).
        interpolate = image_size != captioner.config.vision_config.image_size

        def batch(chunk):
            images = [augment(picture(train_images[row])) for row, _ in chunk]
            inputs = training_batch(processor, images, [PROMPT] * len(chunk), [" " + c for _, c in chunk], end)
            return {**inputs, "interpolate_pos_encoding": interpolate}

        fine_tune(
            captioner,
            pairs,
            batch,
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            device=device,
            seed=seed,
            name="captioning",
        )
        generated: list = [None] * len(test_ds)
        for start in progress(range(0, len(test_rows), batch_size), "captioning the test split", unit="batch"):
            rows = test_rows[start : start + batch_size]
            texts = generate(
                captioner,
                processor,
                [picture(test_images[row]) for row in rows],
                [PROMPT] * len(rows),
                device,
                interpolate_pos_encoding=interpolate,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=False,
            )
            for row, text in zip(rows, texts, strict=True):
                generated[row] = text
    references: list = [None] * len(test_ds)
    for row, captions in zip(test_rows, test_captions, strict=True):
        references[row] = captions
    scores = caption_scores(generated, references, tokenizer)
    return {
        **scores,
        "per_image": {"caption": generated, **scores["per_image"]},
        "skipped_train": len(train_ds) - len(train_rows),
        "skipped_test": len(test_ds) - len(test_rows),
        "train_pairs": len(pairs),
    }


def load_captioner(model: str, revision: str | None, device: str, image_size: int):
    """(BLIP-2 in fp32, its processor resizing to `image_size`), loaded fresh (training changes the weights), the
    language model frozen as in BLIP-2's fine-tuning."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    captioner = Blip2ForConditionalGeneration.from_pretrained(model, revision=revision, dtype=torch.float32)
    captioner.language_model.requires_grad_(False)
    processor = Blip2Processor.from_pretrained(model, revision=revision)
    processor.image_processor.size = {"height": image_size, "width": image_size}
    return captioner.to(device), processor


def train_transform(image_size: int):
    """LAVIS's blip2_image_train augmentation on a PIL image (the processor then normalises it)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                image_size, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.RandomHorizontalFlip(),
        ]
    )
