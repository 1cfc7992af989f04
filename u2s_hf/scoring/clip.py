"""Quality: does the anonymised image still match its public caption? (CLIP score, higher is better)"""

from __future__ import annotations

from PIL import Image

from .. import runtime
from .common import Images, Texts, counted, pixels, progress

PAPER_CLIP = "ViT-L-14/openai"  # the paper's CLIP ViT-L/14
# clip_score(scale=...): 1 -> the cosine (the paper's Table 2), 100 -> torchmetrics' max(100 * cosine, 0)
CLIP_SCALES = (1, 100)


def clip_score(
    images: Images, texts: Texts, model: str = PAPER_CLIP, device: str = "cpu", batch_size: int = 32, scale: int = 1
) -> dict:
    """CLIP score of each image with its text under an open_clip model, averaged over the pairs.

    `scale` picks the convention, reported under the same key `clip_score`: 1 (default) is the raw cosine
    similarity, what the paper's Table 2 reports (-1..1); 100 is torchmetrics' CLIPScore, max(100 * cosine, 0) per
    pair (0..100). No other scale is accepted. `model` is "hf-hub:org/name", "local-dir:/path" or "ARCH/PRETRAINED"
    (open_clip's tags, e.g. "ViT-L-14/openai"). A pair with no (readable) image or no text scores None
    (`clip_score_scored` / `clip_score_missing` count the pairs in and out of the mean). The tokenizer cuts a text
    longer than the model's context (77 tokens for CLIP) without a word: `clip_truncated` counts the scored pairs
    whose text was cut, and so scored on its beginning only.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images for {len(texts)} texts")
    if isinstance(scale, bool) or scale not in CLIP_SCALES:
        raise ValueError(f"CLIP score scale must be 1 (cosine) or 100 (torchmetrics' max(100 * cos, 0)), not {scale!r}")
    load_clip(model, device)  # before any row: a model that cannot be loaded fails here
    scores: list = [None] * len(texts)
    truncated = 0
    captioned = [i for i, text in enumerate(texts) if text]
    for start in progress(range(0, len(captioned), batch_size), "CLIP score", unit="batch"):
        decoded = {i: pixels(images[i]) for i in captioned[start : start + batch_size]}  # one batch in memory
        rows = [i for i, rgb in decoded.items() if rgb is not None]
        if not rows:
            continue
        text_features, cut = embed_texts(model, [texts[i] for i in rows], device)
        truncated += int(cut.sum())
        cosines = (embed_images(model, [decoded[i] for i in rows], device) * text_features).sum(-1)
        for i, value in zip(rows, cosines.tolist(), strict=True):
            scores[i] = value if scale == 1 else max(100 * value, 0.0)
    return {**counted("clip_score", scores), "clip_truncated": truncated, "per_image": scores}


def embed_images(model: str, rgbs: list, device: str = "cpu"):
    """Unit-length open_clip embeddings (float32, one row each) of RGB uint8 arrays, under `model` (see
    `clip_score`); the cosine of an image and a text is the dot product of their embeddings."""
    import torch
    import torch.nn.functional as F

    clip, preprocess, _ = load_clip(model, device)
    batch = torch.stack([preprocess(Image.fromarray(rgb)) for rgb in rgbs]).to(device)
    with torch.no_grad():
        return F.normalize(clip.encode_image(batch).float(), dim=-1)


def embed_texts(model: str, texts: list[str], device: str = "cpu"):
    """(unit-length open_clip embeddings of `texts`, float32, one row each; which texts the tokenizer cut to its
    context length, a bool tensor: see `_cut`)."""
    import torch
    import torch.nn.functional as F

    clip, _, tokenizer = load_clip(model, device)
    texts = list(texts)
    tokens = tokenizer(texts)
    with torch.no_grad():
        features = F.normalize(clip.encode_text(tokens.to(device)).float(), dim=-1)
    return features, _cut(tokenizer, texts, tokens)


def _cut(tokenizer, texts: list[str], tokens):
    """Which of `texts` the tokenizer cut to fit its context length L (`tokens` is its output at L).

    open_clip's tokenizers cut silently and mark nothing. Tokenized again at L + 1, a text that fits is the same
    tokens and padding, and one that does not either differs within the first L positions (the end token that the
    cut put at position L - 1 is a text token there) or has a token where a text that fits has padding (position L,
    compared with the padding an empty text gets). Works for the CLIP BPE tokenizer and the Hugging Face ones.
    """
    length = tokens.shape[1]
    longer = tokenizer(texts, context_length=length + 1)
    padding = tokenizer([""], context_length=length + 1)[0, length]
    return (longer[:, :length] != tokens).any(dim=1) | (longer[:, length] != padding)


def load_clip(model: str, device: str):
    """The open_clip (model, preprocess, tokenizer), loaded once per process and device."""

    def load():
        import open_clip

        if model.startswith(("hf-hub:", "local-dir:")):
            clip, _, preprocess = open_clip.create_model_and_transforms(model)
            tokenizer = open_clip.get_tokenizer(model)
        else:
            architecture, _, pretrained = model.partition("/")
            clip, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=pretrained or None)
            tokenizer = open_clip.get_tokenizer(architecture)
        return clip.to(device).eval(), preprocess, tokenizer

    return runtime.cached_model(("clip", model, device), load)
