"""`u2s train instruct-pix2pix` on the tiny InstructPix2Pix pipeline and a few real photos at 32 px."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import ImageOps
from safetensors.torch import load_file

import u2s_hf as u2s
from u2s_hf import cli, training_data
from u2s_hf.editors import safe_attention
from u2s_hf.training import TrainConfig, TrainingError, train_instruct_pix2pix

import corpus

torch.set_num_threads(1)
NAMES = ("astronaut", "coffee", "chelsea", "grace_hopper", "camera", "page")
EDIT, PUBLIC = "make the person a tall man with red hair", "a person with short grey hair in a blue suit"
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "safe_image": datasets.Image(),
        "c_edit": datasets.Value("string"),
        "c_pub": datasets.Value("string"),
        "u2s_status": datasets.Value("string"),
        "s_norm": datasets.Value("float64"),
    }
)


@pytest.fixture(scope="module")
def triplets(photos, tmp_path_factory) -> str:
    """Six triplets of real photos at 32 px (the edit: colours inverted): four to train on, one redacted (skipped
    by status), one with s_norm 0.5 (dropped by the paper's 0.7). A save_to_disk folder."""
    small = [ImageOps.fit(photos[n].convert("RGB"), (32, 32)) for n in NAMES]
    ds = datasets.Dataset.from_dict(
        {
            "image": small,
            "safe_image": [ImageOps.invert(image) for image in small],
            "c_edit": [EDIT] * 6,
            "c_pub": [PUBLIC] * 6,
            "u2s_status": ["edited"] * 4 + ["redacted", "edited"],
            "s_norm": [0.9, 0.95, 1.1, 0.8, 0.9, 0.5],
        },
        features=FEATURES,
    )
    folder = tmp_path_factory.mktemp("triplets") / "data"
    ds.save_to_disk(str(folder))
    return str(folder)


def config(model, data, out, **settings) -> TrainConfig:
    """Tiny runs: 32 px, two images per micro-batch, one micro-batch per step, in this process."""
    small = dict(resolution=32, batch_size=2, gradient_accumulation=1, lr=1e-4, max_steps=3, num_workers=0)
    return TrainConfig(data=str(data), model=str(model), out=str(out), **{**small, **settings})


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def unet_weights(folder) -> dict:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_the_loss_falls_on_a_set_it_can_overfit(tiny_ip2p, triplets, tmp_path):
    out = tmp_path / "out"
    train_instruct_pix2pix(config(tiny_ip2p, triplets, out, batch_size=4, lr=1e-3, max_steps=30, checkpoint_every=10))
    seen = losses(out)
    assert len(seen) == 30 and np.mean(seen[-5:]) < 0.8 * np.mean(seen[:5]), np.round(seen, 3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20", "step-30"]  # keep_checkpoints=2
    card = (out / "README.md").read_text()
    assert "| 6 | 1 | 0 | 1 | 4 |" in card  # read, skipped by status, missing, dropped by s_norm, used
    assert "optimizer steps: 30 (120 samples, 30.00 epochs" in card and str(tmp_path) not in card


def test_the_trained_folder_loads_as_an_editor_and_edits_differently(tiny_ip2p, triplets, photos, tmp_path):
    out = tmp_path / "out"
    train_instruct_pix2pix(config(tiny_ip2p, triplets, out, safe_attention=True, lr=1e-3, max_steps=4))
    assert not [k for k in unet_weights(out) if ".safe_attn." in k]  # the plain UNet's file stays plain
    assert (out / "unet" / safe_attention.WEIGHTS).is_file()
    ds = corpus.image_dataset({n: photos[n] for n in ("astronaut", "grace_hopper")})
    ds = ds.add_column("privacy_flag", [True, True]).add_column("c_edit", [EDIT] * 2).add_column("c_pub", [PUBLIC] * 2)
    run = dict(editor="instruct-pix2pix", steps=2, resolution=64)
    trained = ds.map(u2s.Edit(model=str(out), safe_attention=True, **run), batched=True)
    base = ds.map(u2s.Edit(model=tiny_ip2p, safe_attention="untrained", **run), batched=True)
    assert trained["u2s_status"] == base["u2s_status"] == ["edited", "edited"]
    for after, before in zip(trained["safe_image"], base["safe_image"], strict=True):
        assert np.abs(corpus.pixels(after).astype(int) - corpus.pixels(before)).mean() > 1


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_ip2p, triplets, tmp_path):
    """Three steps, then --resume --max-steps 6, against six straight: the data order wraps epochs, two micro-batches
    per step, conditioning dropout, EMA, the UNet and Safe Cross Attention all trained."""
    settings = dict(safe_attention=True, gradient_accumulation=2, conditioning_dropout=0.3, ema=True, ema_decay=0.5)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_instruct_pix2pix(config(tiny_ip2p, triplets, straight, max_steps=6, checkpoint_every=3, **settings))
    train_instruct_pix2pix(config(tiny_ip2p, triplets, interrupted, max_steps=3, checkpoint_every=3, **settings))
    first = unet_weights(interrupted)
    train_instruct_pix2pix(config(tiny_ip2p, triplets, interrupted, max_steps=6, resume=True, **settings))
    assert losses(interrupted) == pytest.approx(losses(straight), rel=1e-5) and len(losses(straight)) == 6
    for name in ("unet/diffusion_pytorch_model.safetensors", f"unet/{safe_attention.WEIGHTS}"):
        a, b = load_file(str(straight / name)), load_file(str(interrupted / name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
    assert any(not torch.equal(first[k], unet_weights(interrupted)[k]) for k in first)  # it did go on
    with pytest.raises(TrainingError, match=r"lr was 0\.0001, now 0\.001"):  # settings that shape the weights stay
        train_instruct_pix2pix(config(tiny_ip2p, triplets, interrupted, max_steps=7, resume=True, lr=1e-3, **settings))


def test_training_only_safe_attention_leaves_the_unets_own_weights_alone(tiny_ip2p, triplets, tmp_path):
    out = tmp_path / "out"
    train_instruct_pix2pix(
        config(tiny_ip2p, triplets, out, safe_attention=True, train="safe-attention", lr=1e-3, max_steps=2)
    )
    base, trained = unet_weights(Path(tiny_ip2p)), unet_weights(out)
    assert base.keys() == trained.keys() and all(torch.equal(base[k], trained[k]) for k in base)
    safe = load_file(str(out / "unet" / safe_attention.WEIGHTS))
    copies = {k: trained[k.replace(".safe_attn.", ".attn2.")] for k in safe}  # where they started
    assert safe and all(not torch.equal(v, copies[k]) for k, v in safe.items() if k.endswith("to_q.weight"))


def test_clear_errors_before_any_training(tiny_ip2p, triplets, tmp_path):
    no_target = tmp_path / "no-target"
    datasets.load_from_disk(triplets).remove_columns("safe_image").save_to_disk(str(no_target))
    with pytest.raises(TrainingError, match="no column safe_image"):
        train_instruct_pix2pix(config(tiny_ip2p, no_target, tmp_path / "a"))
    no_original = tmp_path / "no-original"
    datasets.load_from_disk(triplets).remove_columns("image").save_to_disk(str(no_original))
    with pytest.raises(TrainingError, match="keep_original=True"):
        train_instruct_pix2pix(config(tiny_ip2p, no_original, tmp_path / "b"))
    with pytest.raises(TrainingError, match=r"no triplet left.*6 rows read, 1 skipped by status.*5 dropped by s_norm"):
        train_instruct_pix2pix(config(tiny_ip2p, triplets, tmp_path / "c", min_snorm=5.0))
    plain = tmp_path / "sd"
    shutil.copytree(tiny_ip2p, plain)
    unet_config = json.loads((plain / "unet" / "config.json").read_text())
    (plain / "unet" / "config.json").write_text(json.dumps({**unet_config, "in_channels": 4}))
    with pytest.raises(TrainingError, match="not an InstructPix2Pix model: its UNet takes 4 input channels"):
        train_instruct_pix2pix(config(plain, triplets, tmp_path / "d"))
    with pytest.raises(TrainingError, match="--use-8bit-adam needs bitsandbytes"):
        train_instruct_pix2pix(config(tiny_ip2p, triplets, tmp_path / "e", use_8bit_adam=True))
    with pytest.raises(TrainingError, match="--train unet would save the untrained copies"):
        train_instruct_pix2pix(config(tiny_ip2p, triplets, tmp_path / "f", safe_attention=True, train="unet"))
    with pytest.raises(ValueError, match="add --safe-attention"):
        config(tiny_ip2p, triplets, tmp_path / "g", train="both")
    someone_elses = tmp_path / "theirs"
    someone_elses.mkdir()
    (someone_elses / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(TrainingError, match="holds no u2s training run"):
            train_instruct_pix2pix(config(tiny_ip2p, triplets, someone_elses, resume=resume))
    assert [p.name for p in someone_elses.iterdir()] == ["notes.txt"]


def test_without_s_norm_the_filter_scores_with_score_edit(tiny_ip2p, triplets, tmp_path):
    from u2s_hf.stages.score_edit import ScoreEdit

    import tiny_models

    clip = tiny_models.open_clip_model(tmp_path / "clip")
    unscored = tmp_path / "unscored"
    datasets.load_from_disk(triplets).remove_columns("s_norm").save_to_disk(str(unscored))
    edited = datasets.load_from_disk(str(unscored)).filter(lambda row: row["u2s_status"] == "edited")
    for name in ("image", "safe_image"):
        edited = edited.cast_column(name, datasets.Image(decode=False))
    scores = [s for s in edited.map(ScoreEdit(clip_model=clip), batched=True)["s_norm"] if s is not None]
    assert len(scores) >= 2, scores
    threshold = float(np.median(scores))  # some rows above it, some not
    kept = training_data.open_triplets(
        config(tiny_ip2p, unscored, tmp_path / "out", clip_model=clip, min_snorm=threshold)
    )
    above = sum(s > threshold for s in scores)
    assert 0 < above < 5
    assert kept.counts == {
        "read": 6,
        "skipped_status": 1,
        "skipped_missing": 0,
        "dropped_snorm": 5 - above,
        "used": above,
    }


def test_the_command_line(tiny_ip2p, triplets, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["train", "instruct-pix2pix", "--data", triplets, "--model", tiny_ip2p, "--out", out, "--resolution", "32"]
    args += ["--batch-size", "2", "--gradient-accumulation", "1", "--max-steps", "2", "--num-workers", "1"]
    args += ["--lr-scheduler", "cosine", "--lr-warmup-steps", "1", "--ema", "--gradient-checkpointing"]
    args += ["--min-snorm", "none"]
    assert cli.main(list(map(str, args))) == 0
    assert "u2s train: wrote" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2] and log[0]["lr"] == 0  # warm-up starts at 0
    card = (out / "README.md").read_text()
    assert "| 6 | 1 | 0 | 0 | 5 |" in card and "ema: True" in card
    assert cli.main([*map(str, args), "--use-8bit-adam"]) == 2
    assert "needs bitsandbytes" in capsys.readouterr().err
    assert cli.main([*map(str, args), "--resume", "--max-steps", "3"]) == 0  # a resumed run may go further
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 3
