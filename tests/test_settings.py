"""Settings that would silently weaken protection are refused when a config is made (Python, presets, `--set`)."""

import dataclasses
import math
import typing

import numpy as np
import pytest
from PIL import Image

import u2s_hf as u2s
from u2s_hf import cli, config, judge_config, pipeline, runtime
from u2s_hf.editors.flowedit import FlowEditSettings
from u2s_hf.editors.freeprompt import FreePromptSettings
from u2s_hf.editors.instruct_pix2pix import InstructPix2PixSettings

# Each config class with the fewest settings it needs to be valid.
CONFIGS = {
    config.ModelSettings: {},
    config.InspectConfig: {},
    config.CaptionConfig: {"model": "m"},
    config.InstructConfig: {"model": "m"},
    config.EditConfig: {},
    config.VerifyConfig: {},
    InstructPix2PixSettings: {"model": "m"},
    FlowEditSettings: {"model": "m"},
    FreePromptSettings: {"model": "m"},
    judge_config.JudgeConfig: {},
}
SERVER = {"backend": "server", "model": "m", "base_url": "http://host/v1"}


def typed_fields(config_class):
    """Fields annotated bool/int/float/str (or those | None): the ones the generic check owns."""
    plain = {bool, int, float, str, type(None)}
    for name, hint in typing.get_type_hints(config_class).items():
        if set(typing.get_args(hint) or (hint,)) <= plain:
            yield name


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_typed_field_of_every_config_refuses_a_value_of_another_type(config_class):
    names = list(typed_fields(config_class))
    assert names
    for name in names:
        with pytest.raises(TypeError, match=name):
            config_class(**{**CONFIGS[config_class], name: b"1"})


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: u2s.Inspect(text="maybe"), "text"),  # "maybe" is truthy: it used to mean True
        (lambda: u2s.Inspect(faces=0), "faces"),
        (lambda: u2s.Inspect(face_threshold=True), "face_threshold"),
        (lambda: u2s.Inspect(face_threshold=math.nan), "face_threshold"),
        (lambda: u2s.Inspect(text_threshold="0.5"), "text_threshold"),
        (lambda: u2s.Inspect(face_max_side=2.5), "face_max_side"),
        (lambda: u2s.Inspect(image_column=3), "image_column"),
        (lambda: u2s.Edit(cells=True), "cells"),
        (lambda: u2s.Edit(cells=8.0), "cells"),
        (lambda: u2s.Edit(margin=math.inf), "margin"),
        (lambda: u2s.Edit(margin=math.nan), "margin"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", steps=2.5), "steps"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", guidance_scale=math.nan), "guidance_scale"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", safe_attention="yes"), "safe_attention"),
        (lambda: u2s.Instruct(model="m", merge="no"), "merge"),
        (lambda: u2s.Instruct(model="m", seed=1.5), "seed"),
        (lambda: u2s.Instruct(**SERVER, timeout=math.inf), "timeout"),
        (lambda: judge_config.JudgeConfig(trust_remote_code="yes"), "trust_remote_code"),
    ],
)
def test_values_of_the_wrong_type_are_refused(make, name):
    with pytest.raises(TypeError, match=name):
        make()


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: u2s.Inspect(face_threshold=0), "face_threshold"),
        (lambda: u2s.Inspect(face_threshold=1.5), "face_threshold"),
        (lambda: u2s.Inspect(text_threshold=0.0), "text_threshold"),
        (lambda: u2s.Inspect(face_max_side=0), "face_max_side"),
        (lambda: u2s.Inspect(text_max_side=-1), "text_max_side"),
        (lambda: u2s.Inspect(max_pixels=0), "max_pixels"),
        (lambda: u2s.Inspect(threads=0), "threads"),
        (lambda: u2s.Inspect(backend="vlm", model="m", image_max_side=0), "image_max_side"),
        (lambda: u2s.Inspect(backend="vlm", model="m", max_new_tokens=0), "max_new_tokens"),
        (lambda: u2s.Instruct(model="m", merge_max_new_tokens=0), "merge_max_new_tokens"),
        (lambda: u2s.Edit(cells=1000), "cells"),  # used to report `redacted` with the original pixels
        (lambda: u2s.Edit(cells=config.MAX_CELLS + 1), "cells"),
        (lambda: u2s.Edit(cells=0), "cells"),
        (lambda: u2s.Edit(whole_image_cells=config.MAX_WHOLE_IMAGE_CELLS + 1), "whole_image_cells"),
        (lambda: u2s.Edit(max_pixels=-5), "max_pixels"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", resolution=0), "resolution"),
        (lambda: u2s.Edit(editor="flowedit", model="m", batch_size=0), "batch_size"),
        (lambda: u2s.Verify(rounds=-1), "rounds"),
        (lambda: u2s.Verify(identity_threshold=0), "identity_threshold"),
        (lambda: u2s.Verify(text_match_threshold=1.5), "text_match_threshold"),
        (lambda: u2s.Verify(face_threshold=0), "face_threshold"),
        (lambda: u2s.Verify(unlocated="keep"), "unlocated"),
        (lambda: u2s.Verify(faces=False, text=False), "faces=True or text=True"),
        (lambda: u2s.Verify(identity_root="/models"), "identity_model"),
    ],
)
def test_values_out_of_range_are_refused(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: u2s.Inspect(criteria=["people"]), "criteria is a setting of backend 'vlm'/'server'"),
        (lambda: u2s.Inspect(model="m"), "model is a setting of backend 'vlm'/'server'"),
        (lambda: u2s.Inspect(max_new_tokens=64), "max_new_tokens is a setting of backend 'vlm'/'server'"),
        (lambda: u2s.Inspect(debug_column="raw"), "debug_column is a setting of backend 'vlm'/'server'"),
        (lambda: u2s.Inspect(base_url="http://host/v1"), "base_url is a setting of backend"),
        (lambda: u2s.Inspect(backend="vlm", model="m", face_threshold=0.5), "face_threshold is a setting of backend"),
        (lambda: u2s.Inspect(**SERVER, text=False), "text is a setting of backend 'detectors'"),
        (
            lambda: u2s.Inspect(backend="vlm", model="m", text_max_side=500),
            "text_max_side is a setting of backend 'det",
        ),
        (lambda: u2s.Inspect(backend="vlm", model="m", timeout=5.0), "timeout is a setting of backend 'server'"),
        (lambda: u2s.Caption(model="m", concurrency=2), "concurrency is a setting of backend 'server'"),
        (lambda: u2s.Instruct(model="m", retries=0), "retries is a setting of backend 'server'"),
        (lambda: u2s.Instruct(model="m", base_url="http://host/v1"), "base_url is a setting of backend 'server'"),
        (lambda: judge_config.JudgeConfig(timeout=5.0), "timeout is a setting of backend 'server'"),
        (lambda: u2s.Edit(model="m"), "model is a diffusion setting"),
        (lambda: u2s.Edit(steps=10), "steps is a diffusion setting"),
        (lambda: u2s.Edit(seed=1), "seed is a diffusion setting"),
        (lambda: u2s.Edit(prompt="c_pub"), "prompt is a diffusion setting"),
        (lambda: u2s.Edit(class_column="label"), "class_column is a diffusion setting"),
        (lambda: u2s.Edit(guidance_scale=5.0), "guidance_scale is a diffusion setting"),
        (lambda: u2s.Edit(safe_attention=True), "safe_attention is a diffusion setting"),
        (lambda: u2s.Edit(resolution=256), "resolution is a diffusion setting"),
        (lambda: u2s.Edit(batch_size=2), "batch_size is a diffusion setting"),
        (lambda: u2s.Edit(n_max=10), "n_max is a diffusion setting"),
        (lambda: u2s.Edit(dtype="float16"), "dtype is a diffusion setting"),
        (
            lambda: u2s.Edit(editor="flowedit", model="m", image_guidance_scale=2.0),
            "image_guidance_scale is an instruct-pix2pix setting",
        ),
        (lambda: u2s.Edit(editor="flowedit", model="m", prompt="c_pub"), "prompt is an instruct-pix2pix / freeprompt"),
        (lambda: u2s.Edit(editor="flowedit", model="m", guidance_scale=5.0), "guidance_scale is an instruct-pix2pix"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", source_prompt="c_pub"), "source_prompt is a flowedit"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", target_guidance=9.0), "target_guidance is a flowedit"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", n_avg=2), "n_avg is a flowedit setting"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", text_encoder_3=False), "text_encoder_3 is a flowedit"),
    ],
)
def test_settings_of_another_backend_or_editor_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_presets_refuse_them_too():
    with pytest.raises(ValueError, match="criteria is a setting of backend"):
        u2s.preset("lite", criteria=["people"])
    with pytest.raises(TypeError, match="text"):
        u2s.preset("lite", text="maybe")
    with pytest.raises(ValueError, match="cells"):
        u2s.preset("lite", cells=1000)
    with pytest.raises(ValueError, match="face_threshold is a setting of backend 'detectors'"):
        u2s.preset("paper", face_threshold=0.5)


def test_every_preset_builds_and_rebuilds_to_the_same_configs():
    for name in pipeline.PRESETS:
        built = u2s.preset(name)
        again = pipeline._build_preset(built, {})  # rebuilt from dataclasses.asdict, like anonymize() does
        assert [s.config for s in again.stages] == [s.config for s in built.stages], name
        for stage in built.stages:
            assert dataclasses.replace(stage.config) == stage.config, (name, stage.name)


@pytest.mark.parametrize(
    "make",
    [
        lambda: u2s.Inspect(face_threshold=1, text_threshold=0.01, face_max_side=64, max_pixels=None, threads=1),
        lambda: u2s.Inspect(**SERVER, criteria=["people"], timeout=5.0, retries=0, concurrency=2, debug_column="raw"),
        lambda: u2s.Inspect(backend="vlm", model="m", batch_size=2, dtype="float32", max_new_tokens=32),
        lambda: u2s.Edit(cells=1, whole_image_cells=config.MAX_WHOLE_IMAGE_CELLS, margin=0, method="blur"),
        lambda: u2s.Edit(cells=config.MAX_CELLS, margin=2),
        lambda: u2s.Edit(
            editor="instruct-pix2pix",
            model="m",
            steps=5,
            seed=3,
            image_guidance_scale=2.0,
            safe_attention=True,
            resolution=64,
            batch_size=1,
        ),
        lambda: u2s.Edit(editor="flowedit", model="m", steps=20, n_max=10, n_avg=2, seed=1, text_encoder_3=False),
        lambda: u2s.Edit(editor="instruct-pix2pix", model="m", prompt="class", class_column="label", class_names=["a"]),
        lambda: u2s.Instruct(model="m", class_column="label", class_names=["a"], demographics="uniform", seed=2),
        lambda: judge_config.JudgeConfig.named("judge", "http://host/v1"),
    ],
)
def test_settings_that_apply_are_accepted(make):
    make()


def test_per_editor_defaults_count_as_defaults():
    """steps/seed are filled per editor: passing those values back (as a rebuilt config does) is no change."""
    flow = u2s.Edit(editor="flowedit", model="m")
    assert (flow.config.editor_settings.steps, flow.config.editor_settings.seed) == (50, 42)
    assert u2s.Edit(editor="flowedit", model="m", steps=50, seed=42) == flow
    assert u2s.Edit(steps=None, seed=None) == u2s.Edit()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: u2s.Edit(editor="flowedit", model="m", image_guidance_scale=1.5), "is an instruct-pix2pix setting"),
        (lambda: u2s.Edit(editor="flowedit", model="m", prompt="c_edit"), "prompt is an instruct-pix2pix / freeprompt"),
        (lambda: u2s.Edit(editor="flowedit", model="m", safe_attention=False), "is an instruct-pix2pix setting"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", n_max=33), "n_max is a flowedit setting"),
        (lambda: u2s.Edit(editor="instruct-pix2pix", model="m", text_encoder_3=True), "is a flowedit setting"),
        (lambda: u2s.Edit(resolution=512), "resolution is a diffusion setting"),
        (lambda: u2s.Edit(guidance_scale=7.5), "guidance_scale is a diffusion setting"),
        (lambda: u2s.Edit(cpu_offload=False), "cpu_offload is a diffusion setting"),
    ],
)
def test_another_editors_setting_is_refused_even_at_its_default(make, message):
    """They used to pass when equal to their default, so a setting given to the wrong editor went unnoticed."""
    with pytest.raises(ValueError, match=message):
        make()


def test_the_editor_settings_are_part_of_the_config_and_its_fingerprint():
    """Everything that changes the output is in dataclasses.asdict(stage.config), so in the cache fingerprint."""
    plain = u2s.Edit(editor="flowedit", model="m")
    for changed in (
        u2s.Edit(editor="flowedit", model="m", cpu_offload=True),
        u2s.Edit(editor="flowedit", model="m", resolution=512),
        u2s.Edit(editor="flowedit", model="m", n_avg=2),
        u2s.Edit(editor="flowedit", model="m", key_column="id"),
    ):
        assert dataclasses.asdict(changed.config) != dataclasses.asdict(plain.config)
        assert runtime.fingerprint(changed.config) != runtime.fingerprint(plain.config)
    settings = dataclasses.asdict(plain.config)["editor_settings"]
    assert settings["cpu_offload"] is False and settings["resolution"] == 1024 and settings["seed"] == 42


@pytest.fixture
def one_image(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "one.png")
    return folder


@pytest.mark.parametrize(
    "setting, name",
    [
        ("text=maybe", "text"),
        ("cells=1000", "cells"),
        ("face_max_side=0", "face_max_side"),
        ("face_threshold=0", "face_threshold"),
        ("face_threshold=1.5", "face_threshold"),
        ('criteria=["people"]', "criteria"),
    ],
)
def test_the_command_line_refuses_them_before_writing_anything(one_image, tmp_path, capsys, setting, name):
    out = tmp_path / "out"
    code = cli.main(["anonymize", str(one_image), "--out", str(out), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and name in err and "Traceback" not in err
    assert not out.exists()
