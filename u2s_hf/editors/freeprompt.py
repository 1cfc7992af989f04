"""FreePrompt (Free-Prompt-Editing, Liu et al., CVPR 2024) on Stable Diffusion 1.5: a training-free edit that keeps
the source's layout by giving the target the source's self-attention maps (the paper finds that self-attention maps
carry the image's structure, while swapping cross-attention maps can make edits fail, so only self-attention is
touched).

As the method describes it for real images: the source needs no prompt. Its latents are inverted with deterministic
DDIM under the empty prompt, giving the source trajectory z_0 .. z_T. The target is sampled with DDIM from that z_T
under its own prompt with classifier-free guidance. During the first `self_replace_ratio` of the steps the UNet also
runs the source, held on its inverted trajectory (at each step its latent is the inverted one, its text the empty
prompt), and in the conditional target rows each replaced self-attention (`attn1`) uses the source's attention map
(softmax of the source's queries and keys) over the target's own values; the unconditional rows keep their own maps,
as in the authors' code (which builds on prompt-to-prompt's controller).

Replaced layers: every self-attention outside the UNet's outermost level (down_blocks.0 and the last up block), that
is the down, mid and up blocks at half the latent resolution and below. At SD 1.5's 512 px these are exactly the
layers the authors' public code replaces (it skips maps over more than 32 x 32 keys, the 64 x 64 level); naming
them by position keeps the choice the same at other image sizes.

Nothing is random: the target starts from the source's inverted latent and DDIM runs with eta 0, so rows draw no
noise and their seeds change nothing. Built on diffusers' SD 1.5 components: the VAE, the CLIP text encoder
(`encode_prompt`), the UNet with our processor on the replaced `attn1` layers (`unet.set_attn_processor`), and a
DDIMScheduler made from the checkpoint's scheduler config (clip_sample off, as in the authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import pipelines
from .base import Editor, EditorSettings


@dataclass(frozen=True)
class FreePromptSettings(EditorSettings):
    """FreePrompt settings (with those of every editor: model, revision, dtype, cpu_offload, batch_size, key_column,
    class_column, class_names; see EditorSettings). Defaults are the paper's:

    model: a Stable Diffusion 1.5 checkpoint (e.g. "stable-diffusion-v1-5/stable-diffusion-v1-5").
    prompt: "c_llm"; the column with each row's target text (c_priv, c_pub, c_edit, c_llm, or "class"). The source
    prompt is always empty: FreePrompt needs none.
    steps: 50 (None: 50), for the inversion and for the edit. guidance_scale: 7.5, the target's classifier-free
    guidance. self_replace_ratio: 0.4, in [0, 1]: the first int(steps * ratio) steps take the source's
    self-attention maps; 0 samples the target plainly from the inverted source latent.
    seed: 0 (None: 0). FreePrompt draws no noise (DDIM with eta 0 from the inverted source), so neither the seed
    nor key_column changes its output: another seed or a key_column is refused rather than silently ignored.
    resolution: 512, SD 1.5's size: the image is fit inside it by its longest side.
    """

    prompt: str = "c_llm"
    steps: int | None = 50
    guidance_scale: float = 7.5
    self_replace_ratio: float = 0.4
    seed: int | None = 0
    resolution: int = 512

    def prompt_columns(self) -> tuple[str, ...]:
        return (self.prompt,)

    def validate(self):
        super().validate()
        if self.seed != 0 or self.key_column is not None:
            raise ValueError("FreePrompt draws no noise: seed and key_column would change nothing (leave them unset)")

    def replaced_steps(self) -> int:
        """How many of the first denoising steps take the source's self-attention maps."""
        return int(self.steps * self.self_replace_ratio)


class _Sharing:
    """Whether the UNet call under way is a shared one: its batch is [source, target unconditional, target
    conditional], three equal parts, and the replaced layers give the conditional part the source's maps."""

    active = False


class SourceSelfAttention:
    """The processor of a replaced self-attention (`attn1`) layer: diffusers' scaled-dot-product attention, except
    in a shared call, where the conditional target rows attend with the source rows' queries and keys (the source's
    attention map) over their own values."""

    def __init__(self, sharing: _Sharing):
        self.sharing = sharing

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        import torch
        import torch.nn.functional as F

        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            raise ValueError("FreePrompt's processor is for self-attention over (batch, tokens, channels)")
        residual, rows = hidden_states, len(hidden_states)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, hidden_states.shape[1], rows)
            attention_mask = attention_mask.view(rows, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(rows, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if self.sharing.active:
            if rows % 3:
                raise ValueError(f"a shared call needs [source, unconditional, conditional] rows, not {rows}")
            n = rows // 3
            query = torch.cat([query[: 2 * n], query[:n]])
            key = torch.cat([key[: 2 * n], key[:n]])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(rows, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def replaced_layers(unet) -> list[str]:
    """The processor names of the self-attention layers FreePrompt replaces: every `attn1` outside the UNet's
    outermost level (down_blocks.0 and the last up block)."""
    outer = ("down_blocks.0.", f"up_blocks.{len(unet.up_blocks) - 1}.")
    return [n for n in unet.attn_processors if n.endswith(".attn1.processor") and not n.startswith(outer)]


class FreePrompt(Editor):
    """Edits each row towards its target text, keeping the source's structure through its self-attention maps."""

    settings: FreePromptSettings

    @classmethod
    def from_pretrained(cls, settings: FreePromptSettings, device: str) -> FreePrompt:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = pipelines.load(StableDiffusionPipeline, settings, device, **pipelines.NO_SAFETY_CHECKER)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
        editor = cls(pipelines.place(pipe, device, settings.cpu_offload), settings, device)
        editor.sharing = _Sharing()
        processors = dict(pipe.unet.attn_processors)
        layers = replaced_layers(pipe.unet)
        if not layers:
            raise ValueError(f"{settings.model}: its UNet has no self-attention below the outermost level")
        processors.update(dict.fromkeys(layers, SourceSelfAttention(editor.sharing)))
        pipe.unet.set_attn_processor(processors)
        return editor

    def check(self) -> None:
        processors = self.pipe.unet.attn_processors
        for name in replaced_layers(self.pipe.unet):
            processor = processors[name]
            if not isinstance(processor, SourceSelfAttention) or processor.sharing is not self.sharing:
                raise RuntimeError(f"FreePrompt's self-attention processor was replaced ({name}); reload the model")

    @property
    def dtype(self):
        return self.pipe.unet.dtype

    def edit(self, images: list[np.ndarray], prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        """Edited images, each the size of its input; `prompts` are the target texts. Rows of one fitted size run
        as one batch; `seeds` are not used (FreePrompt draws no noise)."""
        import torch

        self.check()
        s = self.settings
        out: list = [None] * len(images)
        for size, rows in pipelines.by_fit_size(images, s.resolution, self.pipe.vae_scale_factor).items():
            with torch.inference_mode():
                empty = self.encode_prompts([""] * len(rows))
                trajectory = self.invert(self.encode([pipelines.at_size(images[i], size) for i in rows]), empty)
                target = self.encode_prompts([prompts[i] for i in rows])
                edited = self.edit_latents(trajectory[-1], trajectory, target, empty, s.replaced_steps())
                results = self.decode(edited)
            for i, rgb in zip(rows, results, strict=True):
                out[i] = pipelines.back_to(Image.fromarray(rgb), images[i])
        return out

    def encode(self, pil_images: list):
        vae = self.pipe.vae
        pixels = self.pipe.image_processor.preprocess(pil_images).to(self.device, self.dtype)
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor

    def decode(self, latents) -> list[np.ndarray]:
        vae = self.pipe.vae
        pixels = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return [np.asarray(im) for im in self.pipe.image_processor.postprocess(pixels, output_type="pil")]

    def encode_prompts(self, texts: list[str]):
        return self.pipe.encode_prompt(texts, self.device, 1, False)[0]

    def timesteps(self):
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(self.settings.steps, device=self.device)
        return scheduler.timesteps

    def _alpha(self, t: int) -> float:
        scheduler = self.pipe.scheduler
        return float(scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod)

    def invert(self, latents, empty) -> list:
        """The source trajectory [z_0, ..., z_T] by DDIM inversion under the empty prompt: z_k is the latent at
        the k-th timestep from the clean end. With the empty prompt as both texts, guidance changes nothing, so the
        unconditional prediction alone is used."""
        scheduler = self.pipe.scheduler
        stride = scheduler.config.num_train_timesteps // self.settings.steps
        trajectory = [latents]
        for t in reversed(self.timesteps()):
            eps = self.pipe.unet(latents, t, encoder_hidden_states=empty, return_dict=False)[0]
            before, after = self._alpha(int(t) - stride), self._alpha(int(t))
            clean = (latents - (1 - before) ** 0.5 * eps) / before**0.5
            latents = after**0.5 * clean + (1 - after) ** 0.5 * eps
            trajectory.append(latents)
        return trajectory

    def edit_latents(self, start, source: list, target, empty, replaced: int):
        """DDIM sampling of the target from `start` with guidance; in the first `replaced` steps the source rows,
        at their latent of `source` (a trajectory as `invert` gives), share their self-attention maps."""
        import torch

        unet, scheduler, guidance = self.pipe.unet, self.pipe.scheduler, self.settings.guidance_scale
        timesteps = self.timesteps()
        latents = start
        for i, t in enumerate(timesteps):
            if i < replaced:
                self.sharing.active = True
                try:
                    batch = torch.cat([source[len(timesteps) - i], latents, latents])
                    eps = unet(batch, t, encoder_hidden_states=torch.cat([empty, empty, target]), return_dict=False)[0]
                finally:
                    self.sharing.active = False
                unconditional, conditional = eps.chunk(3)[1:]
            else:
                batch, texts = torch.cat([latents, latents]), torch.cat([empty, target])
                unconditional, conditional = unet(batch, t, encoder_hidden_states=texts, return_dict=False)[0].chunk(2)
            guided = unconditional + guidance * (conditional - unconditional)
            latents = scheduler.step(guided, t, latents, return_dict=False)[0]
        return latents
