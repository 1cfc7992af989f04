"""What a training run writes in its output folder: the marker that says the folder is a u2s training run, the
resumable checkpoints (`checkpoints/step-N/`), the loss log (`train_log.jsonl`) and the model card (`README.md`).

A checkpoint holds everything that moves the run on: the trained weights (`trainable.safetensors`, by parameter
name), the optimizer, the learning-rate schedule, the EMA and the fp16 gradient scaler (`*.pt`, read back with
`torch.load(weights_only=True)`), the RNG states of torch, CUDA, numpy and Python (`rng.pt`), and `state.json`: the
step, which also fixes the data position (see `training_data`), the number of processes and a digest of the rows.
It is written into a hidden folder and renamed into place, so a killed run never leaves a half-written one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np

from .release_card import card_text
from .sources import HUB_ID
from .training_config import RESUMABLE_CHANGES, TrainConfig, TrainingError
from .version import __version__

MARKER = ".u2s-train.json"  # written first: the folder holds a u2s training run (its settings)
LOG = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
STEP = re.compile(r"^step-(\d+)$")
TRAINED = {
    "unet": "the UNet",
    "safe-attention": "only the Safe Cross Attention modules",
    "both": "the UNet and the Safe Cross Attention modules",
}


def check_out(config: TrainConfig) -> Path:
    """The output folder, checked (nothing written): a new or empty folder, or with `resume` one that holds this run
    (the same settings, apart from those in RESUMABLE_CHANGES). Never one that holds anything else."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise TrainingError(f"--out {out} is not empty and holds no u2s training run; choose a new folder")
        if not config.resume:
            raise TrainingError(
                f"--out {out} holds a training run: pass --resume to continue it, or choose a new folder"
            )
        before = json.loads(marker.read_text())["config"]
        now = settings_of(config)
        changed = sorted(
            k for k in set(before) | set(now) if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k)
        )
        if changed:
            differences = ", ".join(f"{k} was {before.get(k)!r}, now {now.get(k)!r}" for k in changed)
            allowed = ", ".join(sorted(RESUMABLE_CHANGES))
            raise TrainingError(
                f"--resume: {differences}; a resumed run must keep the settings that shape the weights (it may "
                f"change {allowed})"
            )
    return out


def start_out(config: TrainConfig) -> Path:
    """Create the output folder and its marker, unless it holds this run already (after `check_out`)."""
    out = Path(config.out)
    if not (out / MARKER).is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(json.dumps({"u2s_hf": __version__, "config": settings_of(config)}, indent=1))
    return out


def settings_of(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in `out`, or None."""
    folder = Path(out) / CHECKPOINTS
    found = [
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else ())
        if (m := STEP.match(p.name)) and (p / "state.json").is_file()
    ]
    return max(found)[1] if found else None


def save_checkpoint(out: Path, step: int, state: dict, tensors: dict, objects: dict, keep: int) -> Path:
    """Write checkpoint `step`: `state` as state.json, `tensors` (name -> tensor) as trainable.safetensors, each of
    `objects` (name -> state dict) as name.pt, the RNG states as rng.pt; then keep only the newest `keep` (0: all)."""
    import torch
    from safetensors.torch import save_file

    folder = Path(out) / CHECKPOINTS
    final, tmp = folder / f"step-{step}", folder / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "trainable.safetensors"))
    for name, value in {**objects, "rng": rng_state()}.items():
        torch.save(value, tmp / f"{name}.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        steps = sorted(int(m.group(1)) for p in folder.iterdir() if (m := STEP.match(p.name)))
        for old in steps[:-keep]:
            shutil.rmtree(folder / f"step-{old}")
    return final


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(state, tensors, objects) of a checkpoint that save_checkpoint wrote; the RNG states are restored."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    objects = {p.stem: torch.load(p, weights_only=True) for p in sorted(path.glob("*.pt"))}
    set_rng_state(objects.pop("rng"))
    return json.loads((path / "state.json").read_text()), load_file(str(path / "trainable.safetensors")), objects


def rng_state() -> dict:
    import torch

    _, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "gauss": [has_gauss, gauss]},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], *numpy["gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))


def keep_log_until(out: Path, step: int) -> None:
    """Drop the log lines after `step` (a run resumed there writes them again)."""
    path = Path(out) / LOG
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def append_log(out: Path, entry: dict) -> None:
    with open(Path(out) / LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_log(out: Path) -> list[dict]:
    path = Path(out) / LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def public_name(src: str) -> str:
    """A Hub id as it is; a local path by its base name (a card carries no paths)."""
    return src if HUB_ID.match(src) and not os.path.exists(src) else Path(src.rstrip("/")).name


def write_card(out: Path, config: TrainConfig, counts: dict, summary: dict) -> Path:
    """The model card `out/README.md`: base model, data, recipe, filter counts and how the run went."""
    base, data = public_name(config.model), public_name(config.data)
    front = ["library_name: diffusers", "pipeline_tag: image-to-image", "tags:"]
    front += [f"- {tag}" for tag in ("instruct-pix2pix", "unsafe2safe", "u2s_hf")]
    front += ["- safe-cross-attention"] if config.safe_attention else []
    front += [f"base_model: {base}"] if HUB_ID.match(base) else []
    recipe = {k: v for k, v in settings_of(config).items() if k not in ("data", "model", "out", "resume")}
    recipe["train"] = config.trained
    log = read_log(out)
    last = [entry["loss"] for entry in log[-10:]]
    safe = ", safe_attention=True" if config.safe_attention else ""
    lines = [
        "---",
        *front,
        "---",
        "",
        "# InstructPix2Pix fine-tuned on Unsafe2Safe triplets",
        "",
        f"Fine-tuned from {card_text(base)} on {card_text(data)} with u2s_hf {__version__} "
        f"(`u2s train instruct-pix2pix`): {TRAINED[config.trained]} trained"
        + (" (Safe Cross Attention weights in `unet/safe_attention.safetensors`)." if config.safe_attention else "."),
        "",
        "## Data",
        "",
        "| rows read | skipped by status (not edited) | skipped: missing image or text | dropped by s_norm | used |",
        "|---|---|---|---|---|",
        f"| {counts['read']} | {counts['skipped_status']} | {counts['skipped_missing']} | {counts['dropped_snorm']} "
        f"| {counts['used']} |",
        "",
        f"s_norm threshold: {card_text(config.min_snorm)} (rows kept when s_norm is above it; none: no filter).",
        "",
        "## Recipe",
        "",
        *(f"- {card_text(k)}: {card_text(v)}" for k, v in recipe.items()),
        "",
        "## Training",
        "",
        f"- optimizer steps: {summary['steps']} ({summary['samples']} samples, {summary['epochs']:.2f} epochs, "
        f"{summary['samples_per_step']} per step on {summary['processes']} process(es))",
        f"- loss (mean of the last {len(last)} steps): {np.mean(last):.4f}" if last else "- loss: not logged",
        f"- per-step losses: `{LOG}`",
        "",
        "## Use",
        "",
        "```python",
        "import u2s_hf as u2s",
        "",
        f'ds = ds.map(u2s.Edit(editor="instruct-pix2pix", model="PATH-OR-ID"{safe}), batched=True, batch_size=8)',
        "```",
        "",
    ]
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines))
    return path
