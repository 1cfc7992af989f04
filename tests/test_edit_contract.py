"""The editor contract: a new editor is one module (its settings and its class) plus one registry line, and Edit
runs it without knowing anything else about it. Here a pixel-inverting editor, registered for the test only."""

from dataclasses import dataclass

import numpy as np
import pytest

import u2s_hf as u2s
from u2s_hf import editors, runtime
from u2s_hf.editors.base import Editor, EditorSettings

import corpus


@dataclass(frozen=True)
class InvertSettings(EditorSettings):
    """prompt: "c_edit", the column whose text a row needs. seed: 0. strength: 1.0 (how far towards the inverse)."""

    prompt: str = "c_edit"
    seed: int | None = 0
    strength: float = 1.0

    def prompt_columns(self) -> tuple[str, ...]:
        return (self.prompt,)


LOADS = []


class Invert(Editor):
    @classmethod
    def from_pretrained(cls, settings, device):
        LOADS.append((settings.model, device))
        return cls(None, settings, device)

    def edit(self, images, prompts, seeds):
        assert all(isinstance(prompt, str) for prompt in prompts) and len(seeds) == len(images)
        s = self.settings.strength
        return [(im * (1 - s) + (255 - im.astype(float)) * s).astype(np.uint8) for im in images]


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(editors.EDITORS, "invert", (InvertSettings, Invert))
    monkeypatch.setattr(runtime, "_models", {})
    LOADS.clear()


def test_a_registered_editor_runs_through_the_stage(registered, photos):
    names = ("astronaut", "coffee", "chelsea")
    ds = corpus.image_dataset({n: photos[n] for n in names})
    ds = ds.add_column("privacy_flag", [True, False, True]).add_column("c_edit", ["make it a man", None, None])
    out = ds.map(u2s.Edit(editor="invert", model="m", batch_size=2), batched=True)
    assert out["u2s_status"] == ["edited", "kept_safe", "redacted"]
    assert "no prompt to edit with" in out["u2s_error"][2]
    after = [corpus.pixels(image) for image in out["safe_image"]]
    assert np.array_equal(after[0], 255 - corpus.pixels(photos["astronaut"]))
    assert np.array_equal(after[1], corpus.pixels(photos["coffee"]))
    half = ds.map(u2s.Edit(editor="invert", model="m", strength=0.5), batched=True)
    assert not np.array_equal(corpus.pixels(half["safe_image"][0]), after[0])
    assert LOADS == [("m", "cpu")]  # strength does not change the loaded model: loaded once


def test_its_settings_are_checked_and_kept_to_it(registered):
    with pytest.raises(TypeError, match="strength"):
        u2s.Edit(editor="invert", model="m", strength="full")
    with pytest.raises(ValueError, match="needs model"):
        u2s.Edit(editor="invert")
    with pytest.raises(ValueError, match="steps is an instruct-pix2pix / flowedit / freeprompt setting"):
        u2s.Edit(editor="invert", model="m", steps=10)
    with pytest.raises(ValueError, match="strength is an invert setting; editor 'flowedit'"):
        u2s.Edit(editor="flowedit", model="m", strength=1.0)
    with pytest.raises(ValueError, match="strength is a diffusion setting"):
        u2s.Edit(strength=0.5)
    assert "strength" in u2s.config.field_names(u2s.EditConfig)
