"""Quality: does the anonymised image still match its public caption? (CLIP cosine similarity, higher is better)"""

from __future__ import annotations

from PIL import Image

from .. import runtime
from .common import Images, Texts, mean, pixels, progress

PAPER_CLIP = "ViT-L-14/openai"  # the paper's CLIP ViT-L/14


def clip_score(
    images: Images, texts: Texts, model: str = PAPER_CLIP, device: str = "cpu", batch_size: int = 32
) -> dict:
    """Cosine similarity between each image and its text with an open_clip model.

    `model` is "hf-hub:org/name", "local-dir:/path" or "ARCH/PRETRAINED" (open_clip's tags, e.g. "ViT-L-14/openai").
    A pair with no (readable) image or no text scores None.
    """
    import torch
    import torch.nn.functional as F

    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images for {len(texts)} texts")
    clip, preprocess, tokenizer = load_clip(model, device)
    scores: list = [None] * len(texts)
    captioned = [i for i, text in enumerate(texts) if text]
    for start in progress(range(0, len(captioned), batch_size), "CLIP score", unit="batch"):
        decoded = {i: pixels(images[i]) for i in captioned[start : start + batch_size]}  # one batch in memory
        rows = [i for i, rgb in decoded.items() if rgb is not None]
        if not rows:
            continue
        batch = torch.stack([preprocess(Image.fromarray(decoded[i])) for i in rows]).to(device)
        with torch.no_grad():
            image_features = F.normalize(clip.encode_image(batch).float(), dim=-1)
            tokens = tokenizer([texts[i] for i in rows]).to(device)
            text_features = F.normalize(clip.encode_text(tokens).float(), dim=-1)
        for i, value in zip(rows, (image_features * text_features).sum(-1).tolist(), strict=True):
            scores[i] = value
    return {"clip_score": mean(scores), "per_image": scores}


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
