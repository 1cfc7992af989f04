"""`u2s train instruct-pix2pix`: fine-tune an InstructPix2Pix UNet (and Safe Cross Attention) on the triplets the
pipeline wrote (original image, edited image, instruction), on accelerate (one process; `accelerate launch` for
several GPUs).

Each micro-batch: the edited image's VAE latents (sampled, times the VAE's scaling factor) get DDPM noise at a
random timestep (`DDPMScheduler` from the base's scheduler config); the UNet sees them concatenated on channels with
the original image's latents (the distribution's mode) and the texts' CLIP embeddings, and the loss is the MSE
between its prediction and the noise (the velocity for a v-prediction base). InstructPix2Pix's conditioning
dropout: a draw p per image drops the texts when p < 2d, the image's latents (zeros) when d <= p < 3d, so each of
texts only, both, image only happens with probability d. With Safe Cross Attention the context is the
instruction's tokens, then the public caption's and the edit's (the processor splits it), and a dropped text is
the empty text's tokens in all three places: the editor's unconditional guidance rows (see
`editors.safe_attention`).

Every random draw of a micro-batch (noise, timesteps, dropout, the latents' sample) comes from a generator seeded by
(seed, step, micro-batch, process), and the data order is a function of the step (`training_data`), so a run
resumed from a checkpoint continues exactly as an uninterrupted one would (`training_output` says what a checkpoint
holds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import training_data, training_output
from .training_config import TrainConfig, TrainingError, optional_float

logger = logging.getLogger("u2s_hf")
IN_CHANNELS = 8  # InstructPix2Pix: noisy latents (4) + the source image's latents (4)
ADAM = dict(betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)  # AdamW settings of InstructPix2Pix's training

__all__ = ["TrainConfig", "TrainingError", "loss_of", "optional_float", "train_instruct_pix2pix"]


@dataclass
class Parts:
    """The models a training step uses. `null_context`: the empty text's embedding in every text slot."""

    unet: object
    vae: object
    text_encoder: object
    tokenizer: object
    noise_scheduler: object
    null_context: object
    dtype: object  # of the frozen VAE and text encoder

    def encode(self, texts: list[list[str]]):
        """The context: each column's CLIP embedding (last hidden state, as the pipeline's), side by side."""
        import torch

        tok = self.tokenizer
        encoded = []
        for column in texts:
            ids = tok(
                column, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            )
            encoded.append(self.text_encoder(ids.input_ids.to(self.text_encoder.device))[0])
        return torch.cat(encoded, dim=1)


def train_instruct_pix2pix(config: TrainConfig) -> Path:
    """Train as `config` says; returns the output folder, a diffusers StableDiffusionInstructPix2PixPipeline
    (`Edit(editor="instruct-pix2pix", model=out, safe_attention=...)` loads it) with `train_log.jsonl`, `README.md`
    and `checkpoints/`."""
    optimizer_class = _optimizer_class(config)  # before anything is loaded
    import torch
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    out = training_output.check_out(config)
    _check_base(config)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    main, processes, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    with accelerator.main_process_first():  # the others reuse what the main process cached (ScoreEdit's map)
        triplets = training_data.open_triplets(config)
    accelerator.wait_for_everyone()
    if main:
        training_output.start_out(config)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    parts = _load_parts(config, accelerator.device, dtype)
    names = [n for n, _ in parts.unet.named_parameters() if _trained(n, config)]
    for name, param in parts.unet.named_parameters():
        param.requires_grad_(_trained(name, config))
    if config.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    parts.unet.train()
    by_name = dict(parts.unet.named_parameters())
    params = [by_name[n] for n in names]
    optimizer = optimizer_class(params, lr=config.lr, **ADAM)
    total = training_data.total_steps(len(triplets), config, processes)
    warmup = "constant_with_warmup" if config.lr_scheduler == "constant" and config.lr_warmup_steps else None
    schedule = get_scheduler(
        warmup or config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps, num_training_steps=total
    )
    ema = None
    if config.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
    unet, optimizer = accelerator.prepare(parts.unet, optimizer)
    start = 0
    checkpoint = training_output.latest_checkpoint(out) if config.resume else None
    if checkpoint is not None:
        start = _restore(checkpoint, config, triplets, processes, by_name, names, optimizer, schedule, ema, accelerator)
        if start > total:
            raise TrainingError(f"{checkpoint} is at step {start}, past this run's {total} steps: raise --max-steps")
        logger.info("u2s train: resumed from %s (step %d of %d)", checkpoint, start, total)
    if main:
        training_output.keep_log_until(out, start)
    per_step = training_data.samples_per_step(config, processes)
    order = training_data.Order(len(triplets), config, start, total, processes, rank)
    loader = torch.utils.data.DataLoader(
        training_data.TripletImages(triplets, config),
        batch_sampler=order,
        num_workers=config.num_workers,
        collate_fn=training_data.collate,
        pin_memory=accelerator.device.type == "cuda",
    )
    batches = iter(loader)
    bar = tqdm(total=total, initial=start, desc="u2s train", unit="step", disable=not accelerator.is_local_main_process)
    began = time.perf_counter()
    for step in range(start, total):
        losses = []
        for micro in range(config.gradient_accumulation):
            source, target, texts = next(batches)
            generator = torch.Generator().manual_seed(_seed(config.seed, step, micro, rank))
            last = micro == config.gradient_accumulation - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(unet):  # the prepared UNet autocasts
                loss = loss_of(parts, unet, source, target, texts, generator, config.conditioning_dropout)
                accelerator.backward(loss / config.gradient_accumulation)
            losses.append(loss.detach().float())
        accelerator.clip_grad_norm_(params, config.max_grad_norm)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:
            schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        value = accelerator.gather(torch.stack(losses).mean().reshape(1)).mean().item()
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if main:
            epoch = done * per_step / len(triplets)
            entry = {"step": done, "loss": value, "lr": lr, "epoch": round(epoch, 4)}
            training_output.append_log(out, {**entry, "seconds": round(time.perf_counter() - began, 3)})
        if done % config.checkpoint_every == 0 or done == total:
            _checkpoint(out, done, config, triplets, processes, by_name, names, optimizer, schedule, ema, accelerator)
    bar.close()
    if main:
        if ema is not None:
            ema.copy_to(params)  # the saved model is the average (the checkpoint kept the raw weights)
        _save_pipeline(out, config, accelerator.unwrap_model(unet))
        summary = {"steps": total, "samples": total * per_step, "samples_per_step": per_step, "processes": processes}
        training_output.write_card(
            out, config, triplets.counts, {**summary, "epochs": total * per_step / len(triplets)}
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def loss_of(parts: Parts, unet, source, target, texts, generator, dropout: float):
    """The denoising loss of one micro-batch (see the module's docstring); every random draw from `generator`."""
    import torch
    import torch.nn.functional as F

    device, bsz = parts.vae.device, source.shape[0]
    with torch.no_grad():
        latents = parts.vae.encode(target.to(device, parts.dtype)).latent_dist.sample(generator)
        latents = latents.float() * parts.vae.config.scaling_factor
        image_latents = parts.vae.encode(source.to(device, parts.dtype)).latent_dist.mode().float()
        context = parts.encode(texts)
    scheduler = parts.noise_scheduler
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=generator).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if dropout > 0:
        p = torch.rand(bsz, generator=generator).to(device)
        context = torch.where((p < 2 * dropout)[:, None, None], parts.null_context.to(context.dtype), context)
        keep_image = ~((p >= dropout) & (p < 3 * dropout))
        image_latents = image_latents * keep_image[:, None, None, None].to(image_latents.dtype)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        wanted = noise
    elif kind == "v_prediction":
        wanted = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise TrainingError(f"the base's scheduler predicts {kind!r}; training supports epsilon and v_prediction")
    predicted = unet(torch.cat([noisy, image_latents], dim=1), timesteps, context).sample
    return F.mse_loss(predicted.float(), wanted.float())


def _seed(seed: int, step: int, micro: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


def _trained(name: str, config: TrainConfig) -> bool:
    safe = ".safe_attn." in name
    return {"unet": not safe, "safe-attention": safe, "both": True}[config.trained]


def _optimizer_class(config: TrainConfig):
    import torch

    if not config.use_8bit_adam:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise TrainingError(
            "--use-8bit-adam needs bitsandbytes, which is not installed (pip install bitsandbytes; CUDA GPUs): "
            "install it or leave out --use-8bit-adam"
        ) from None
    return bitsandbytes.optim.AdamW8bit


def _check_base(config: TrainConfig) -> None:
    """Refuse a base whose UNet is not InstructPix2Pix's (8 input channels), from its config alone."""
    from diffusers import UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.load_config(config.model, subfolder="unet", revision=config.revision)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{config.model} is not a diffusers pipeline with a UNet: {exc}") from exc
    if unet.get("in_channels") != IN_CHANNELS:
        raise TrainingError(
            f"{config.model} is not an InstructPix2Pix model: its UNet takes {unet.get('in_channels')} input channels, "
            f"not {IN_CHANNELS} (the noisy latents and the source image's latents); start from an InstructPix2Pix "
            "checkpoint such as timbrooks/instruct-pix2pix or a MagicBrush port"
        )


def _load_parts(config: TrainConfig, device, dtype) -> Parts:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .editors import safe_attention

    where = dict(pretrained_model_name_or_path=config.model, revision=config.revision)
    tokenizer = CLIPTokenizer.from_pretrained(subfolder="tokenizer", **where)
    text_encoder = CLIPTextModel.from_pretrained(subfolder="text_encoder", dtype=dtype, **where).to(device)
    vae = AutoencoderKL.from_pretrained(subfolder="vae", dtype=dtype, **where).to(device)
    unet = UNet2DConditionModel.from_pretrained(subfolder="unet", **where)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if config.resolution % factor:
        raise TrainingError(f"resolution must be a multiple of {factor} (the VAE's scale), not {config.resolution}")
    for frozen in (vae, text_encoder):
        frozen.requires_grad_(False).eval()
    if config.safe_attention:
        weights = _base_safe_weights(config)
        if weights is None and config.trained == "unet":
            raise TrainingError(
                f"{config.model} has no trained Safe Cross Attention weights, and --train unet would save the "
                "untrained copies as if trained: use --train both or --train safe-attention"
            )
        logger.info("u2s train: Safe Cross Attention from %s", weights or "copies of each block's cross-attention")
        safe_attention.add_safe_attention(unet, tokenizer.model_max_length, weights)
    unet.to(device)
    texts = len(training_data.text_columns(config))
    parts = Parts(unet, vae, text_encoder, tokenizer, None, None, dtype)
    with torch.no_grad():
        parts.null_context = parts.encode([[""]] * texts)
    parts.noise_scheduler = DDPMScheduler.from_pretrained(subfolder="scheduler", **where)
    return parts


def _base_safe_weights(config: TrainConfig) -> str | None:
    """The base's trained Safe Cross Attention weights (training goes on from them), or None (start from copies)."""
    from .editors import instruct_pix2pix, safe_attention

    try:
        return instruct_pix2pix.safe_weights(config.model, config.revision)
    except safe_attention.MissingWeightsError:
        return None


def _checkpoint(out, step, config, triplets, processes, by_name, names, optimizer, schedule, ema, accelerator):
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        objects = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}
        if ema is not None:
            objects["ema"] = ema.state_dict()
        if accelerator.scaler is not None:
            objects["scaler"] = accelerator.scaler.state_dict()
        state = {"processes": processes, "rows": triplets.digest, "config": training_output.settings_of(config)}
        tensors = {n: by_name[n] for n in names}
        training_output.save_checkpoint(out, step, state, tensors, objects, config.keep_checkpoints)
    accelerator.wait_for_everyone()


def _restore(path, config, triplets, processes, by_name, names, optimizer, schedule, ema, accelerator) -> int:
    """Load checkpoint `path` into the run; returns its step."""
    import torch

    state, tensors, objects = training_output.load_checkpoint(path)
    if state["processes"] != processes:
        raise TrainingError(
            f"{path} was trained on {state['processes']} process(es), this run has {processes}: the data order "
            "depends on it; resume with the same number"
        )
    if state["rows"] != triplets.digest:
        raise TrainingError(f"{path} was trained on other rows than {config.data} gives now (the data changed)")
    if set(tensors) != set(names):
        raise TrainingError(f"{path} does not hold the weights this run trains")
    with torch.no_grad():
        for name in names:
            by_name[name].copy_(tensors[name])
    optimizer.load_state_dict(objects["optimizer"])
    schedule.load_state_dict(objects["scheduler"])
    if ema is not None:
        ema.load_state_dict(objects["ema"])
        ema.to(device=by_name[names[0]].device)
    if accelerator.scaler is not None and "scaler" in objects:
        accelerator.scaler.load_state_dict(objects["scaler"])
    return int(state["step"])


def _save_pipeline(out: Path, config: TrainConfig, unet) -> None:
    """The trained UNet in a copy of the base pipeline (its VAE, text encoder, tokenizer and scheduler), saved with
    save_pretrained; the Safe Cross Attention modules go to `unet/safe_attention.safetensors`, not into the UNet's
    own weights (a plain UNet loads them without complaint)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from .editors import pipelines, safe_attention

    blocks = [block for _, block in safe_attention.transformer_blocks(unet) if hasattr(block, "safe_attn")]
    modules = [block.safe_attn for block in blocks]
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        config.model, revision=config.revision, unet=unet, **pipelines.NO_SAFETY_CHECKER
    )
    for block in blocks:
        del block.safe_attn
    try:
        pipe.save_pretrained(out)
    finally:
        for block, module in zip(blocks, modules, strict=True):
            block.safe_attn = module
    if config.safe_attention:
        safe_attention.save_safe_attention(unet, os.fspath(out))
