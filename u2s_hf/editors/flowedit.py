"""FlowEdit on Stable Diffusion 3: a training-free edit along the difference of two flows.

From the method's description: start from the source latent; at each active step t (the last `n_max` of
`steps`), noise the source latent to t, shift the noised latent by the edit so far, and move the edit by the
difference between the target-conditioned and the source-conditioned velocities (each with its own
classifier-free guidance), averaged over `n_avg` noise draws. Steps past `n_min` from the end switch to plain
sampling of the target. Built on diffusers' SD3 components: encode_prompt, the transformer's velocity, the
flow-matching scheduler's sigmas and the VAE's shift/scale.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import pipelines
from .base import Editor, EditorSettings


@dataclass(frozen=True)
class FlowEditSettings(EditorSettings):
    """FlowEdit settings (with those of every editor: model, revision, dtype, cpu_offload, batch_size, key_column,
    class_column, class_names; see EditorSettings). Defaults are the paper's, except `resolution`:

    source_prompt: "c_priv", target_prompt: "c_llm"; the columns of the source and target prompts (the paper's text
    priors: c_priv, c_pub, c_edit, c_llm, or "class").
    steps: 50 (None: 50). source_guidance: 3.5. target_guidance: 13.5. n_min: 0, n_max: 33 (the last n_max steps
    edit; the last n_min of them plainly sample the target). n_avg: 1 noise draw per step. seed: 42 (None: 42).
    resolution: 1024, SD3's native size (the FlowEdit reference runs SD3 at the image's own size, its examples at
    1024 px): the image is fit inside it by its longest side.
    text_encoder_3: True; False loads SD3 without its T5 encoder, to save memory.
    """

    LOAD_SETTINGS = (*EditorSettings.LOAD_SETTINGS, "text_encoder_3")

    source_prompt: str = "c_priv"
    target_prompt: str = "c_llm"
    steps: int | None = 50
    source_guidance: float = 3.5
    target_guidance: float = 13.5
    n_min: int = 0
    n_max: int = 33
    n_avg: int = 1
    seed: int | None = 42
    resolution: int = 1024
    text_encoder_3: bool = True

    def prompt_columns(self) -> tuple[str, ...]:
        return (self.source_prompt, self.target_prompt)

    def validate(self):
        super().validate()
        if not (0 <= self.n_min <= self.n_max <= self.steps and self.n_avg >= 1):
            raise ValueError("FlowEdit needs 0 <= n_min <= n_max <= steps and n_avg >= 1")


class FlowEdit(Editor):
    """Edits each row from its source prompt to its target prompt, a (source, target) pair per row."""

    settings: FlowEditSettings

    @classmethod
    def from_pretrained(cls, settings: FlowEditSettings, device: str) -> FlowEdit:
        from diffusers import StableDiffusion3Pipeline

        without_t5 = {} if settings.text_encoder_3 else {"text_encoder_3": None, "tokenizer_3": None}
        pipe = pipelines.load(StableDiffusion3Pipeline, settings, device, **without_t5)
        return cls(pipelines.place(pipe, device, settings.cpu_offload), settings, device)

    @property
    def dtype(self):
        return self.pipe.transformer.dtype

    @property
    def multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def edit(self, images: list[np.ndarray], prompts: list[tuple[str, str]], seeds: list[int]) -> list[np.ndarray]:
        """Edited images, each the size of its input; `prompts` are (source, target) per row."""
        import torch

        s = self.settings
        flow = dict(
            steps=s.steps,
            source_guidance=s.source_guidance,
            target_guidance=s.target_guidance,
            n_min=s.n_min,
            n_max=s.n_max,
            n_avg=s.n_avg,
        )
        out: list = [None] * len(images)
        for size, rows in pipelines.by_fit_size(images, s.resolution, self.multiple).items():
            with torch.inference_mode():
                x_src = self.encode([pipelines.at_size(images[i], size) for i in rows])
                source = self.encode_prompts([prompts[i][0] for i in rows])
                target = self.encode_prompts([prompts[i][1] for i in rows])
                generators = [torch.Generator("cpu").manual_seed(seeds[i]) for i in rows]
                edited = self.decode(self.edit_latents(x_src, source, target, generators, **flow))
            for i, rgb in zip(rows, edited, strict=True):
                out[i] = pipelines.back_to(Image.fromarray(rgb), images[i])
        return out

    def _vae_precision(self):
        """As the FlowEdit reference runs the VAE: under autocast on CUDA, so its normalisations run in float32
        while the convolutions stay in half precision. On the CPU the model runs in float32 and needs nothing."""
        import torch

        if str(self.device).startswith("cuda") and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def encode(self, pil_images: list):
        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess(pil_images).to(self.device, self.dtype)
        with self._vae_precision():
            latents = vae.encode(pixels).latent_dist.mode()
        return ((latents - vae.config.shift_factor) * vae.config.scaling_factor).to(self.dtype)

    def decode(self, latents) -> list[np.ndarray]:
        vae = self.pipe.vae
        with self._vae_precision():
            pixels = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
        return [np.asarray(im) for im in self.pipe.image_processor.postprocess(pixels, output_type="pil")]

    def encode_prompts(self, prompts: list[str]):
        """(embeds, pooled) with the unconditional half first, ready for a CFG batch."""
        import torch

        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=True,
            negative_prompt=[""] * len(prompts),
        )
        return torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])

    def velocity(self, z, t, encoded, guidance: float):
        """The guided velocity at latent `z` and scheduler timestep `t`."""
        import torch

        embeds, pooled = encoded
        both = self.pipe.transformer(
            hidden_states=torch.cat([z, z]),
            timestep=t.expand(2 * len(z)),
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        unconditional, conditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def edit_latents(
        self,
        x_src,
        source,
        target,
        generators,
        steps: int,
        source_guidance: float,
        target_guidance: float,
        n_min: int,
        n_max: int,
        n_avg: int,
    ):
        import torch

        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        sigmas = scheduler.sigmas
        z_edit, z_target = x_src.clone(), None
        for i, t in enumerate(scheduler.timesteps):
            remaining = steps - i
            if remaining > n_max:
                continue
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if remaining > n_min:
                delta = torch.zeros_like(x_src)
                for _ in range(n_avg):
                    z_source = (1 - sigma) * x_src + sigma * self._noise(x_src, generators)
                    z_shifted = z_edit + z_source - x_src
                    delta += (
                        self.velocity(z_shifted, t, target, target_guidance)
                        - self.velocity(z_source, t, source, source_guidance)
                    ) / n_avg
                z_edit = z_edit + (sigma_next - sigma) * delta
                continue
            if z_target is None:  # the first plain-sampling step starts from the noised, shifted edit
                z_target = z_edit + (1 - sigma) * x_src + sigma * self._noise(x_src, generators) - x_src
            z_target = z_target + (sigma_next - sigma) * self.velocity(z_target, t, target, target_guidance)
        return z_edit if z_target is None else z_target

    @staticmethod
    def _noise(like, generators):
        """Fresh noise, each row from its own generator so a row's result does not depend on its batch."""
        import torch

        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(rows).to(like.device, like.dtype)
