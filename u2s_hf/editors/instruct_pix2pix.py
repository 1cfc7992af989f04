"""InstructPix2Pix (diffusers' StableDiffusionInstructPix2PixPipeline): edit an image by a text instruction."""
from __future__ import annotations

import numpy as np
from PIL import Image


def fit_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The size to edit at: the longest side scaled to `resolution`, each side rounded to `multiple` (>= multiple)."""
    scale = resolution / max(width, height)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


class InstructPix2Pix:
    def __init__(self, model: str, revision: str | None, device: str, dtype: str = "auto", cpu_offload: bool = False):
        import torch
        from diffusers import StableDiffusionInstructPix2PixPipeline

        on_gpu = device.startswith("cuda")
        torch_dtype = {"auto": torch.float16 if on_gpu else torch.float32, "float16": torch.float16,
                       "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        self.pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model, revision=revision, dtype=torch_dtype, safety_checker=None, requires_safety_checker=False)
        if on_gpu and cpu_offload:
            self.pipe.enable_model_cpu_offload(device=device)
        else:
            self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device

    def edit(self, images: list[np.ndarray], prompts: list[str], seeds: list[int], steps: int, guidance_scale: float,
             image_guidance_scale: float, resolution: int) -> list[np.ndarray]:
        """Edited images, each the size of its input. Rows of one size run as one batch, each with its own seed."""
        import torch

        multiple = self.pipe.vae_scale_factor
        out: list = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            groups.setdefault(fit_size(rgb.shape[1], rgb.shape[0], resolution, multiple), []).append(i)
        for size, rows in groups.items():
            inputs = [Image.fromarray(images[i]).resize(size, Image.BICUBIC) for i in rows]
            result = self.pipe(
                [prompts[i] for i in rows], image=inputs, num_inference_steps=steps, guidance_scale=guidance_scale,
                image_guidance_scale=image_guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in rows]).images
            for i, edited in zip(rows, result):
                h, w = images[i].shape[:2]
                out[i] = np.asarray(edited.convert("RGB").resize((w, h), Image.BICUBIC))
        return out
