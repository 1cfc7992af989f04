"""Verify: the output is checked again with real detectors (and a real identity model), what still leaks is redacted
again, and nothing that leaks leaves."""

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image

import u2s_hf as u2s
from u2s_hf import cli, config, pipeline, report
from u2s_hf.backends import detectors
from u2s_hf.stages.base import DETECTIONS

import corpus

THRESHOLD = 0.35  # ArcFace: same person, as in test_identity.py


def cell(image) -> dict:
    """An image as `datasets` stores it undecoded (how anonymize hands the output to Verify)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def redacted(photos, names) -> datasets.Dataset:
    """Real Inspect and Edit over the photos, as anonymize runs them (images undecoded)."""
    ds = corpus.image_dataset({n: photos[n] for n in names}).cast_column("image", datasets.Image(decode=False))
    ds = ds.map(u2s.inspect, batched=True).map(u2s.edit, batched=True)
    return ds.cast_column("safe_image", datasets.Image(decode=False))


def with_output(ds, name, image) -> datasets.Dataset:
    """`ds` with row `name`'s output replaced by `image`."""
    replaced = cell(image)
    return ds.map(lambda row: {"safe_image": replaced if row["name"] == name else row["safe_image"]})


def edited(pairs: dict) -> datasets.Dataset:
    """Rows a diffusion editor wrote: name -> (original, output)."""
    features = datasets.Features(
        {
            "name": datasets.Value("string"),
            "privacy_flag": datasets.Value("bool"),
            "image": datasets.Image(decode=False),
            "safe_image": datasets.Image(decode=False),
            "detections": DETECTIONS,
            "u2s_status": datasets.Value("string"),
            "u2s_error": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "name": list(pairs),
            "privacy_flag": [True] * len(pairs),
            "image": [cell(original) for original, _ in pairs.values()],
            "safe_image": [cell(output) for _, output in pairs.values()],
            "detections": [[] for _ in pairs],
            "u2s_status": ["edited"] * len(pairs),
            "u2s_error": [None] * len(pairs),
        },
        features=features,
    )


def pixels(value) -> np.ndarray:
    return corpus.pixels(Image.open(io.BytesIO(value["bytes"])))


def face_box(row) -> tuple:
    box = next(d["box"] for d in row["detections"] if d["label"] == "face")
    return tuple(int(v) for v in box)


@pytest.fixture(scope="module")
def vectron():
    return {"identity_model": "vectron", "identity_root": corpus.vectron_root()}


@pytest.fixture(scope="module")
def people(photos):
    return redacted(photos, ("astronaut", "grace_hopper", "coffee"))


def test_a_good_output_passes_untouched(people):
    out = people.map(u2s.verify, batched=True)
    assert out["u2s_verified"] == [True, True, None]  # coffee was kept: not looked at
    assert out["u2s_status"] == people["u2s_status"] and out["u2s_error"] == people["u2s_error"]
    assert [v["bytes"] for v in out["safe_image"]] == [v["bytes"] for v in people["safe_image"]]


def test_the_original_face_put_back_is_caught_and_redacted_again(people, photos):
    leaky = with_output(people, "astronaut", photos["astronaut"])
    out = leaky.map(u2s.verify, batched=True)
    row = out[0]
    assert row["u2s_status"] == "redacted" and row["u2s_verified"] is True
    assert row["u2s_error"] == "verify: 1 face: redacted again"
    x0, y0, x1, y1 = face_box(row)
    before, after = corpus.pixels(photos["astronaut"]), pixels(row["safe_image"])
    assert np.abs(after[y0:y1, x0:x1].astype(int) - before[y0:y1, x0:x1]).mean() > 5
    assert detectors.load_face_detector("cpu", 1)(after, 0.3, 1536) == []
    assert out["u2s_verified"][1:] == [True, None]  # the other rows are as they were


def test_readable_text_left_in_a_redacted_output_is_caught(people, photos):
    row = people[1]
    assert row["name"] == "grace_hopper"
    tag = [tuple(int(v) for v in d["box"]) for d in row["detections"] if d["label"] == "text"]
    leaky_pixels = pixels(row["safe_image"]).copy()
    original = corpus.pixels(photos["grace_hopper"])
    for x0, y0, x1, y1 in tag:  # the name tag as it was; the face stays redacted
        leaky_pixels[y0 - 5 : y1 + 5, x0 - 5 : x1 + 5] = original[y0 - 5 : y1 + 5, x0 - 5 : x1 + 5]
    reader = detectors.TextDetector("cpu", 1, 960)
    assert "HOPPER" in " ".join(t for t, _, _ in reader.read(leaky_pixels))
    out = with_output(people, "grace_hopper", Image.fromarray(leaky_pixels)).map(u2s.verify, batched=True)[1]
    assert out["u2s_status"] == "redacted" and out["u2s_verified"] is True
    assert out["u2s_error"].startswith("verify: ") and "text line" in out["u2s_error"]
    assert "HOPPER" not in " ".join(t for t, _, _ in reader.read(pixels(out["safe_image"])))


def test_a_leak_outside_the_redacted_regions_is_found_too(people, photos):
    """A face pasted far from what Edit redacted: the output differs from the original there, so Verify looks
    everywhere."""
    leaky = pixels(people[0]["safe_image"]).copy()
    stranger = corpus.pixels(photos["grace_hopper"].resize((200, 234)))
    leaky[-234:, -200:] = stranger  # bottom right, away from the astronaut's face (top middle)
    out = with_output(people, "astronaut", Image.fromarray(leaky)).map(u2s.verify, batched=True)[0]
    assert out["u2s_status"] == "redacted" and out["u2s_verified"] is True
    assert "face" in out["u2s_error"] and "redacted again" in out["u2s_error"]
    assert np.abs(pixels(out["safe_image"])[-234:, -200:].astype(int) - stranger).mean() > 5


def test_a_leak_that_outlasts_its_rounds_is_obscured_or_dropped(people, photos):
    leaky = with_output(people, "astronaut", photos["astronaut"])
    obscured = leaky.map(u2s.Verify(rounds=0), batched=True)[0]
    assert obscured["u2s_status"] == "redacted" and obscured["u2s_verified"] is True
    assert obscured["u2s_error"] == "verify: 1 face still found after 0 rounds: whole image obscured"
    before, after = corpus.pixels(photos["astronaut"]), pixels(obscured["safe_image"])
    assert np.abs(after.astype(int) - before).mean() > 5
    dropped = leaky.map(u2s.Verify(rounds=0, unlocated="drop"), batched=True)[0]
    assert dropped["u2s_status"] == "dropped" and dropped["safe_image"] is None
    assert dropped["u2s_verified"] is False and dropped["u2s_error"].endswith(": dropped")


def test_a_crowd_whose_faces_outlast_redaction_is_dropped_with_unlocated_drop(photos):
    """The crowd photo: faces are still found in regions that pixelating again no longer changes."""
    crowd = corpus.image_dataset({"crowd": corpus.group_photos()["team_and_crowd"]})
    safe = u2s.anonymize(crowd, unlocated="drop")[0]
    assert safe["u2s_status"] == "dropped" and safe["safe_image"] is None and safe["u2s_verified"] is False
    assert safe["u2s_error"].startswith("verify: ") and safe["u2s_error"].endswith(": dropped")


def test_kept_rows_are_looked_at_only_with_verify_kept(people, photos):
    missed = with_output(people, "coffee", photos["astronaut"])  # as if Inspect had missed a face
    assert missed.map(u2s.verify, batched=True)[2]["u2s_verified"] is None
    row = missed.map(u2s.Verify(verify_kept=True), batched=True)[2]
    assert row["u2s_status"] == "redacted" and row["u2s_verified"] is True
    assert row["u2s_error"] == "verify: 1 face: redacted again"
    assert people.map(u2s.Verify(verify_kept=True), batched=True)["u2s_verified"] == [True, True, True]


def test_an_output_that_cannot_be_decoded_is_an_error_row(people):
    broken = people.map(lambda row: {"safe_image": {"bytes": b"\x89PNG\r\n\x1a\nnot really", "path": None}})
    out = broken.map(u2s.verify, batched=True)
    assert out["u2s_status"][:2] == ["error", "error"] and out["safe_image"][:2] == [None, None]
    assert out["u2s_verified"][:2] == [False, False] and out["u2s_error"][0].startswith("verify: output corrupt")


def test_an_edited_row_without_identity_model_keeps_its_pixels_and_says_so(photos):
    ds = edited({name: (photos[name], photos[name]) for name in ("astronaut", "coffee")})
    out = ds.map(u2s.verify, batched=True)
    assert out["u2s_status"] == ["edited", "edited"]  # never re-edited for containing a face
    assert [v["bytes"] for v in out["safe_image"]] == [v["bytes"] for v in ds["safe_image"]]
    assert out["u2s_verified"] == [False, True]  # coffee shows no face: nothing to judge
    assert out["u2s_error"] == ["verify: identity not checked", None]


def test_with_an_identity_model_only_the_original_person_is_re_edited(photos, vectron, arcface):
    ds = edited(
        {
            "same person": (photos["astronaut"], photos["astronaut"]),
            "someone else": (photos["astronaut"], photos["grace_hopper"]),
        }
    )
    out = ds.map(u2s.Verify(**vectron), batched=True)
    same, other = out[0], out[1]
    assert same["u2s_status"] == "redacted" and same["u2s_verified"] is True
    assert same["u2s_error"] == "verify: 1 matching face: redacted again"
    after = Image.open(io.BytesIO(same["safe_image"]["bytes"]))
    assert arcface.max_similarity(photos["astronaut"], after) < THRESHOLD
    assert other["u2s_status"] == "edited" and other["u2s_verified"] is True and other["u2s_error"] is None
    assert other["safe_image"]["bytes"] == ds[1]["safe_image"]["bytes"]


def test_an_identity_model_that_cannot_be_loaded_stops_the_map_instead_of_failing_rows(photos, people, tmp_path):
    missing = u2s.Verify(identity_model="not_here", identity_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not_here"):
        edited({"astronaut": (photos["astronaut"], photos["astronaut"])}).map(missing, batched=True)
    assert people.map(missing, batched=True)["u2s_verified"] == [True, True, None]  # no edited row: not loaded


def test_text_of_the_original_in_an_edited_output_is_re_edited(photos):
    ds = edited({"grace": (photos["grace_hopper"], photos["grace_hopper"])})
    out = ds.map(u2s.Verify(faces=False), batched=True)[0]  # the text rule alone, no identity model needed
    assert out["u2s_status"] == "redacted" and out["u2s_verified"] is True
    assert "matching text line" in out["u2s_error"]
    reader = detectors.TextDetector("cpu", 1, 960)
    assert "HOPPER" not in " ".join(t for t, _, _ in reader.read(pixels(out["safe_image"])))


def test_a_flowedit_output_is_not_re_edited_for_showing_a_face(photos, tiny_sd3, vectron):
    ds = corpus.image_dataset({"astronaut": photos["astronaut"]}).cast_column("image", datasets.Image(decode=False))
    ds = ds.add_column("privacy_flag", [True])
    ds = ds.add_column("c_priv", ["Eileen Collins in an orange suit"])
    ds = ds.add_column("c_llm", ["a tall man with grey hair in an orange suit"])
    flow = u2s.Edit(editor="flowedit", model=tiny_sd3, text_encoder_3=False, steps=4, n_max=3, resolution=64)
    out = ds.map(flow, batched=True).cast_column("safe_image", datasets.Image(decode=False))
    assert out["u2s_status"] == ["edited"]
    # A new person where the astronaut was: a face, but not hers.
    new_person = with_output(out, "astronaut", photos["grace_hopper"])
    for candidate in (out, new_person):
        checked = candidate.map(u2s.Verify(**vectron), batched=True)
        assert checked["u2s_status"] == ["edited"] and checked["u2s_verified"] == [True]
        assert checked["safe_image"][0]["bytes"] == candidate["safe_image"][0]["bytes"]


def test_num_proc_two_gives_the_same_result(people, photos):
    leaky = with_output(people, "astronaut", photos["astronaut"])
    one = leaky.map(u2s.verify, batched=True, batch_size=1)
    two = leaky.map(u2s.verify, batched=True, batch_size=1, num_proc=2, with_rank=True)
    for name in ("u2s_status", "u2s_error", "u2s_verified", "safe_image"):
        assert two[name] == one[name], name


def test_flat_detector_settings_reach_inspect_and_verify(one_image, tmp_path):
    p = u2s.preset("lite", text=False, face_threshold=0.4, output_column="anon", unlocated="drop")
    assert (p.inspect.config.text, p.verify.config.text) == (False, False)
    assert p.inspect.config.face_threshold == p.verify.config.face_threshold == 0.4
    assert p.edit.config.output_column == p.verify.config.output_column == "anon"
    assert p.edit.config.unlocated == p.verify.config.unlocated == "drop"
    assert u2s.preset("lite", verify={"text": False}).inspect.config.text is True  # a stage's own stays its own
    out = tmp_path / "out"
    assert cli.main(["anonymize", str(one_image), "--out", str(out), "--set", "text=false"]) == 0
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert stages["inspect"]["text"] is False and stages["verify"]["text"] is False


@pytest.fixture
def one_image(photos, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    photos["grace_hopper"].save(folder / "grace.jpg", quality=95)
    return folder


def test_the_lite_preset_ends_with_verify_and_anonymize_fills_u2s_verified(photos):
    assert [s.name for s in u2s.preset("lite").stages] == ["inspect", "edit", "verify"]
    for name in ("paper", "paper-ip2p"):
        assert u2s.preset(name).stages[-1].name == "verify"
    ds = corpus.image_dataset(photos)
    safe, timings = pipeline.run(ds, "lite")
    assert list(timings) == ["inspect", "edit", "verify"]
    assert isinstance(safe.features["safe_image"], datasets.Image) and safe.features["safe_image"].decode
    for row in safe:
        assert row["u2s_verified"] is (True if row["privacy_flag"] else None), row["name"]
    summary = report.build(safe, u2s.preset("lite"), timings)
    assert summary["counts"]["all"]["verified"] == {"true": 5, "false": 0, "none": 2}
    assert summary["verify"] == {
        "identity_model": None,
        "looked_at": 5,
        "passed": 5,
        "re_edited": 0,
        "obscured": 0,
        "dropped": 0,
        "not_verified": 0,
        "identity_not_checked": 0,
    }
    without = u2s.Preset(name="mine", inspect=u2s.Inspect(), edit=u2s.Edit())
    plain, plain_timings = pipeline.run(ds, without)
    assert "u2s_verified" not in plain.column_names and "verify" not in report.build(plain, without, plain_timings)


def test_the_report_counts_what_verify_did(people, photos, vectron):
    leaky = with_output(people, "astronaut", photos["astronaut"]).map(u2s.verify, batched=True)
    summary = report.build(leaky, u2s.preset("lite"), {"verify": 1.0})
    assert summary["verify"]["re_edited"] == 1 and summary["verify"]["passed"] == 2
    leaky = with_output(people, "astronaut", photos["astronaut"])
    dropped = leaky.map(u2s.Verify(rounds=0, unlocated="drop"), batched=True)
    assert report.build(dropped, u2s.preset("lite"), {})["verify"]["dropped"] == 1
    unchecked = edited({"astronaut": (photos["astronaut"], photos["astronaut"])}).map(u2s.verify, batched=True)
    summary = report.build(unchecked, u2s.preset("lite"), {})
    assert summary["verify"]["identity_not_checked"] == 1 and summary["verify"]["not_verified"] == 1
    checked = u2s.preset("lite", **vectron)
    assert report.build(unchecked, checked, {})["verify"]["identity_model"] == "vectron"
    assert report.models_of(checked)["identity"]["model"] == "vectron"
    assert config.public_settings(checked.verify.config)["identity_root"] == "(a local folder)"


def test_an_upside_down_face_left_in_an_output_is_caught(people, arcface):
    group = corpus.group_photos()["five_people"]
    out = with_output(people, "astronaut", group.rotate(180)).map(u2s.verify, batched=True)[0]
    assert out["u2s_status"] == "redacted" and out["u2s_verified"] is True
    assert out["u2s_error"].startswith("verify: 6 faces") and out["u2s_error"].endswith("redacted again")
    upright = Image.open(io.BytesIO(out["safe_image"]["bytes"])).rotate(180)
    assert arcface.max_similarity(group, upright) < THRESHOLD


def test_rows_run_side_by_side_give_the_same_result(photos):
    """Inspect and Verify run `threads` rows at a time: the outcome does not depend on it."""
    ds = corpus.image_dataset({n: photos[n] for n in ("astronaut", "name_card", "coffee", "grace_hopper", "page")})
    one, two = u2s.anonymize(ds, threads=1), u2s.anonymize(ds, threads=2)
    for name in ("privacy_flag", "detections", "u2s_status", "u2s_error", "u2s_verified"):
        assert two[name] == one[name], name
    assert [pixels_of(row) for row in two] == [pixels_of(row) for row in one]


def pixels_of(row) -> bytes:
    return corpus.pixels(row["safe_image"]).tobytes()
