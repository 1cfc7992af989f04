"""dataset_scripts/make_triplets.py end to end on tiny models: edit the flagged rows, score them, filter, save."""

import datasets
import make_triplets  # dataset_scripts/ is on sys.path (conftest)
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiny_models

torch.set_num_threads(1)
ROWS = {  # name: (privacy_flag, c_pub, c_llm)
    "astronaut": (True, "a person in a space suit", "a tall man with red hair in a space suit"),
    "grace_hopper": (True, "an old photo of a woman", "an old photo of a tall man with red hair"),
    "camera": (True, "a black and white photo of a man", "a black and white photo of a woman with grey hair"),
    "page": (True, "a man holding a camera", "a woman holding a camera"),  # its cosine is < 0: not scored
    "coffee": (True, "a person at a table", None),  # no prompt: Edit redacts it, so it is not a triplet
    "chelsea": (False, None, None),  # not flagged: left out
}


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    torch.manual_seed(1)  # the tiny model of test_score_edit, whose cosines take both signs (see `originals`)
    return tiny_models.open_clip_model(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture
def stage1(photos, tmp_path):
    """A Stage-1 output saved to disk: original images, flags and the three texts."""
    ds = datasets.Dataset.from_dict(
        {
            "image": [photos[name].convert("RGB").resize((64, 64)) for name in ROWS],
            "privacy_flag": [flag for flag, _, _ in ROWS.values()],
            "c_pub": [c_pub for _, c_pub, _ in ROWS.values()],
            "c_edit": [c_llm and "make the person a tall man with red hair" for _, _, c_llm in ROWS.values()],
            "c_llm": [c_llm for _, _, c_llm in ROWS.values()],
            "c_priv": ["private"] * len(ROWS),
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "privacy_flag": datasets.Value("bool"),
                **{name: datasets.Value("string") for name in ("c_pub", "c_edit", "c_llm", "c_priv")},
            }
        ),
    )
    ds.save_to_disk(str(tmp_path / "stage1"))
    return tmp_path / "stage1"


@pytest.fixture(params=["freeprompt", "instruct-pix2pix"])
def editor(request) -> list[str]:
    """The script's options for a tiny editor: FreePrompt (the default, so not named) or InstructPix2Pix."""
    if request.param == "freeprompt":
        return ["--model", request.getfixturevalue("tiny_sd15")]
    return ["--editor", "instruct-pix2pix", "--model", request.getfixturevalue("tiny_ip2p")]


def run(stage1, out, editor, clip_model, *options):
    make_triplets.main(
        [
            str(stage1),
            str(out),
            *editor,
            "--clip-model",
            clip_model,
            "--batch-size",
            "2",
            "--set",
            "steps=2",
            "--set",
            "resolution=64",
            *options,
        ]
    )
    return datasets.load_from_disk(str(out))


def cosines(clip_model, pictures, texts) -> list[float]:
    """open_clip cosines of pictures with their texts, computed here with open_clip's own API."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(clip_model)
    tokenizer = open_clip.get_tokenizer(clip_model)
    with torch.no_grad():
        image = F.normalize(model.encode_image(torch.stack([preprocess(p) for p in pictures])), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    return (image * text).sum(-1).tolist()


def test_triplets_are_edited_scored_filtered_and_saved(stage1, tmp_path, editor, clip_model, photos, capsys):
    source = datasets.load_from_disk(str(stage1))
    originals = cosines(clip_model, source["image"][:4], source["c_pub"][:4])
    assert [value > 0 for value in originals] == [True, True, True, False], originals  # the seeded tiny model
    everything = run(stage1, tmp_path / "all", editor, clip_model, "--min-snorm", "-1000")
    printed = capsys.readouterr().out
    assert (
        "kept 3 of 5 flagged images (s_norm > -1000.0); dropped 2: 1 not edited, 1 not scored, "
        "0 with s_norm <= -1000.0; 1 unflagged rows left out"
    ) in printed
    assert f"wrote 3 triplets to {tmp_path / 'all'}" in printed
    assert everything.column_names == ["image", "safe_image", "c_edit", "c_pub", "s_norm"]
    assert isinstance(everything.features["image"], datasets.Image) and everything.features["image"].decode
    assert everything["c_pub"] == [ROWS[name][1] for name in ("astronaut", "grace_hopper", "camera")]
    for i, row in enumerate(everything):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(source[i]["image"]))  # the original, unchanged
        assert row["safe_image"].size == row["image"].size
        assert not np.array_equal(np.asarray(row["safe_image"]), np.asarray(row["image"]))
        assert row["c_edit"] == "make the person a tall man with red hair"
    edits = cosines(clip_model, everything["safe_image"], everything["c_pub"])
    assert everything["s_norm"] == pytest.approx([e / o for e, o in zip(edits, originals[:3], strict=True)], rel=1e-4)

    middle = sorted(everything["s_norm"])[1]
    assert len(set(everything["s_norm"])) == 3
    kept = run(stage1, tmp_path / "kept", editor, clip_model, "--min-snorm", str(middle))
    printed = capsys.readouterr().out
    assert f"kept 1 of 5 flagged images (s_norm > {middle}); dropped 4: 1 not edited, 1 not scored, " in printed
    assert f"2 with s_norm <= {middle}; 1 unflagged rows left out" in printed
    assert kept["s_norm"] == [max(everything["s_norm"])]
    assert kept["c_pub"] == [everything["c_pub"][everything["s_norm"].index(max(everything["s_norm"]))]]


def test_it_refuses_a_used_folder_and_a_dataset_without_stage_1(stage1, tmp_path, clip_model):
    editor = ["--model", "never-loaded"]  # refused before any model loads
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not overwriting"):
        run(stage1, used, editor, clip_model)
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    datasets.load_from_disk(str(stage1)).remove_columns("c_llm").save_to_disk(str(tmp_path / "no_llm"))
    with pytest.raises(SystemExit, match="no column c_llm"):
        run(tmp_path / "no_llm", tmp_path / "out", editor, clip_model)
    with pytest.raises(SystemExit, match="no-such-editor"):
        make_triplets.main([str(stage1), str(tmp_path / "out"), "--editor", "no-such-editor"])
    assert not (tmp_path / "out").exists()
