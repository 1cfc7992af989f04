"""TrainConfig: the settings of `u2s train instruct-pix2pix` (each field is one command-line option, its help here).

A light module (no torch): the CLI builds its options from these fields before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .settings import Settings

TRAIN_MODES = ("unet", "safe-attention", "both")
# What a resumed run may change: everything else shapes the weights, so it must match the checkpoint's run.
RESUMABLE_CHANGES = frozenset(
    {
        "out",
        "resume",
        "max_steps",
        "epochs",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
        "gradient_checkpointing",
    }
)


class TrainingError(ValueError):
    """Training cannot start: the data, the base model, the output folder or the settings; the message says why."""


def optional_float(text: str) -> float | None:
    """A number, or "none"."""
    return None if text.strip().lower() == "none" else float(text)


def _option(default, help: str, **argparse_options):
    """A field with its command-line help (cli.add_dataclass_options makes the option from it)."""
    return field(default=default, metadata={"help": help, **argparse_options})


def _required(help: str, **argparse_options):
    return field(metadata={"help": help, **argparse_options})


@dataclass(frozen=True)
class TrainConfig(Settings):
    """How to fine-tune an InstructPix2Pix UNet (and Safe Cross Attention) on Unsafe2Safe triplets. The defaults are
    the paper's recipe: 256 px, batch 64 with 4 accumulation steps (256 per optimizer step), AdamW at 1e-5 with a
    constant schedule, 200 epochs, the UNet only, from the base checkpoint."""

    data: str = _required(
        "the triplets: a save_to_disk folder, a .parquet file or a Hub dataset id with the original image, "
        "safe_image and c_edit (and c_pub with --safe-attention), as the pipeline wrote them",
        metavar="SRC",
    )
    model: str = _required("the base InstructPix2Pix pipeline (a folder or Hub id, e.g. MagicBrush)", metavar="BASE")
    out: str = _required("output folder: the trained pipeline, train_log.jsonl, README.md, checkpoints/", metavar="DIR")
    split: str | None = _option(None, "the split to train on (default: train, or the only split)")
    revision: str | None = _option(None, "the base model's revision (a Hub branch, tag or commit)")
    image_column: str = _option("image", "the source image column (the original, before editing)")
    target_column: str = _option("safe_image", "the target image column (the edited image)")
    prompt: str = _option("c_edit", "the instruction column (as the editor's prompt=)")
    safe_attention: bool = _option(
        False, "add Safe Cross Attention (attending to c_pub and c_edit) and save its weights with the model"
    )
    train: str | None = _option(
        None,
        "what is trained: the UNet, only the Safe Cross Attention modules, or both (default: unet; both with "
        "--safe-attention)",
        choices=TRAIN_MODES,
    )
    resolution: int = _option(256, "training size in pixels (shorter side resized, then centre-cropped)")
    batch_size: int = _option(64, "images per micro-batch per process")
    gradient_accumulation: int = _option(4, "micro-batches per optimizer step")
    lr: float = _option(1e-5, "AdamW learning rate")
    epochs: int = _option(200, "passes over the filtered triplets (ignored with --max-steps)")
    max_steps: int | None = _option(None, "stop after this many optimizer steps (default: from --epochs)")
    checkpoint_every: int = _option(500, "write a resumable checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = _option(2, "keep the newest N checkpoints (0: keep all)")
    resume: bool = _option(False, "continue from the newest checkpoint in --out (a fresh start if there is none)")
    mixed_precision: str = _option(
        "no", "autocast precision (the UNet's weights stay fp32)", choices=("no", "fp16", "bf16")
    )
    seed: int = _option(0, "seed of the data order, noise, timesteps and conditioning dropout")
    min_snorm: float | None = _option(
        0.7,
        "keep only triplets whose s_norm is above this (computed with ScoreEdit when the column is missing); none: "
        "keep all",
        type=optional_float,
        metavar="MIN_SNORM|none",
    )
    clip_model: str | None = _option(
        None, "CLIP model for ScoreEdit when s_norm must be computed (default: ScoreEdit's)"
    )
    lr_scheduler: str = _option("constant", "learning-rate schedule", choices=("constant", "cosine"))
    lr_warmup_steps: int = _option(0, "linear warm-up steps")
    conditioning_dropout: float = _option(
        0.05, "probability of dropping the texts, the image, and both (each), as InstructPix2Pix trains"
    )
    ema: bool = _option(False, "keep an exponential moving average of the trained weights and save it")
    ema_decay: float = _option(0.9999, "EMA decay")
    max_grad_norm: float = _option(1.0, "gradient clipping norm")
    gradient_checkpointing: bool = _option(False, "recompute activations in the backward pass (less memory, slower)")
    use_8bit_adam: bool = _option(False, "8-bit AdamW from bitsandbytes (CUDA)")
    num_workers: int = _option(4, "DataLoader worker processes decoding images (0: in the training process)")

    def validate(self):
        for name in ("data", "model", "out"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        positive = ("resolution", "batch_size", "gradient_accumulation", "epochs", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be > 0, not {self.max_steps!r}")
        for name in ("keep_checkpoints", "lr_warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if not self.lr > 0 or not self.max_grad_norm > 0:
            raise ValueError("lr and max_grad_norm must be > 0")
        if not 0 <= self.conditioning_dropout <= 1 / 3:
            raise ValueError(f"conditioning_dropout must be in [0, 1/3] (three cases), not {self.conditioning_dropout}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        choices = {
            "train": (None, *TRAIN_MODES),
            "mixed_precision": ("no", "fp16", "bf16"),
            "lr_scheduler": ("constant", "cosine"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {getattr(self, name)!r}")
        if self.train in ("safe-attention", "both") and not self.safe_attention:
            raise ValueError(f"--train {self.train} trains Safe Cross Attention: add --safe-attention")

    @property
    def trained(self) -> str:
        """What is trained: `train`, or its default (the UNet; the UNet and the safe modules with Safe Cross
        Attention)."""
        return self.train or ("both" if self.safe_attention else "unet")
