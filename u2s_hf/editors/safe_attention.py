"""Safe Cross Attention: a second cross-attention in every UNet transformer block.

Each block gets its own module (q/k/v/out), initialised as a copy of the block's cross-attention, that attends to
the public-caption and edit-instruction token embeddings side by side; its output is added to the ordinary
cross-attention output. The context the UNet receives is the ordinary prompt's tokens followed by those safe
tokens; the processor splits it. Trained weights live next to the UNet as `unet/safe_attention.safetensors`.
"""

from __future__ import annotations

import copy
import logging
import os

logger = logging.getLogger("u2s_hf")
WEIGHTS = "safe_attention.safetensors"


class SafeCrossAttnProcessor:
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


def add_safe_attention(unet, split: int, weights: str | None = None) -> bool:
    """Give every transformer block of `unet` its Safe Cross Attention; True when trained weights were loaded."""
    for _, block in transformer_blocks(unet):
        block.safe_attn = copy.deepcopy(block.attn2)
        block.attn2.set_processor(SafeCrossAttnProcessor(block.safe_attn, split))
    if weights is None or not os.path.exists(weights):
        logger.warning(
            "Safe Cross Attention has no trained weights here: it runs from copies of each block's "
            "cross-attention (the paper fine-tunes them)"
        )
        return False
    from safetensors.torch import load_file

    missing, unexpected = unet.load_state_dict(load_file(weights), strict=False)
    if unexpected or any(".safe_attn." in key for key in missing):
        raise ValueError(f"{weights} does not match this UNet's Safe Cross Attention modules")
    return True


def save_safe_attention(unet, folder: str) -> str:
    """Write the Safe Cross Attention weights as `<folder>/unet/safe_attention.safetensors`."""
    from safetensors.torch import save_file

    path = os.path.join(folder, "unet", WEIGHTS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items() if ".safe_attn." in k}, path)
    return path
