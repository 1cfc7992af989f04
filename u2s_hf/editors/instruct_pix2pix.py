"""InstructPix2Pix (diffusers' StableDiffusionInstructPix2PixPipeline): edit an image by a text instruction."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import pipelines
from . import safe_attention as safe_attention_module
from .base import Editor, EditorSettings


@dataclass(frozen=True)
class InstructPix2PixSettings(EditorSettings):
    """InstructPix2Pix settings (with those of every editor: model, revision, dtype, cpu_offload, batch_size,
    key_column, class_column, class_names; see EditorSettings). Defaults are the paper's:

    prompt: "c_edit"; the column with each row's instruction (the paper's text prior): c_priv, c_pub, c_edit, c_llm,
    or "class".
    steps: 100 (None: 100). guidance_scale: 7.5 (text). image_guidance_scale: 1.5. seed: 0 (None: 0).
    resolution: 512, the paper's size: the image is fit inside it by its longest side.
    safe_attention: False. True adds Safe Cross Attention with its trained weights, read from
    `unet/safe_attention.safetensors` in the checkpoint (loading fails without them); "untrained" runs the copied
    initialisation on purpose (tests, the start of training). Rows then also need `c_pub` and `c_edit`.
    """

    LOAD_SETTINGS = (*EditorSettings.LOAD_SETTINGS, "safe_attention")

    prompt: str = "c_edit"
    steps: int | None = 100
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5
    seed: int | None = 0
    resolution: int = 512
    safe_attention: bool | str = False

    def prompt_columns(self) -> tuple[str, ...]:
        """The instruction; with Safe Cross Attention also the public caption and the edit it attends to."""
        return (self.prompt, "c_pub", "c_edit") if self.safe_attention else (self.prompt,)

    def validate(self):
        if isinstance(self.safe_attention, str) and self.safe_attention != "untrained":
            raise TypeError(f"safe_attention must be true, false or 'untrained', not {self.safe_attention!r}")
        super().validate()


class InstructPix2Pix(Editor):
    """Edits each row by its instruction (with Safe Cross Attention: by (instruction, public caption, edit))."""

    settings: InstructPix2PixSettings

    @classmethod
    def from_pretrained(cls, settings: InstructPix2PixSettings, device: str) -> InstructPix2Pix:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        pipe = pipelines.load(StableDiffusionInstructPix2PixPipeline, settings, device, **pipelines.NO_SAFETY_CHECKER)
        if settings.safe_attention:
            untrained = settings.safe_attention == "untrained"
            weights = None if untrained else safe_weights(settings.model, settings.revision)
            safe_attention_module.add_safe_attention(pipe.unet, pipe.tokenizer.model_max_length, weights)
        return cls(pipelines.place(pipe, device, settings.cpu_offload), settings, device)

    def check(self) -> None:
        if self.settings.safe_attention:
            safe_attention_module.check_safe_attention(self.pipe.unet)

    def edit(self, images: list[np.ndarray], prompts: list, seeds: list[int]) -> list[np.ndarray]:
        """Edited images, each the size of its input. Rows of one size run as one batch, each with its own seed.

        `prompts` holds the instruction per row; with Safe Cross Attention, (instruction, public caption, edit).
        """
        import torch

        self.check()
        s = self.settings
        out: list = [None] * len(images)
        for size, rows in pipelines.by_fit_size(images, s.resolution, self.pipe.vae_scale_factor).items():
            result = self.pipe(
                image=[pipelines.at_size(images[i], size) for i in rows],
                num_inference_steps=s.steps,
                guidance_scale=s.guidance_scale,
                image_guidance_scale=s.image_guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in rows],
                **self._conditioning([prompts[i] for i in rows]),
            ).images
            for i, edited in zip(rows, result, strict=True):
                out[i] = pipelines.back_to(edited, images[i])
        return out

    def _conditioning(self, prompts) -> dict:
        """The prompt; with Safe Cross Attention, the instruction's tokens followed by the public caption's and the
        edit's (the processor splits them), and, for the two unconditional guidance rows, the empty text's tokens in
        all three places: there the safe branch sees empty texts (see `safe_attention`)."""
        if not self.settings.safe_attention:
            return {"prompt": list(prompts)}
        import torch

        parts = list(zip(*prompts, strict=True))
        with torch.inference_mode():
            conditional = torch.cat([self._encode(list(p)) for p in parts], dim=1)
            unconditional = self._encode([""] * len(prompts)).repeat(1, len(parts), 1)
        return {"prompt_embeds": conditional, "negative_prompt_embeds": unconditional}

    def _encode(self, texts: list[str]):
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.pipe.text_encoder.device)
        return self.pipe.text_encoder(ids)[0]


def safe_weights(model: str, revision: str | None) -> str:
    """The path of a checkpoint's trained Safe Cross Attention weights (`unet/safe_attention.safetensors`).

    MissingWeightsError only when the file is not there: not in a local folder, or the Hub says the repository has
    no such file (now, or as cached from an earlier answer). Network, authentication and other errors propagate.
    """
    name = f"unet/{safe_attention_module.WEIGHTS}"
    if os.path.isdir(model):
        path = os.path.join(model, name)
        if not os.path.isfile(path):
            raise safe_attention_module.MissingWeightsError(model)
        return path
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        return hf_hub_download(model, name, revision=revision)
    except RemoteEntryNotFoundError as exc:
        raise safe_attention_module.MissingWeightsError(model) from exc
    except LocalEntryNotFoundError:  # offline and not downloaded: missing only if the cache knows it is missing
        if try_to_load_from_cache(model, name, revision=revision) is _CACHED_NO_EXIST:
            raise safe_attention_module.MissingWeightsError(model) from None
        raise
