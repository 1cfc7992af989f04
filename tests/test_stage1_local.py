"""Stage 1 with transformers models (tiny, random, built offline and loaded by path like a Hub id)."""

import os

import pytest
import torch

import u2s_hf as u2s
from u2s_hf import report, runtime

import corpus
import tiny_models

torch.set_num_threads(1)
CAPTION = (
    "PRIVACY_FLAG: TRUE\nPRIVACY_REVIEW:\n- face: people\n"
    "PRIVATE_CAPTION: An astronaut, Eileen Collins, in an orange suit.\n"
    "PUBLIC_CAPTION: A person in an orange space suit in front of a flag."
)
EDIT = 'Edit: "make the person a tall man with short grey hair, broad shoulders and a plain blue suit"'


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "flag_false": str(tiny_models.vlm(root / "flag_false", "PRIVACY_FLAG: FALSE")),
        "flag_garbled": str(tiny_models.vlm(root / "flag_garbled", "I am not sure about this one.")),
        "caption": str(tiny_models.vlm(root / "caption", CAPTION)),
        "caption_bad": str(tiny_models.vlm(root / "caption_bad", "PRIVATE_CAPTION: Eileen Collins.")),
        "lm": str(tiny_models.chat_lm(root / "lm", EDIT)),
    }


@pytest.fixture
def rows(photos, tmp_path):
    return corpus.image_dataset({n: photos[n] for n in ("astronaut", "coffee", "grace_hopper")}, tmp_path / "ds")


def test_flags_through_generate(models, rows):
    out = rows.map(u2s.Inspect(backend="vlm", model=models["flag_false"], debug_column="raw"), batched=True)
    assert out["privacy_flag"] == [False, False, False] and out["raw"] == ["PRIVACY_FLAG: FALSE"] * 3
    garbled = rows.map(u2s.Inspect(backend="vlm", model=models["flag_garbled"]), batched=True)
    assert garbled["privacy_flag"] == [True, True, True]
    assert set(garbled["u2s_error"]) == {"flag answer not understood: counted as flagged"}


def test_captions_and_instructions_through_generate(models, rows):
    flagged = rows.add_column("privacy_flag", [True, False, True])
    captioned = flagged.map(u2s.Caption(model=models["caption"]), batched=True)
    assert captioned["c_pub"] == [
        "A person in an orange space suit in front of a flag.",
        None,
        "A person in an orange space suit in front of a flag.",
    ]
    assert captioned[0]["privacy_review"] == ["face: people"] and "Eileen" in captioned[0]["c_priv"]
    out = captioned.map(u2s.Instruct(model=models["lm"], demographics="uniform"), batched=True)
    assert out["c_edit"][0] == "make the person a tall man with short grey hair, broad shoulders and a plain blue suit"
    assert out["c_llm"][0] == out["c_edit"][0]  # one scripted answer serves both prompts of this tiny model
    assert out["c_edit"][1] is None and out["c_llm"][1] is None


def test_malformed_caption_is_an_error_row(models, rows):
    out = rows.add_column("privacy_flag", [True] * 3).map(u2s.Caption(model=models["caption_bad"]), batched=True)
    assert out["u2s_status"] == ["error"] * 3 and out["c_pub"] == [None] * 3
    assert all("PUBLIC_CAPTION" in e for e in out["u2s_error"])


def test_one_model_per_process_for_stages_naming_the_same_id(models, rows):
    flagged = rows.map(u2s.Inspect(backend="vlm", model=models["caption"]), batched=True)
    flagged.map(u2s.Caption(model=models["caption"]), batched=True)
    loaded = [k for k in runtime._models if k[:2] == ("vlm", models["caption"])]
    assert len(loaded) == 1
    model = runtime._models[loaded[0]].model
    assert model.generation_config.sequence_bias  # left as loaded: settings went to generate()
    assert model.generation_config.max_new_tokens is None


def test_num_proc_cache_hits_and_misses(models, rows):
    stage = u2s.Inspect(backend="vlm", model=models["flag_false"])
    first = rows.map(stage, batched=True, batch_size=2, num_proc=2, with_rank=True)
    files = [f["filename"] for f in first.cache_files]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = rows.map(stage, batched=True, batch_size=2, num_proc=2, with_rank=True)  # stage reused after loading
    assert [f["filename"] for f in again.cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    for changed in (
        u2s.Inspect(backend="vlm", model=models["flag_garbled"]),
        u2s.Inspect(backend="vlm", model=models["flag_false"], criteria=["health"]),
    ):
        assert [f["filename"] for f in rows.map(changed, batched=True, batch_size=2).cache_files] != files


def test_the_paper_preset_chains_the_stage_1_models(models, rows):
    paper = u2s.preset("paper", inspect={"model": models["caption"]}, caption={"model": models["caption"]})
    assert [s.name for s in paper.stages] == ["inspect", "caption", "instruct", "edit", "verify"]
    assert paper.caption.config.backend == "vlm" and paper.instruct.config.backend == "llm"
    assert u2s.caption.config.model == u2s.pipeline.PAPER_VLM and u2s.instruct.config.model == u2s.pipeline.PAPER_LLM
    assert paper.edit.config.editor == "flowedit"
    chain = u2s.Preset(
        name="tiny",
        inspect=paper.inspect,
        caption=paper.caption,
        instruct=u2s.Instruct(model=models["lm"]),
        edit=u2s.Edit(),
    )
    out = u2s.anonymize(rows, chain)
    assert out["privacy_flag"] == [True] * 3 and out["c_pub"][0].startswith("A person in an orange")
    assert out["u2s_status"] == ["redacted"] * 3  # redaction without boxes from a VLM: obscured whole
    assert report.models_of(chain)["caption"] == {"model": models["caption"], "revision": "main", "package": "vlm"}
