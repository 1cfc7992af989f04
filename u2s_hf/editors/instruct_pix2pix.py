"""InstructPix2Pix (diffusers' StableDiffusionInstructPix2PixPipeline): edit an image by a text instruction."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from . import safe_attention as safe_attention_module


def fit_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The size to edit at: the longest side scaled to `resolution`, each side rounded to `multiple` (>= multiple)."""
    scale = resolution / max(width, height)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


class InstructPix2Pix:
    def __init__(self, model: str, revision: str | None, device: str, dtype: str = "auto", cpu_offload: bool = False,
                 safe_attention: bool = False):
        import torch
        from diffusers import StableDiffusionInstructPix2PixPipeline

        on_gpu = device.startswith("cuda")
        torch_dtype = {"auto": torch.float16 if on_gpu else torch.float32, "float16": torch.float16,
                       "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        self.pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model, revision=revision, dtype=torch_dtype, safety_checker=None, requires_safety_checker=False)
        self.safe_attention = safe_attention
        if safe_attention:
            safe_attention_module.add_safe_attention(self.pipe.unet, self.pipe.tokenizer.model_max_length,
                                                     _safe_weights(model, revision))
        if on_gpu and cpu_offload:
            self.pipe.enable_model_cpu_offload(device=device)
        else:
            self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device

    def edit(self, images: list[np.ndarray], texts: list, seeds: list[int], steps: int, guidance_scale: float,
             image_guidance_scale: float, resolution: int) -> list[np.ndarray]:
        """Edited images, each the size of its input. Rows of one size run as one batch, each with its own seed.

        `texts` holds the instruction per row; with Safe Cross Attention, (instruction, public caption, edit).
        """
        import torch

        multiple = self.pipe.vae_scale_factor
        out: list = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            groups.setdefault(fit_size(rgb.shape[1], rgb.shape[0], resolution, multiple), []).append(i)
        for size, rows in groups.items():
            inputs = [Image.fromarray(images[i]).resize(size, Image.BICUBIC) for i in rows]
            result = self.pipe(
                image=inputs, num_inference_steps=steps, guidance_scale=guidance_scale,
                image_guidance_scale=image_guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in rows],
                **self._conditioning([texts[i] for i in rows])).images
            for i, edited in zip(rows, result):
                h, w = images[i].shape[:2]
                out[i] = np.asarray(edited.convert("RGB").resize((w, h), Image.BICUBIC))
        return out

    def _conditioning(self, texts) -> dict:
        """The prompt; with Safe Cross Attention, the instruction's tokens followed by the public caption's and the
        edit's (the processor splits them), and an empty prompt of the same length for the unconditional rows."""
        if not self.safe_attention:
            return {"prompt": list(texts)}
        import torch

        parts = list(zip(*texts))
        with torch.inference_mode():
            conditional = torch.cat([self._encode(list(p)) for p in parts], dim=1)
            unconditional = self._encode([""] * len(texts)).repeat(1, len(parts), 1)
        return {"prompt_embeds": conditional, "negative_prompt_embeds": unconditional}

    def _encode(self, texts: list[str]):
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.pipe.text_encoder.device)
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
