"""Safe Cross Attention on a tiny InstructPix2Pix pipeline."""

import logging
import shutil

import numpy as np
import pytest
import torch

import u2s_hf as u2s
from u2s_hf.editors import safe_attention
from u2s_hf.editors.instruct_pix2pix import InstructPix2Pix

import corpus
import tiny_models

torch.set_num_threads(1)
SETTINGS = dict(steps=2, guidance_scale=7.5, image_guidance_scale=1.5, resolution=64)
TEXTS = ("make the person a tall man", "a person in an orange suit", "a tall man with red hair")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return str(tiny_models.instruct_pix2pix(tmp_path_factory.mktemp("ip2p") / "model"))


@pytest.fixture(scope="module")
def image(photos):
    return np.asarray(photos["astronaut"])


def edit(editor, image, texts):
    return editor.edit([image], [texts], [3], **SETTINGS)[0]


def test_it_acts_on_the_output_from_its_copied_initialisation(pipeline, image, caplog):
    plain = edit(InstructPix2Pix(pipeline, None, "cpu"), image, TEXTS[0])
    with caplog.at_level(logging.WARNING, logger="u2s_hf"):
        safe = InstructPix2Pix(pipeline, None, "cpu", safe_attention=True)
    assert "no trained weights" in caplog.text
    cross_attentions = [n for n in safe.pipe.unet.attn_processors if n.endswith("attn2.processor")]
    assert len(safe_attention.transformer_blocks(safe.pipe.unet)) == len(cross_attentions) == 4
    assert np.abs(edit(safe, image, TEXTS).astype(int) - plain).mean() > 1


def test_zeroed_output_projections_reproduce_the_plain_pipeline(pipeline, image):
    plain = edit(InstructPix2Pix(pipeline, None, "cpu"), image, TEXTS[0])
    safe = InstructPix2Pix(pipeline, None, "cpu", safe_attention=True)
    for _, block in safe_attention.transformer_blocks(safe.pipe.unet):
        torch.nn.init.zeros_(block.safe_attn.to_out[0].weight)
        torch.nn.init.zeros_(block.safe_attn.to_out[0].bias)
    assert np.abs(edit(safe, image, TEXTS).astype(int) - plain).max() <= 1


def test_trained_weights_round_trip_with_the_unet(pipeline, image, tmp_path, caplog):
    trained = InstructPix2Pix(pipeline, None, "cpu", safe_attention=True)
    with torch.no_grad():
        for _, block in safe_attention.transformer_blocks(trained.pipe.unet):
            block.safe_attn.to_q.weight.add_(torch.randn_like(block.safe_attn.to_q.weight))
    folder = tmp_path / "trained"
    shutil.copytree(pipeline, folder)
    safe_attention.save_safe_attention(trained.pipe.unet, str(folder))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="u2s_hf"):
        loaded = InstructPix2Pix(str(folder), None, "cpu", safe_attention=True)
    assert "no trained weights" not in caplog.text
    saved = {k: v for k, v in trained.pipe.unet.state_dict().items() if ".safe_attn." in k}
    assert saved and all(torch.equal(v, loaded.pipe.unet.state_dict()[k]) for k, v in saved.items())
    assert np.array_equal(edit(loaded, image, TEXTS), edit(trained, image, TEXTS))


def test_the_edit_stage_with_safe_attention(pipeline, photos):
    ds = corpus.image_dataset({"astronaut": photos["astronaut"], "coffee": photos["coffee"]})
    ds = ds.add_column("privacy_flag", [True, True]).add_column("c_edit", [TEXTS[2], TEXTS[2]])
    ds = ds.add_column("c_pub", [TEXTS[1], None])
    out = ds.map(
        u2s.Edit(editor="instruct-pix2pix", model=pipeline, safe_attention=True, steps=2, resolution=64), batched=True
    )
    assert out["u2s_status"] == ["edited", "redacted"]  # no public caption: redacted instead
    with pytest.raises(ValueError, match="instruct-pix2pix"):
        u2s.Edit(editor="flowedit", model=pipeline, safe_attention=True)
