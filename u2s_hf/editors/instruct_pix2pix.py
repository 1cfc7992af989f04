"""InstructPix2Pix (diffusers' StableDiffusionInstructPix2PixPipeline): edit an image by a text instruction."""

from __future__ import annotations

import os

import numpy as np

from .. import runtime
from . import pipelines
from . import safe_attention as safe_attention_module


class InstructPix2Pix:
    def __init__(
        self,
        model: str,
        revision: str | None,
        device: str,
        dtype: str = "auto",
        cpu_offload: bool = False,
        safe_attention: bool = False,
    ):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        self.pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model,
            revision=revision,
            dtype=runtime.torch_dtype(dtype, device),
            safety_checker=None,
            requires_safety_checker=False,
        )
        self.safe_attention = safe_attention
        if safe_attention:
            safe_attention_module.add_safe_attention(
                self.pipe.unet, self.pipe.tokenizer.model_max_length, _safe_weights(model, revision)
            )
        pipelines.place(self.pipe, device, cpu_offload)

    def edit(
        self,
        images: list[np.ndarray],
        texts: list,
        seeds: list[int],
        steps: int,
        guidance_scale: float,
        image_guidance_scale: float,
        resolution: int,
    ) -> list[np.ndarray]:
        """Edited images, each the size of its input. Rows of one size run as one batch, each with its own seed.

        `texts` holds the instruction per row; with Safe Cross Attention, (instruction, public caption, edit).
        """
        import torch

        out: list = [None] * len(images)
        for size, rows in pipelines.by_fit_size(images, resolution, self.pipe.vae_scale_factor).items():
            result = self.pipe(
                image=[pipelines.at_size(images[i], size) for i in rows],
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                image_guidance_scale=image_guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in rows],
                **self._conditioning([texts[i] for i in rows]),
            ).images
            for i, edited in zip(rows, result, strict=True):
                out[i] = pipelines.back_to(edited, images[i])
        return out

    def _conditioning(self, texts) -> dict:
        """The prompt; with Safe Cross Attention, the instruction's tokens followed by the public caption's and the
        edit's (the processor splits them), and an empty prompt of the same length for the unconditional rows."""
        if not self.safe_attention:
            return {"prompt": list(texts)}
        import torch

        parts = list(zip(*texts, strict=True))
        with torch.inference_mode():
            conditional = torch.cat([self._encode(list(p)) for p in parts], dim=1)
            unconditional = self._encode([""] * len(texts)).repeat(1, len(parts), 1)
        return {"prompt_embeds": conditional, "negative_prompt_embeds": unconditional}

    def _encode(self, texts: list[str]):
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.pipe.text_encoder.device)
        return self.pipe.text_encoder(ids)[0]


def _safe_weights(model: str, revision: str | None) -> str | None:
    """The trained Safe Cross Attention weights of a checkpoint, when it has them."""
    local = os.path.join(model, "unet", safe_attention_module.WEIGHTS)
    if os.path.isdir(model):
        return local
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(model, f"unet/{safe_attention_module.WEIGHTS}", revision=revision)
    except Exception:  # not in this checkpoint (or no Hub): the copied initialisation is used, and logged
        return None
