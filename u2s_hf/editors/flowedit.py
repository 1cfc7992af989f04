"""FlowEdit on Stable Diffusion 3: a training-free edit along the difference of two flows.

From the method's description: start from the source latent; at each active step t (the last `n_max` of
`steps`), noise the source latent to t, shift the noised latent by the edit so far, and move the edit by the
difference between the target-conditioned and the source-conditioned velocities (each with its own
classifier-free guidance), averaged over `n_avg` noise draws. Steps past `n_min` from the end switch to plain
sampling of the target. Built on diffusers' SD3 components: encode_prompt, the transformer's velocity, the
flow-matching scheduler's sigmas and the VAE's shift/scale.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import runtime
from . import pipelines


class FlowEdit:
    def __init__(
        self,
        model: str,
        revision: str | None,
        device: str,
        dtype: str = "auto",
        cpu_offload: bool = False,
        text_encoder_3: bool = True,
    ):
        from diffusers import StableDiffusion3Pipeline

        self.dtype = runtime.torch_dtype(dtype, device)
        without_t5 = {} if text_encoder_3 else {"text_encoder_3": None, "tokenizer_3": None}
        self.pipe = StableDiffusion3Pipeline.from_pretrained(model, revision=revision, dtype=self.dtype, **without_t5)
        pipelines.place(self.pipe, device, cpu_offload)
        self.device = device

    @property
    def multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def edit(
        self, images: list[np.ndarray], texts: list[tuple[str, str]], seeds: list[int], resolution: int, **flow
    ) -> list[np.ndarray]:
        """Edited images, each the size of its input; `texts` are (source, target) prompts per row."""
        import torch

        out: list = [None] * len(images)
        for size, rows in pipelines.by_fit_size(images, resolution, self.multiple).items():
            with torch.inference_mode():
                x_src = self.encode([pipelines.at_size(images[i], size) for i in rows])
                source = self.prompts([texts[i][0] for i in rows])
                target = self.prompts([texts[i][1] for i in rows])
                generators = [torch.Generator("cpu").manual_seed(seeds[i]) for i in rows]
                edited = self.decode(self.edit_latents(x_src, source, target, generators, **flow))
            for i, rgb in zip(rows, edited, strict=True):
                out[i] = pipelines.back_to(Image.fromarray(rgb), images[i])
        return out

    def encode(self, pil_images: list):
        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess(pil_images).to(self.device, self.dtype)
        latents = vae.encode(pixels).latent_dist.mode()
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor

    def decode(self, latents) -> list[np.ndarray]:
        vae = self.pipe.vae
        pixels = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
        return [np.asarray(im) for im in self.pipe.image_processor.postprocess(pixels, output_type="pil")]

    def prompts(self, texts: list[str]):
        """(embeds, pooled) with the unconditional half first, ready for a CFG batch."""
        import torch

        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=texts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=True,
            negative_prompt=[""] * len(texts),
        )
        return torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])

    def velocity(self, z, t, prompts, guidance: float):
        """The guided velocity at latent `z` and scheduler timestep `t`."""
        import torch

        embeds, pooled = prompts
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
