import datasets
import numpy as np
import pytest

import u2s_hf as u2s
from u2s_hf import pipeline
from u2s_hf.backends import detectors

import corpus


@pytest.fixture(scope="module")
def sample(photos):
    return corpus.image_dataset(photos)


@pytest.fixture(scope="module")
def safe(sample):
    return u2s.anonymize(sample, batch_size=3)


def test_people_and_text_are_flagged_and_redacted(safe):
    rows = {row["name"]: row for row in safe}
    for name in ("astronaut", "camera", "grace_hopper", "name_card", "page"):
        assert rows[name]["privacy_flag"] and rows[name]["u2s_status"] == "redacted", name
    for name in ("coffee", "chelsea"):
        assert not rows[name]["privacy_flag"] and rows[name]["u2s_status"] == "kept_safe", name
    assert {d["label"] for d in rows["grace_hopper"]["detections"]} == {"face", "text"}


def test_release_view_drops_the_original_column_and_keeps_the_others(safe, sample):
    assert "image" not in safe.column_names
    assert safe["name"] == sample["name"]
    assert set(safe.column_names) == {
        "name",
        "privacy_flag",
        "detections",
        "u2s_status",
        "u2s_error",
        "safe_image",
        "u2s_verified",
    }
    assert isinstance(safe.features["safe_image"], datasets.Image)
    kept = u2s.anonymize(sample, keep_original=True)
    assert "image" in kept.column_names


def test_unflagged_rows_keep_their_pixels_and_flagged_rows_do_not(safe, photos):
    for row in safe:
        before, after = corpus.pixels(photos[row["name"]]), corpus.pixels(row["safe_image"])
        assert after.shape == before.shape
        if row["privacy_flag"]:
            for d in row["detections"]:
                x0, y0, x1, y1 = (int(v) for v in d["box"])
                region = (slice(y0, y1), slice(x0, x1))
                assert np.abs(after[region].astype(int) - before[region]).mean() > 5, row["name"]
        else:
            assert (after == before).all(), row["name"]


def test_name_tag_is_no_longer_readable(safe, photos):
    reader = detectors.TextDetector("cpu", 1, 960)
    read_before = " ".join(t for t, _, _ in reader.read(corpus.pixels(photos["grace_hopper"])))
    assert "HOPPER" in read_before
    row = next(r for r in safe if r["name"] == "grace_hopper")
    read_after = " ".join(t for t, _, _ in reader.read(corpus.pixels(row["safe_image"])))
    assert "HOPPER" not in read_after and "COMO" not in read_after
    card = next(r for r in safe if r["name"] == "name_card")
    assert "ALICE" not in " ".join(t for t, _, _ in reader.read(corpus.pixels(card["safe_image"])))


def test_stage_maps_work_directly_on_datasets(photos):
    """ds.map(u2s.inspect) with a first batch that has no detections, no errors: columns keep their types."""
    ds = corpus.image_dataset({k: photos[k] for k in ("coffee", "chelsea", "astronaut", "grace_hopper")})
    ds = ds.map(u2s.inspect, batched=True, batch_size=2).map(u2s.edit, batched=True, batch_size=2)
    assert ds["privacy_flag"] == [False, False, True, True]
    assert ds.features["detections"].feature["label"] == datasets.Value("string")
    assert ds.features["u2s_error"] == datasets.Value("string")
    assert "image" in ds.column_names  # stage-level maps leave the user's columns alone
    assert ds["u2s_status"] == ["kept_safe", "kept_safe", "redacted", "redacted"]


def test_flagged_rows_without_regions_fail_closed(photos):
    """Edit without Inspect: the flag is unknown, so every row counts as flagged and is obscured whole."""
    ds = corpus.image_dataset({"coffee": photos["coffee"]})
    out = ds.map(u2s.edit, batched=True)
    assert out[0]["u2s_status"] == "redacted" and "whole image obscured" in out[0]["u2s_error"]
    before, after = corpus.pixels(photos["coffee"]), corpus.pixels(out[0]["safe_image"])
    assert np.abs(after.astype(int) - before).mean() > 5
    dropped = ds.map(u2s.Edit(unlocated="drop"), batched=True)
    assert dropped[0]["u2s_status"] == "dropped" and dropped[0]["safe_image"] is None


def test_detector_failure_flags_the_row_and_obscures_it(photos, monkeypatch):
    def broken(self, rgb, threshold, max_side):
        raise RuntimeError("boom")

    monkeypatch.setattr(detectors.FaceDetector, "__call__", broken)
    safe = u2s.anonymize(corpus.image_dataset({"coffee": photos["coffee"]}))
    row = safe[0]
    assert row["privacy_flag"] and row["u2s_status"] == "redacted"
    assert "detector failed" in row["u2s_error"] and "whole image obscured" in row["u2s_error"]


def test_dataset_dicts_run_per_split(photos):
    dd = datasets.DatasetDict(
        {
            "train": corpus.image_dataset({"astronaut": photos["astronaut"]}),
            "test": corpus.image_dataset({"coffee": photos["coffee"]}),
        }
    )
    out = u2s.anonymize(dd)
    assert out["train"][0]["u2s_status"] == "redacted" and out["test"][0]["u2s_status"] == "kept_safe"


def test_presets_and_overrides():
    p = u2s.preset("lite", method="blur", face_threshold=0.4)
    assert p.edit.config.method == "blur" and p.inspect.config.face_threshold == 0.4
    assert [s.name for s in p.stages] == ["inspect", "edit", "verify"]
    with pytest.raises(TypeError, match="no setting"):
        u2s.preset("lite", colour="red")
    with pytest.raises(ValueError, match="unknown preset"):
        u2s.preset("nope")
    with pytest.raises(ValueError, match="redaction method"):
        u2s.Edit(method="smudge")


def test_settings_apply_to_a_preset_object_too(photos):
    chain = u2s.Preset(name="mine", inspect=u2s.Inspect(text=False), edit=u2s.Edit())
    ds = datasets.Dataset.from_dict(
        {"img": [photos["grace_hopper"]]}, features=datasets.Features({"img": datasets.Image()})
    )
    out = u2s.anonymize(ds, chain, image_column="img", method="fill")
    assert {d["label"] for d in out[0]["detections"]} == {"face"}  # the preset's own text=False is kept
    x0, y0, x1, y1 = (int(v) for v in out[0]["detections"][0]["box"])
    assert (corpus.pixels(out[0]["safe_image"])[(y0 + y1) // 2, (x0 + x1) // 2] == 128).all()  # method="fill"
    with pytest.raises(TypeError, match="no setting"):
        u2s.anonymize(ds, chain, image_column="img", colour="red")


def test_custom_column_names(photos):
    ds = datasets.Dataset.from_dict(
        {"img": [photos["astronaut"]]}, features=datasets.Features({"img": datasets.Image()})
    )
    out = u2s.anonymize(ds, image_column="img")
    assert "img" not in out.column_names and out[0]["u2s_status"] == "redacted"
    with pytest.raises(ValueError, match="image column"):
        u2s.anonymize(ds)


def test_a_failing_redaction_falls_back_to_obscuring_then_dropping(photos, monkeypatch):
    from u2s_hf.editors import redact

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    ds = corpus.image_dataset({"astronaut": photos["astronaut"]})
    monkeypatch.setattr(redact, "redact", broken)
    row = u2s.anonymize(ds)[0]
    assert row["u2s_status"] == "redacted" and "redaction failed" in row["u2s_error"]
    before, after = corpus.pixels(photos["astronaut"]), corpus.pixels(row["safe_image"])
    assert np.abs(after.astype(int) - before).mean() > 5
    monkeypatch.setattr(redact, "obscure", broken)
    row = u2s.anonymize(ds)[0]
    assert row["u2s_status"] == "dropped" and row["safe_image"] is None


def test_a_flat_column_setting_renames_only_the_stages_it_means_something_in(photos):
    """Inspect's flag column is `flag_column`, as in the stages that read it; `output_column` is Edit's image."""
    p = u2s.preset("lite", output_column="anon")
    assert p.inspect.config.flag_column == "privacy_flag" and p.edit.config.output_column == "anon"
    ds = corpus.image_dataset({"coffee": photos["coffee"], "astronaut": photos["astronaut"]})
    out = u2s.anonymize(ds, output_column="anon")
    # Before, Inspect wrote its flags to "anon" too, Edit found no flag column and obscured every row.
    assert out["u2s_status"] == ["kept_safe", "redacted"] and out["privacy_flag"] == [False, True]
    assert np.array_equal(corpus.pixels(out[0]["anon"]), corpus.pixels(photos["coffee"]))
    renamed = u2s.anonymize(ds, flag_column="risky")  # a shared setting: Inspect writes it, Edit reads it
    assert renamed["risky"] == [False, True] and renamed["u2s_status"] == ["kept_safe", "redacted"]


def test_a_setting_that_means_different_things_must_name_its_stage(photos):
    with pytest.raises(ValueError, match=r"model is a setting of inspect, caption, instruct and edit") as error:
        u2s.preset("paper", model="m")
    assert "preset('paper', edit={'model': ...})" in str(error.value) and "--set edit.model=" in str(error.value)
    with pytest.raises(ValueError, match="batch_size is a setting of inspect and edit with different meanings"):
        u2s.preset("lite", batch_size=2)
    with pytest.raises(ValueError, match="seed is a setting of instruct and edit"):
        u2s.anonymize(corpus.image_dataset({"coffee": photos["coffee"]}), "paper", seed=1)


def test_a_stage_s_own_settings_change_that_stage_only():
    paper = u2s.preset("paper")
    p = u2s.preset("paper", edit={"model": "m"}, caption={"max_new_tokens": 300})
    assert p.edit == u2s.Edit(editor="flowedit", model="m", source_prompt="c_priv", target_prompt="c_llm")
    assert p.caption == u2s.Caption(model=pipeline.PAPER_VLM, max_new_tokens=300)
    assert (p.inspect, p.instruct) == (paper.inspect, paper.instruct)
    mine = u2s.preset("lite", image_column="img", edit={"image_column": "pixels"})  # the stage's own wins
    assert (mine.inspect.config.image_column, mine.edit.config.image_column) == ("img", "pixels")
    chain = u2s.Preset(name="mine", inspect=u2s.Inspect(text=False), edit=u2s.Edit())
    assert pipeline._build_preset(chain, {"edit": {"method": "blur"}}).edit == u2s.Edit(method="blur")


def test_unknown_stages_and_settings_are_clear_errors():
    with pytest.raises(ValueError, match="preset 'lite' has no caption stage; its stages: inspect, edit"):
        u2s.preset("lite", caption={"model": "m"})
    with pytest.raises(TypeError, match="edit has no setting colour"):
        u2s.preset("lite", edit={"colour": "red"})
    with pytest.raises(TypeError, match="edit= takes a dict"):
        u2s.preset("lite", edit="blur")
    with pytest.raises(TypeError, match="no setting nosuchstage"):
        u2s.preset("lite", nosuchstage={"x": 1})


def test_another_editor_or_backend_does_not_inherit_the_old_one_s_settings():
    redact = u2s.preset("paper", image_column="img", edit={"editor": "redact", "method": "blur"}).edit
    assert redact == u2s.Edit(image_column="img", method="blur")  # FlowEdit's SD3 model is not carried over
    assert u2s.preset("paper", editor="redact").edit == u2s.Edit()  # flat: only Edit has `editor`
    ip2p = u2s.preset("paper", edit={"editor": "instruct-pix2pix", "model": "m"}).edit
    assert ip2p == u2s.Edit(editor="instruct-pix2pix", model="m")  # InstructPix2Pix's steps/seed, not FlowEdit's
    assert u2s.preset("paper", inspect={"backend": "detectors"}).inspect == u2s.Inspect()
    assert u2s.preset("paper", edit={"editor": "flowedit"}) == u2s.preset("paper")  # the same editor: nothing reset
    built = pipeline._build_preset(u2s.preset("paper", max_pixels=10**6), {"edit": {"editor": "redact"}})
    assert built.edit == u2s.Edit(max_pixels=10**6)  # shared settings stay
