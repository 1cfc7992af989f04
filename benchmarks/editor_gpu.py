"""Seconds per 512 px image for each diffusion editor at the paper's step counts, batch 1 and 8.

On a GPU it builds real-size random-weight components from configs (no download): an SD3-medium transformer, VAE
and both CLIP text encoders (T5 left out, as `text_encoder_3=False` allows), and an SD1.5-size InstructPix2Pix
UNet, VAE and CLIP-L text encoder; saves them and loads them through the editors exactly as a Hub checkpoint.
Random weights cost the same time as trained ones. Without a GPU it runs the tiny test configs and says so.

    python benchmarks/editor_gpu.py [--batches 1 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from u2s_hf.editors.flowedit import FlowEdit, FlowEditSettings  # noqa: E402
from u2s_hf.editors.instruct_pix2pix import InstructPix2Pix, InstructPix2PixSettings  # noqa: E402

import tiny_models  # noqa: E402


def clip_text(hidden: int, layers: int, heads: int, projection: int, tok, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def real_sd3(folder: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    tok = tiny_models.clip_tokenizer(["a person in a room"] * 20)
    transformer = SD3Transformer2DModel(  # stable-diffusion-3-medium's transformer configuration
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        pos_embed_max_size=192,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5305,
    )
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=clip_text(768, 12, 12, 768, tok, True),
        tokenizer=tok,
        text_encoder_2=clip_text(1280, 32, 20, 1280, tok, True),
        tokenizer_2=tok,
        text_encoder_3=None,
        tokenizer_3=None,
    ).to(torch.float16).save_pretrained(folder)
    return folder


def sd15_ip2p_parts(tok):
    """Random-weight, real-size parts of InstructPix2Pix on Stable Diffusion 1.5: the UNet with 8 input channels,
    SD's VAE, a CLIP ViT-L/14-size text tower (also used by benchmarks/train_steps.py)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=8,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        latent_channels=4,
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    return unet, vae, clip_text(768, 12, 12, 768, tok, False)


def real_ip2p(folder: Path) -> Path:
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    tok = tiny_models.clip_tokenizer(["make the person a tall man"] * 20)
    unet, vae, text_encoder = sd15_ip2p_parts(tok)
    StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(torch.float16).save_pretrained(folder)
    return folder


def seconds_per_image(editor, batch: int, prompts, **settings) -> float:
    """Seconds per image for one batch of `batch` 512-px images, after a one-image warm-up."""
    images = [np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8) for i in range(batch)]
    timed = editor.with_settings(dataclasses.replace(editor.settings, **settings))
    timed.edit(images[:1], prompts[:1], [0])  # warm-up: kernels, allocator
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    timed.edit(images, prompts[:1] * batch, list(range(batch)))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = "cuda:0" if gpu else "cpu"
    work = Path(tempfile.mkdtemp(prefix="u2s-editors-"))
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)}; real-size random-weight components, fp16, 512 px")
        ip2p, sd3, resolution = real_ip2p(work / "ip2p"), real_sd3(work / "sd3"), 512
    else:
        torch.set_num_threads(1)
        print("no GPU: tiny test configs at 64 px on the CPU, one thread (these numbers say nothing about real models)")
        ip2p, sd3, resolution = tiny_models.instruct_pix2pix(work / "ip2p"), tiny_models.sd3(work / "sd3"), 64
    editors = {
        "instruct-pix2pix (100 steps)": (
            InstructPix2Pix.from_pretrained(InstructPix2PixSettings(model=str(ip2p), resolution=resolution), device),
            ["make the person a tall man"],
            dict(steps=100, guidance_scale=7.5, image_guidance_scale=1.5),
        ),
        "flowedit (50 steps, 33 active)": (
            FlowEdit.from_pretrained(
                FlowEditSettings(model=str(sd3), text_encoder_3=False, resolution=resolution), device
            ),
            [("a person in a room", "a tall man in a room")],
            dict(steps=50, source_guidance=3.5, target_guidance=13.5, n_min=0, n_max=33, n_avg=1),
        ),
    }
    for name, (editor, prompts, settings) in editors.items():
        for batch in args.batches:
            seconds = seconds_per_image(editor, batch, prompts, **settings)
            print(f"  {name:32s} batch {batch:2d}: {seconds:7.3f} s per image")


if __name__ == "__main__":
    main()
