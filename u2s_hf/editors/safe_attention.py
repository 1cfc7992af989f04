"""Safe Cross Attention: a second cross-attention in every UNet transformer block.

Each block gets its own module (q/k/v/out), initialised as a copy of the block's cross-attention, that attends to
the public-caption and edit-instruction token embeddings side by side; its output is added to the ordinary
cross-attention output. The context the UNet receives is the ordinary prompt's tokens followed by those safe
tokens; the processor splits it. Trained weights live next to the UNet as `unet/safe_attention.safetensors`.

The unconditional convention (training must match it; `u2s_hf.training` does): InstructPix2Pix runs three guidance
rows per image, (text, image), (no text, image) and (no text, no image). In the two unconditional rows the context
is the empty text's tokens in all three places (instruction, public caption, edit), so there the safe branch attends
to empty texts, exactly as the ordinary cross-attention does; it is never dropped or zeroed.
"""

from __future__ import annotations

import copy
import logging
import os

logger = logging.getLogger("u2s_hf")
WEIGHTS = "safe_attention.safetensors"


class MissingWeightsError(FileNotFoundError):
    """safe_attention=True on a checkpoint without trained Safe Cross Attention weights."""

    def __init__(self, model: str):
        self.model = model
        super().__init__(
            f"Safe Cross Attention needs trained weights, and {model} has no unet/{WEIGHTS}. Train them (the paper "
            "fine-tunes these modules; u2s_hf.editors.safe_attention.save_safe_attention(unet, folder) writes them "
            "next to the UNet) and use that folder as model=..., or pass safe_attention='untrained' to run the "
            "untrained copies of each block's cross-attention on purpose (a model nobody evaluated)"
        )

    def __reduce__(self):  # rebuilt from the model name when it comes back from a num_proc worker
        return type(self), (self.model,)


class SafeCrossAttnProcessor:
    """The block's ordinary cross-attention on the first `split` context tokens, plus its Safe Cross Attention
    (`safe`) on the rest (the public caption's and the edit's tokens; empty texts in the unconditional rows)."""

    def __init__(self, safe, split: int):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.safe, self.split, self.plain = safe, split, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context, safe_context = encoder_hidden_states[:, : self.split], encoder_hidden_states[:, self.split :]
        out = self.plain(attn, hidden_states, context, attention_mask, temb)
        return out + self.safe(hidden_states, encoder_hidden_states=safe_context)


def transformer_blocks(unet):
    from diffusers.models.attention import BasicTransformerBlock

    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, BasicTransformerBlock) and module.attn2 is not None
    ]


def add_safe_attention(unet, split: int, weights: str | None) -> None:
    """Give every transformer block of `unet` its Safe Cross Attention, with the trained `weights` (a path), or,
    with `weights=None`, the copied initialisation on purpose (logged)."""
    for _, block in transformer_blocks(unet):
        block.safe_attn = copy.deepcopy(block.attn2)
        block.attn2.set_processor(SafeCrossAttnProcessor(block.safe_attn, split))
    if weights is None:
        logger.warning(
            "Safe Cross Attention runs untrained (safe_attention='untrained'), with no trained weights: copies of "
            "each block's cross-attention (the paper fine-tunes them)"
        )
        return
    from safetensors.torch import load_file

    missing, unexpected = unet.load_state_dict(load_file(weights), strict=False)
    if unexpected or any(".safe_attn." in key for key in missing):
        raise ValueError(f"{weights} does not match this UNet's Safe Cross Attention modules")


def check_safe_attention(unet) -> None:
    """Raise unless every block given Safe Cross Attention still runs it: a later `set_attn_processor` (or
    `set_processor` on a block) silently replaces the processor, and the model would edit without it."""
    blocks = transformer_blocks(unet)
    lost = [
        name
        for name, block in blocks
        if not (
            isinstance(block.attn2.processor, SafeCrossAttnProcessor)
            and block.attn2.processor.safe is getattr(block, "safe_attn", None)
        )
    ]
    if lost or not blocks:
        raise RuntimeError(
            f"Safe Cross Attention is no longer active in {len(lost)} of {len(blocks)} transformer blocks "
            f"(e.g. {lost[0] if lost else 'none found'}): something replaced the attention processors after loading "
            "(set_attn_processor); load the editor again instead"
        )


def save_safe_attention(unet, folder: str) -> str:
    """Write the Safe Cross Attention weights as `<folder>/unet/safe_attention.safetensors`."""
    from safetensors.torch import save_file

    path = os.path.join(folder, "unet", WEIGHTS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items() if ".safe_attn." in k}, path)
    return path
