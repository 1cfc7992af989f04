"""Safe Cross Attention on a tiny InstructPix2Pix pipeline."""

import logging
import shutil

import huggingface_hub
import huggingface_hub.errors as hub_errors
import numpy as np
import pytest
import torch

import u2s_hf as u2s
from u2s_hf import runtime
from u2s_hf.editors import instruct_pix2pix, safe_attention
from u2s_hf.editors.instruct_pix2pix import InstructPix2Pix, InstructPix2PixSettings

import corpus

torch.set_num_threads(1)
TEXTS = ("make the person a tall man", "a person in an orange suit", "a tall man with red hair")


@pytest.fixture
def pipeline(tiny_ip2p):
    return tiny_ip2p


@pytest.fixture(scope="module")
def image(photos):
    return np.asarray(photos["astronaut"])


def load(model, safe=False):
    """The editor with the test settings: 2 steps at 64 px, text guidance 7.5, image guidance 1.5."""
    settings = InstructPix2PixSettings(
        model=model, steps=2, guidance_scale=7.5, image_guidance_scale=1.5, resolution=64, safe_attention=safe
    )
    return InstructPix2Pix.from_pretrained(settings, "cpu")


def edit(editor, image, texts):
    return editor.edit([image], [texts], [3])[0]


def test_it_acts_on_the_output_from_its_copied_initialisation(pipeline, image, caplog):
    plain = edit(load(pipeline), image, TEXTS[0])
    with caplog.at_level(logging.WARNING, logger="u2s_hf"):
        safe = load(pipeline, "untrained")
    assert "no trained weights" in caplog.text
    cross_attentions = [n for n in safe.pipe.unet.attn_processors if n.endswith("attn2.processor")]
    assert len(safe_attention.transformer_blocks(safe.pipe.unet)) == len(cross_attentions) == 4
    assert np.abs(edit(safe, image, TEXTS).astype(int) - plain).mean() > 1


def test_zeroed_output_projections_reproduce_the_plain_pipeline(pipeline, image):
    plain = edit(load(pipeline), image, TEXTS[0])
    safe = load(pipeline, "untrained")
    for _, block in safe_attention.transformer_blocks(safe.pipe.unet):
        torch.nn.init.zeros_(block.safe_attn.to_out[0].weight)
        torch.nn.init.zeros_(block.safe_attn.to_out[0].bias)
    assert np.abs(edit(safe, image, TEXTS).astype(int) - plain).max() <= 1


def test_trained_weights_round_trip_with_the_unet(pipeline, image, tmp_path, caplog):
    trained = load(pipeline, "untrained")
    with torch.no_grad():
        for _, block in safe_attention.transformer_blocks(trained.pipe.unet):
            block.safe_attn.to_q.weight.add_(torch.randn_like(block.safe_attn.to_q.weight))
    folder = tmp_path / "trained"
    shutil.copytree(pipeline, folder)
    safe_attention.save_safe_attention(trained.pipe.unet, str(folder))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="u2s_hf"):
        loaded = load(str(folder), True)
    assert "no trained weights" not in caplog.text
    saved = {k: v for k, v in trained.pipe.unet.state_dict().items() if ".safe_attn." in k}
    assert saved and all(torch.equal(v, loaded.pipe.unet.state_dict()[k]) for k, v in saved.items())
    assert np.array_equal(edit(loaded, image, TEXTS), edit(trained, image, TEXTS))


def test_the_edit_stage_with_safe_attention(pipeline, photos):
    ds = corpus.image_dataset({"astronaut": photos["astronaut"], "coffee": photos["coffee"]})
    ds = ds.add_column("privacy_flag", [True, True]).add_column("c_edit", [TEXTS[2], TEXTS[2]])
    ds = ds.add_column("c_pub", [TEXTS[1], None])
    out = ds.map(
        u2s.Edit(editor="instruct-pix2pix", model=pipeline, safe_attention="untrained", steps=2, resolution=64),
        batched=True,
    )
    assert out["u2s_status"] == ["edited", "redacted"]  # no public caption: redacted instead
    with pytest.raises(ValueError, match="instruct-pix2pix"):
        u2s.Edit(editor="flowedit", model=pipeline, safe_attention=True)


def test_without_trained_weights_safe_attention_true_fails_and_says_what_to_do(pipeline, photos):
    """It used to run the copied initialisation with a warning: a model nobody evaluated."""
    with pytest.raises(safe_attention.MissingWeightsError, match=r"no unet/safe_attention\.safetensors") as error:
        load(pipeline, True)
    assert "save_safe_attention" in str(error.value) and "safe_attention='untrained'" in str(error.value)
    ds = corpus.image_dataset({"astronaut": photos["astronaut"]})
    ds = ds.add_column("privacy_flag", [True]).add_column("c_edit", [TEXTS[2]]).add_column("c_pub", [TEXTS[1]])
    stage = u2s.Edit(editor="instruct-pix2pix", model=pipeline, safe_attention=True, steps=2, resolution=64)
    with pytest.raises(safe_attention.MissingWeightsError):  # the map fails; no row is quietly redacted
        ds.map(stage, batched=True, load_from_cache_file=False)


class Response:
    """Just what huggingface_hub's HTTP errors read from a response."""

    headers, request = {}, None


@pytest.mark.parametrize(
    "error, missing",
    [
        (lambda: hub_errors.RemoteEntryNotFoundError("404: no such file", response=Response()), True),
        (lambda: ConnectionError("network is unreachable"), False),
        (lambda: hub_errors.GatedRepoError("401: log in to read this repository", response=Response()), False),
        (lambda: hub_errors.LocalEntryNotFoundError("offline, and not in the cache"), False),
    ],
    ids=["not-there", "network", "auth", "offline"],
)
def test_only_a_file_the_hub_says_is_not_there_means_no_weights(monkeypatch, error, missing):
    """A network, authentication or offline error is not "this checkpoint has no weights": it propagates as it is
    (it used to be taken for "no weights", and the copies ran)."""

    def download(*args, **kwargs):
        raise error()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(Exception) as raised:  # which exception: asserted below
        instruct_pix2pix.safe_weights("someone/some-model", None)
    assert isinstance(raised.value, safe_attention.MissingWeightsError) == missing
    assert missing or type(raised.value) is type(error())


def test_a_processor_replaced_after_loading_is_detected(pipeline, image, photos, monkeypatch):
    """A later set_attn_processor used to remove Safe Cross Attention silently; now editing refuses to run."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    safe = load(pipeline, "untrained")
    safe.check()
    safe.pipe.unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match="Safe Cross Attention is no longer active in 4 of 4"):
        edit(safe, image, TEXTS)

    loaded = InstructPix2Pix.from_pretrained

    def load_then_replace(settings, device):
        editor = loaded(settings, device)
        editor.pipe.unet.set_attn_processor(AttnProcessor2_0())
        return editor

    monkeypatch.setattr(runtime, "_models", {})  # this broken editor must not stay in the process's model cache
    monkeypatch.setattr(InstructPix2Pix, "from_pretrained", load_then_replace)
    ds = corpus.image_dataset({"astronaut": photos["astronaut"]})
    ds = ds.add_column("privacy_flag", [True]).add_column("c_edit", [TEXTS[2]]).add_column("c_pub", [TEXTS[1]])
    stage = u2s.Edit(editor="instruct-pix2pix", model=pipeline, safe_attention="untrained", steps=2, resolution=64)
    with pytest.raises(RuntimeError, match="no longer active"):  # the map stops: rows are not quietly redacted
        ds.map(stage, batched=True, load_from_cache_file=False)
