"""FreePrompt on a tiny Stable Diffusion 1.5-style pipeline built from configs and loaded by path like a Hub id."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import u2s_hf as u2s
from u2s_hf.editors.freeprompt import FreePrompt, FreePromptSettings, SourceSelfAttention, replaced_layers

import corpus

torch.set_num_threads(1)
NAMES = ("astronaut", "coffee", "grace_hopper", "chelsea")
TARGET = "a tall man with red hair"
STEPS = 4


@pytest.fixture(scope="module")
def free(tiny_sd15):
    return FreePrompt.from_pretrained(FreePromptSettings(model=tiny_sd15, steps=STEPS, resolution=64), "cpu")


def with_ratio(editor, ratio):
    return editor.with_settings(dataclasses.replace(editor.settings, self_replace_ratio=ratio))


def square(photo, side=64):
    return np.asarray(photo.convert("RGB").resize((side, side)))


def encoded(editor, photo, prompt):
    """(the source trajectory, the empty prompt's embedding, the target's) for one photo."""
    with torch.inference_mode():
        empty = editor.encode_prompts([""])
        trajectory = editor.invert(editor.encode([Image.fromarray(square(photo))]), empty)
        return trajectory, empty, editor.encode_prompts([prompt])


def test_the_source_reaches_the_target_only_through_the_replaced_self_attention(free, photos):
    """The same start latent, target text and guidance; only the source trajectory differs. With every step
    replaced the result follows the source; with none it cannot see it. A replacement that is a no-op (the target
    keeping its own maps) makes the first pair equal and fails this."""
    astronaut, empty, target = encoded(free, photos["astronaut"], TARGET)
    coffee = encoded(free, photos["coffee"], TARGET)[0]
    start = astronaut[-1]
    with torch.inference_mode():
        shared = [free.edit_latents(start, source, target, empty, STEPS) for source in (astronaut, coffee)]
        plain = [free.edit_latents(start, source, target, empty, 0) for source in (astronaut, coffee)]
    assert (shared[0] - shared[1]).abs().mean() > 1e-3
    assert torch.equal(plain[0], plain[1])


def test_the_source_rows_follow_the_inverted_trajectory(free, photos):
    """In each shared step the source rows sit at their inverted latent of that step's timestep, under the empty
    prompt; the inversion's first step is DDIM run backwards with the unconditional prediction."""
    trajectory, empty, target = encoded(free, photos["astronaut"], TARGET)
    seen = []
    hook = free.pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0].clone(), int(args[1]), kwargs["encoder_hidden_states"])),
        with_kwargs=True,
    )
    try:
        with torch.inference_mode():
            free.edit_latents(trajectory[-1], trajectory, target, empty, 2)
    finally:
        hook.remove()
    timesteps = [int(t) for t in free.timesteps()]
    assert [t for _, t, _ in seen] == timesteps and [len(x) for x, _, _ in seen] == [3, 3, 2, 2]
    for i, (latents, _, texts) in enumerate(seen[:2]):
        assert torch.equal(latents[0], trajectory[STEPS - i][0])
        assert torch.equal(texts[0], empty[0]) and torch.equal(texts[2], target[0])
    scheduler = free.pipe.scheduler
    with torch.inference_mode():
        eps = free.pipe.unet(trajectory[0], timesteps[-1], encoder_hidden_states=empty).sample
    before, after = scheduler.final_alpha_cumprod, scheduler.alphas_cumprod[timesteps[-1]]
    expected = after.sqrt() * (trajectory[0] - (1 - before).sqrt() * eps) / before.sqrt() + (1 - after).sqrt() * eps
    assert torch.allclose(trajectory[1], expected, atol=1e-5)


def test_ratio_zero_is_plain_ddim_sampling_of_the_target_from_the_inverted_latent(free, tiny_sd15, photos):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    trajectory, empty, target = encoded(free, photos["astronaut"], TARGET)
    plain = StableDiffusionPipeline.from_pretrained(tiny_sd15, safety_checker=None, requires_safety_checker=False)
    plain.scheduler = DDIMScheduler.from_config(plain.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    plain.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        expected = plain(
            prompt_embeds=target,
            negative_prompt_embeds=empty,
            latents=trajectory[-1],
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            output_type="latent",
        ).images
        ours = free.edit_latents(trajectory[-1], trajectory, target, empty, 0)
    assert torch.allclose(ours, expected, atol=1e-5)
    rgb = square(photos["astronaut"])
    zero, default = (with_ratio(free, r).edit([rgb], [TARGET], [0])[0] for r in (0.0, 0.4))
    assert not np.array_equal(zero, default)


def test_rows_do_not_depend_on_their_batch(free, photos):
    rows = [square(photos[name]) for name in ("astronaut", "coffee", "chelsea")]
    batched = free.edit(rows, [TARGET] * 3, [1, 2, 3])
    alone = [free.edit([rgb], [TARGET], [seed])[0] for rgb, seed in zip(rows, [1, 2, 3], strict=True)]
    for a, b in zip(batched, alone, strict=True):
        # CPU matrix kernels round a batch of 3 and a batch of 1 differently (about 1e-6): at most a level apart
        assert np.abs(a.astype(int) - b).max() <= 2
    other_rows = free.edit([rows[0], rows[2], rows[1]], [TARGET, "a cat", TARGET], [1, 5, 6])
    assert np.array_equal(other_rows[0], batched[0])  # the same batch size: bit for bit, whatever the other rows
    assert np.abs(batched[0].astype(int) - batched[1]).mean() > 10


def test_the_replaced_layers_are_the_self_attention_below_the_outermost_level(tiny_sd15):
    from diffusers.models.attention_processor import AttnProcessor2_0

    editor = FreePrompt.from_pretrained(FreePromptSettings(model=tiny_sd15, steps=2, resolution=64), "cpu")
    unet = editor.pipe.unet
    assert sorted(replaced_layers(unet)) == [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor",
        "mid_block.attentions.0.transformer_blocks.0.attn1.processor",
        "up_blocks.0.attentions.0.transformer_blocks.0.attn1.processor",
        "up_blocks.0.attentions.1.transformer_blocks.0.attn1.processor",
    ]
    ours = [name for name, p in unet.attn_processors.items() if isinstance(p, SourceSelfAttention)]
    assert sorted(ours) == sorted(replaced_layers(unet))
    editor.check()
    unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match="processor was replaced"):
        editor.check()


@pytest.fixture
def rows(photos, tmp_path):
    ds = corpus.image_dataset({n: photos[n] for n in NAMES}, tmp_path / "ds")
    ds = ds.add_column("privacy_flag", [True, False, True, False])
    return ds.add_column("c_llm", [TARGET, None, "a man in a blue suit", None])


def test_flagged_rows_are_edited_through_dataset_map_and_the_others_keep_their_pixels(tiny_sd15, rows, photos):
    edit = u2s.Edit(editor="freeprompt", model=tiny_sd15, steps=STEPS, resolution=64)
    out = rows.map(edit, batched=True, batch_size=4)
    assert out["u2s_status"] == ["edited", "kept_safe", "edited", "kept_safe"]
    for name, image in zip(NAMES, out["safe_image"], strict=True):
        before, after = corpus.pixels(photos[name]), corpus.pixels(image)
        assert after.shape == before.shape
        changed = np.abs(after.astype(int) - before).mean()
        assert (changed > 5) if name in ("astronaut", "grace_hopper") else (changed == 0), name
    other = rows.map(
        u2s.Edit(editor="freeprompt", model=tiny_sd15, steps=STEPS, resolution=64, prompt="c_pub"), batched=True
    )
    assert "no prompt to edit with" in other["u2s_error"][0]  # the prompt column is the setting's


def test_the_defaults_are_the_papers_and_other_settings_are_refused():
    settings = u2s.Edit(editor="freeprompt", model="m").config.editor_settings
    assert (
        settings.prompt,
        settings.steps,
        settings.guidance_scale,
        settings.self_replace_ratio,
        settings.resolution,
        settings.seed,
        settings.replaced_steps(),
    ) == ("c_llm", 50, 7.5, 0.4, 512, 0, 20)
    assert FreePromptSettings(model="m", steps=None, seed=None) == FreePromptSettings(model="m")
    with pytest.raises(ValueError, match="image_guidance_scale is an instruct-pix2pix setting"):
        u2s.Edit(editor="freeprompt", model="m", image_guidance_scale=1.5)
    with pytest.raises(ValueError, match="target_guidance is a flowedit setting"):
        u2s.Edit(editor="freeprompt", model="m", target_guidance=13.5)
    with pytest.raises(ValueError, match="self_replace_ratio is a freeprompt setting"):
        u2s.Edit(editor="flowedit", model="m", self_replace_ratio=0.4)
    with pytest.raises(ValueError, match=r"self_replace_ratio must be in \[0, 1\]"):
        u2s.Edit(editor="freeprompt", model="m", self_replace_ratio=1.5)


def test_seed_and_key_column_are_refused_since_they_would_change_nothing():
    with pytest.raises(ValueError, match="draws no noise"):
        u2s.Edit(editor="freeprompt", model="m", seed=3)
    with pytest.raises(ValueError, match="draws no noise"):
        u2s.Edit(editor="freeprompt", model="m", key_column="id")
