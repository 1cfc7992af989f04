"""FlowEdit on a tiny SD3 pipeline built from configs and loaded by path like a Hub id."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import u2s_hf as u2s
from u2s_hf.editors.flowedit import FlowEdit, FlowEditSettings

import corpus

torch.set_num_threads(1)
NAMES = ("astronaut", "coffee", "grace_hopper", "chelsea")


@pytest.fixture
def pipeline(tiny_sd3):
    return tiny_sd3


@pytest.fixture(scope="module")
def flow(tiny_sd3):
    return FlowEdit.from_pretrained(FlowEditSettings(model=tiny_sd3, text_encoder_3=False, resolution=64), "cpu")


@pytest.fixture
def rows(photos, tmp_path):
    ds = corpus.image_dataset({n: photos[n] for n in NAMES}, tmp_path / "ds")
    ds = ds.add_column("privacy_flag", [True, False, True, False])
    ds = ds.add_column("c_priv", ["Eileen Collins in an orange suit", None, "Grace Hopper in uniform", None])
    return ds.add_column("c_llm", ["a tall man with grey hair in an orange suit", None, "a man in a blue suit", None])


def editor(pipeline, **settings):
    return u2s.Edit(
        editor="flowedit", model=pipeline, text_encoder_3=False, steps=4, n_max=3, resolution=64, **settings
    )


def pixels_of(ds):
    return [corpus.pixels(image) for image in ds["safe_image"]]


def test_flagged_rows_are_edited_repeatably_and_independently_of_batching(pipeline, rows, photos):
    out = rows.map(editor(pipeline), batched=True, batch_size=4)
    assert out["u2s_status"] == ["edited", "kept_safe", "edited", "kept_safe"]
    rerun = rows.map(editor(pipeline), batched=True, batch_size=4)  # a cache hit: the same files, not rewritten
    assert [f["filename"] for f in rerun.cache_files] == [f["filename"] for f in out.cache_files]
    first = pixels_of(out)
    for name, after in zip(NAMES, first, strict=True):
        before = corpus.pixels(photos[name])
        assert after.shape == before.shape
        changed = np.abs(after.astype(int) - before).mean()
        assert (changed > 5) if name in ("astronaut", "grace_hopper") else (changed == 0), name
    again = pixels_of(rows.map(editor(pipeline), batched=True, batch_size=1, load_from_cache_file=False))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    for changed in (editor(pipeline, seed=7), editor(pipeline, target_prompt="c_priv")):
        other = pixels_of(rows.map(changed, batched=True))
        assert not np.array_equal(other[0], first[0]) and np.array_equal(other[1], first[1])


def test_no_active_step_gives_back_the_vae_round_trip(flow, photos):
    rgb = np.asarray(photos["astronaut"].resize((64, 64)))
    settings = dataclasses.replace(
        flow.settings, resolution=64, steps=4, source_guidance=3.5, target_guidance=13.5, n_min=0, n_max=0, n_avg=1
    )
    out = flow.with_settings(settings).edit([rgb], [("a person", "a man")], [42])[0]
    with torch.inference_mode():
        round_trip = flow.decode(flow.encode([Image.fromarray(rgb)]))[0]
    assert np.array_equal(out, round_trip)


def test_one_step_matches_a_direct_recomputation(flow, photos):
    rgb = np.asarray(photos["astronaut"].resize((64, 64)))
    with torch.inference_mode():
        x = flow.encode([Image.fromarray(rgb)])
        source, target = flow.encode_prompts(["a person"]), flow.encode_prompts(["a tall man"])
        edited = flow.edit_latents(
            x,
            source,
            target,
            [torch.Generator().manual_seed(5)],
            steps=4,
            source_guidance=3.5,
            target_guidance=13.5,
            n_min=0,
            n_max=1,
            n_avg=1,
        )
        scheduler = flow.pipe.scheduler
        sigma, sigma_next, t = scheduler.sigmas[3], scheduler.sigmas[4], scheduler.timesteps[3]
        noise = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(5))[None]
        z_source = (1 - sigma) * x + sigma * noise  # the edit is still zero, so the shifted latent equals this
        v_target = flow.velocity(z_source, t, target, 13.5)
        v_source = flow.velocity(z_source, t, source, 3.5)
        expected = x + (sigma_next - sigma) * (v_target - v_source)
    assert torch.allclose(edited, expected, atol=1e-5)
    assert not torch.allclose(edited, x)


def test_the_paper_preset_uses_flowedit_with_the_papers_settings():
    edit = u2s.preset("paper").edit.config
    settings = edit.editor_settings
    assert (
        edit.editor,
        settings.model,
        settings.source_prompt,
        settings.target_prompt,
        settings.steps,
        settings.source_guidance,
        settings.target_guidance,
        settings.n_min,
        settings.n_max,
        settings.n_avg,
        settings.seed,
    ) == ("flowedit", u2s.pipeline.PAPER_SD3, "c_priv", "c_llm", 50, 3.5, 13.5, 0, 33, 1, 42)


def test_the_working_resolution_defaults_to_sd3s_native_size():
    """FlowEdit works at 1024 px (SD3's native size); InstructPix2Pix keeps the paper's 512."""
    assert u2s.Edit(editor="flowedit", model="m").config.editor_settings.resolution == 1024
    assert u2s.preset("paper").edit.config.editor_settings.resolution == 1024
    assert u2s.Edit(editor="instruct-pix2pix", model="m").config.editor_settings.resolution == 512
