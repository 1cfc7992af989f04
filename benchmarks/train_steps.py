"""Training steps per second of `u2s train instruct-pix2pix`, and what they make of the paper's recipe.

First, on any machine, it counts what one training image costs with real-size components built on PyTorch's meta
device (shapes only: no weights, no compute, no download): Stable Diffusion 1.5's UNet with InstructPix2Pix's 8
input channels, SD's VAE and a CLIP-L-size text encoder. FLOPs of the UNet's forward pass (the backward pass costs
about twice that), of the two VAE encodings (source and target) and of the text encoder at 256 px; the bytes the
UNet's forward pass saves for backward (activations) per image; and so the memory at a batch size and the time of
the paper's recipe at an assumed share of a GPU's dense bf16 peak. These are estimates: the measured numbers below
are the ones to trust.

Then it times whole optimizer steps of the training code's own loss (`u2s_hf.training.loss_of`: VAE encoding of
both images, text encoding, UNet forward and backward) plus AdamW. On a GPU: the real-size components with random
weights (they cost the same time as trained ones), 256 px, bf16 autocast and fp32 weights, as `--mixed-precision
bf16` trains; it prints steps and images per second, the peak GPU memory, and the time of the paper's recipe at that
rate: 51,401 triplets, 47,623 after the s_norm filter, 200 epochs, 256 images per optimizer step. Without a GPU it
times the tiny test pipeline at 32 px on the CPU and says so.

    python benchmarks/train_steps.py [--batches 8 64] [--steps 10] [--safe-attention]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

import torch  # noqa: E402

from u2s_hf import training  # noqa: E402
from u2s_hf.editors import safe_attention  # noqa: E402

import tiny_models  # noqa: E402
from editor_gpu import sd15_ip2p_parts  # noqa: E402

TRIPLETS, FILTERED, EPOCHS, PER_STEP = 51_401, 47_623, 200, 256


def real_parts(device, dtype, texts: int) -> training.Parts:
    from diffusers import DDPMScheduler

    tok = tiny_models.clip_tokenizer(["make the person a tall man"] * 20)
    unet, vae, text_encoder = sd15_ip2p_parts(tok)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return assemble(unet, vae, text_encoder, tok, scheduler, device, dtype, texts)


def counts(texts: int, resolution: int = 256) -> dict:
    """Per training image, on the meta device: GFLOPs (UNet forward, one VAE encoding, one text) and the MiB the
    UNet's forward saves for backward in fp32 (the difference between batches 3 and 1, so weights do not count;
    a tensor saved by two operations counts twice: an upper bound). Parameters in millions."""
    from torch.utils.flop_counter import FlopCounterMode

    tok = tiny_models.clip_tokenizer(["make the person a tall man"] * 20)
    with torch.device("meta"):
        unet, vae, text_encoder = sd15_ip2p_parts(tok)
        if texts > 1:
            safe_attention.add_safe_attention(unet, 77, None)
    side = resolution // 8

    def unet_inputs(batch):
        return (
            torch.zeros(batch, 8, side, side, device="meta"),
            torch.zeros(batch, device="meta", dtype=torch.long),
            torch.zeros(batch, 77 * texts, 768, device="meta"),
        )

    def flops(run) -> float:
        with FlopCounterMode(display=False) as counter:
            run()
        return counter.get_total_flops() / 1e9

    def saved(batch) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: sizes.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            unet(*unet_inputs(batch))
        return sum(sizes)

    with torch.no_grad():
        result = {
            "unet": flops(lambda: unet(*unet_inputs(1))),
            "vae": flops(lambda: vae.encode(torch.zeros(1, 3, resolution, resolution, device="meta"))),
            "text": flops(lambda: text_encoder(torch.zeros(1, 77, dtype=torch.long, device="meta"))),
        }
    unet.train()
    result["saved_mib"] = (saved(3) - saved(1)) / 2 / 2**20
    result["params_m"] = sum(p.numel() for p in unet.parameters()) / 1e6
    return result


def tiny_parts(device, dtype, texts: int) -> training.Parts:
    from diffusers import DDPMScheduler, StableDiffusionInstructPix2PixPipeline

    folder = tiny_models.instruct_pix2pix(Path(tempfile.mkdtemp(prefix="u2s-train-")) / "model")
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return assemble(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler, device, dtype, texts)


def assemble(unet, vae, text_encoder, tok, scheduler, device, dtype, texts) -> training.Parts:
    if texts > 1:
        safe_attention.add_safe_attention(unet, tok.model_max_length, None)
    vae.to(device, dtype).requires_grad_(False)
    text_encoder.to(device, dtype).requires_grad_(False)
    parts = training.Parts(unet.to(device).train(), vae, text_encoder, tok, scheduler, None, dtype)
    with torch.no_grad():
        parts.null_context = parts.encode([[""]] * texts)
    return parts


def steps_per_second(parts, batch: int, resolution: int, steps: int, texts: int, device, dtype) -> tuple[float, float]:
    """(optimizer steps per second, peak GPU GiB) at one micro-batch of `batch` per step, after 3 warm-up steps."""
    params = [p for p in parts.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, **training.ADAM)
    images = torch.rand(2, batch, 3, resolution, resolution) * 2 - 1
    words = [["make the person a tall man with red hair"] * batch] * texts
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(3 + steps):
        if step == 3:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        generator = torch.Generator().manual_seed(step)
        with autocast:
            loss = training.loss_of(parts, parts.unet, images[0], images[1], words, generator, 0.05)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del optimizer
    return 1 / seconds, peak


PEAKS = {"A100": 312, "H100/H200": 989}  # dense bf16 TFLOP/s (NVIDIA's data sheets, SXM)
SHARES = (0.3, 0.4)  # assumed share of that peak a training step reaches


def estimate(safe: bool) -> None:
    """What the recipe costs by count (see the module's docstring)."""
    texts = 3 if safe else 1
    c = counts(texts)
    per_image = 2 * c["vae"] + 3 * c["unet"] + texts * c["text"]
    images = FILTERED * EPOCHS
    name = "UNet + Safe Cross Attention" if safe else "UNet"
    print(
        f"  {name}: {c['params_m']:.0f} M parameters; per 256 px image: UNet forward {c['unet']:.0f} GFLOP (x3 with "
        f"backward), VAE encoding {c['vae']:.0f} GFLOP (x2: source and target), text {c['text']:.0f} GFLOP (x{texts});"
        f" {per_image / 1000:.2f} TFLOP per training image, {per_image * images / 1e9:.1f} EFLOP for the recipe"
    )
    states = c["params_m"] * 1e6 * 16 / 2**30  # fp32 weights and gradients, AdamW's two moments
    activations = c["saved_mib"] / 2 / 1024  # bf16 autocast: about half of the fp32 count
    for batch in (8, 64):
        print(
            f"    memory at batch {batch}: about {states + 0.4 + batch * activations:.0f} GiB ({states:.1f} weights, "
            f"gradients and AdamW states, 0.4 frozen VAE and text encoder, {batch} x {activations:.2f} activations; "
            f"+{states / 4:.1f} with --ema)"
        )
    for gpu, peak in PEAKS.items():
        hours = [per_image * images / (peak * 1000 * share) / 3600 for share in SHARES]
        shares = "-".join(f"{share:.0%}" for share in SHARES)
        print(f"    recipe on one {gpu} at {shares} of {peak} TFLOP/s: about {hours[1]:.0f}-{hours[0]:.0f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--safe-attention", action="store_true", help="also Safe Cross Attention (both trained)")
    args = parser.parse_args()
    total = math.ceil(FILTERED * EPOCHS / PER_STEP)
    print(
        f"paper recipe: {TRIPLETS:,} triplets, {FILTERED:,} after the s_norm filter, x {EPOCHS} epochs / {PER_STEP} "
        f"per optimizer step (batch 64 x 4 accumulated) = {total:,} optimizer steps, {FILTERED * EPOCHS:,} images"
    )
    print("estimates by count (real-size components on the meta device; no weights, no compute):")
    for safe in [False, True] if args.safe_attention else [False]:
        estimate(safe)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda:0" if gpu else "cpu")
    if gpu:
        dtype, resolution, build = torch.bfloat16, 256, real_parts
        print(f"measured on {torch.cuda.get_device_name(0)}: real-size random-weight components, 256 px, bf16")
        print("autocast, fp32 weights, AdamW, one process")
    else:
        torch.set_num_threads(1)
        dtype, resolution, build = torch.float32, 32, tiny_parts
        print("measured without a GPU: the tiny test pipeline at 32 px on the CPU, one thread (these numbers say")
        print("nothing about real models; run this on a GPU for the real rate)")
    variants = [("UNet", 1)] + ([("UNet + Safe Cross Attention", 3)] if args.safe_attention else [])
    rates = {}
    for name, texts in variants:
        parts = build(device, dtype, texts)
        for batch in args.batches:
            try:
                rate, peak = steps_per_second(parts, batch, resolution, args.steps, texts, device, dtype)
            except torch.OutOfMemoryError:
                print(f"  {name:28s} batch {batch:3d}: out of memory")
                torch.cuda.empty_cache()
                continue
            images = rate * batch
            rates[name, batch] = images
            hours = FILTERED * EPOCHS / images / 3600
            memory = f", peak {peak:5.1f} GiB" if gpu else ""
            print(
                f"  {name:28s} batch {batch:3d}: {rate:6.2f} steps/s, {images:7.1f} images/s{memory}; the recipe's "
                f"{total:,} steps of 256 images at this rate: {hours:7.1f} h"
            )
        del parts
        if gpu:
            torch.cuda.empty_cache()
    for batch in args.batches:
        if ("UNet", batch) in rates and ("UNet + Safe Cross Attention", batch) in rates:
            ratio = rates["UNet", batch] / rates["UNet + Safe Cross Attention", batch]
            print(f"  Safe Cross Attention takes {ratio:.2f}x the time of the UNet alone at batch {batch}")


if __name__ == "__main__":
    main()
