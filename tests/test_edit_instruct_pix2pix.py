"""The InstructPix2Pix editor on a tiny pipeline built from configs and loaded by path like a Hub id."""

import os

import numpy as np
import pytest
import torch

import u2s_hf as u2s
from u2s_hf import runtime
from u2s_hf.editors.instruct_pix2pix import InstructPix2Pix
from u2s_hf.editors.pipelines import fit_size

import corpus

torch.set_num_threads(1)
NAMES = ("astronaut", "coffee", "grace_hopper", "chelsea")
EDIT = "make the person a tall man with red hair"


@pytest.fixture
def pipeline(tiny_ip2p):
    return tiny_ip2p


@pytest.fixture
def rows(photos, tmp_path):
    ds = corpus.image_dataset({n: photos[n] for n in NAMES}, tmp_path / "ds")
    ds = ds.add_column("privacy_flag", [True, False, True, False])
    ds = ds.add_column("c_edit", [EDIT, None, EDIT, None]).add_column("c_pub", ["a person"] * 4)
    return ds.add_column("label", [1, 0, 1, 0])


def editor(pipeline, **settings):
    return u2s.Edit(editor="instruct-pix2pix", model=pipeline, steps=2, resolution=64, **settings)


def pixels_of(ds):
    return [corpus.pixels(image) for image in ds["safe_image"]]


def test_flagged_rows_are_edited_and_the_others_keep_their_pixels(pipeline, rows, photos):
    out = rows.map(editor(pipeline), batched=True, batch_size=4)
    assert out["u2s_status"] == ["edited", "kept_safe", "edited", "kept_safe"]
    for name, after in zip(NAMES, pixels_of(out), strict=True):
        before = corpus.pixels(photos[name])
        assert after.shape == before.shape
        changed = np.abs(after.astype(int) - before).mean()
        assert (changed > 5) if name in ("astronaut", "grace_hopper") else (changed == 0), name


def test_results_are_repeatable_and_do_not_depend_on_batching(pipeline, rows):
    first = pixels_of(rows.map(editor(pipeline), batched=True, batch_size=4, load_from_cache_file=False))
    again = pixels_of(rows.map(editor(pipeline), batched=True, batch_size=1, load_from_cache_file=False))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other_seed = pixels_of(rows.map(editor(pipeline, seed=1), batched=True))
    other_prompt = pixels_of(rows.map(editor(pipeline, prompt="c_pub"), batched=True))
    for changed in (other_seed, other_prompt):
        assert not np.array_equal(changed[0], first[0]) and np.array_equal(changed[1], first[1])


def test_rerun_is_a_cache_hit(pipeline, rows):
    stage = editor(pipeline)
    first = rows.map(stage, batched=True)
    files = [f["filename"] for f in first.cache_files]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = rows.map(stage, batched=True)
    assert [f["filename"] for f in again.cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps


def test_class_prior_and_missing_prompts(pipeline, rows, monkeypatch):
    seen = []
    original = InstructPix2Pix.edit

    def spy(self, images, prompts, *args, **kwargs):
        seen.extend(prompts)
        return original(self, images, prompts, *args, **kwargs)

    monkeypatch.setattr(InstructPix2Pix, "edit", spy)
    rows.map(editor(pipeline, prompt="class", class_column="label", class_names=["cat", "officer"]), batched=True)
    assert seen == ["A realistic image of officer."] * 2
    blank = rows.remove_columns("c_edit").add_column("c_edit", [None] * 4)
    out = blank.map(editor(pipeline), batched=True)
    assert out["u2s_status"][0] == "redacted" and "no prompt to edit with" in out["u2s_error"][0]


def test_an_editor_failure_falls_back_to_redaction(pipeline, rows, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(InstructPix2Pix, "edit", broken)
    out = rows.map(editor(pipeline), batched=True)
    assert out["u2s_status"] == ["redacted", "kept_safe", "redacted", "kept_safe"]
    assert "instruct-pix2pix failed (RuntimeError: out of memory)" in out["u2s_error"][0]


def test_fit_size_keeps_the_aspect_and_the_multiple():
    assert fit_size(1200, 600, 512, 8) == (512, 256)
    assert fit_size(451, 300, 512, 64) == (512, 320)
    assert fit_size(1, 1000, 512, 8) == (8, 512)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="needs model"):
        u2s.Edit(editor="instruct-pix2pix")
    with pytest.raises(ValueError, match="class_column"):
        u2s.Edit(editor="instruct-pix2pix", model="m", prompt="class")
    with pytest.raises(ValueError, match="unknown"):
        u2s.Edit(editor="sdedit", model="m")
    with pytest.raises(ValueError, match="n_min <= n_max <= steps"):
        u2s.Edit(editor="flowedit", model="m", steps=10, n_max=33)


def test_the_paper_ip2p_preset(pipeline):
    edit = u2s.preset("paper-ip2p").edit.config
    settings = edit.editor_settings
    assert (
        edit.editor,
        settings.model,
        settings.prompt,
        settings.steps,
        settings.guidance_scale,
        settings.image_guidance_scale,
        settings.resolution,
    ) == ("instruct-pix2pix", u2s.pipeline.PAPER_MAGICBRUSH, "c_edit", 100, 7.5, 1.5, 512)


def test_every_setting_that_changes_the_loaded_model_is_in_its_cache_key(pipeline, rows, monkeypatch):
    """cpu_offload changes how the model is placed: a stage asking for it must not get a model loaded without."""
    keys = []
    cached_model = runtime.cached_model

    def spy(key, load):
        keys.append(key)
        return cached_model(key, load)

    monkeypatch.setattr(runtime, "cached_model", spy)
    for offload in (False, True):
        rows.map(editor(pipeline, cpu_offload=offload), batched=True, load_from_cache_file=False)
    assert len(keys) == 2 and keys[0] != keys[1]
