"""dataset_scripts/loaders.py on synthetic archives laid out like the real ones: columns, features, the paper's
split sizes as seeded class-stratified samples, captions and attribute lists, and bad inputs."""

import io
import json
import re
from collections import Counter

import datasets
import numpy as np
import pytest
from PIL import Image

from u2s_hf import images

import loaders  # dataset_scripts/ is on sys.path (conftest)

RNG = np.random.default_rng(0)


def jpeg(path) -> bytes:
    """A tiny JPEG of random pixels (so every file's bytes differ) at `path`; its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def cells(ds) -> list[dict]:
    """The image cells as stored: {bytes, path}."""
    return ds.cast_column("image", datasets.Image(decode=False))["image"]


def stored(ds) -> list[bytes]:
    return [cell["bytes"] for cell in cells(ds)]


# ---- Caltech101 -------------------------------------------------------------------------------------------------

CALTECH = {"airplanes": 20, "accordion": 6, "Faces": 9, "Leopards": 5}  # 40 images; the real archive's cases


@pytest.fixture
def caltech(tmp_path):
    """101_ObjectCategories/<class>/image_NNNN.jpg, with the archive's BACKGROUND_Google; {bytes: class}."""
    files = {}
    for name, count in {**CALTECH, "BACKGROUND_Google": 4}.items():
        for i in range(count):
            files[jpeg(tmp_path / "101_ObjectCategories" / name / f"image_{i + 1:04d}.jpg")] = name
    return tmp_path, files


def test_caltech101_is_a_seeded_stratified_sample_of_the_papers_sizes_scaled_down(caltech):
    root, files = caltech
    loaded = loaders.load("caltech101", str(root))
    ds = loaded.dataset
    assert set(ds) == {"train", "test"}
    names = sorted(CALTECH)  # ["Faces", "Leopards", "accordion", "airplanes"]: the background is no class
    for split in ds.values():
        assert split.column_names == ["image", "label"]
        assert isinstance(split.features["image"], datasets.Image)
        assert split.features["label"] == datasets.ClassLabel(names=names)
    # 40 images < 2,980: both sizes scaled by 40/2980, floored (2000 -> 26, 980 -> 13)
    assert (len(ds["train"]), len(ds["test"])) == (26, 13)
    assert "scaled" in loaded.notes[-1] and "26 train / 13 test" in loaded.notes[-1]
    assert any("BACKGROUND_Google (4 images)" in note for note in loaded.notes)
    for split in ds.values():
        # each label is the class of the file the bytes came from, and every class is in both splits
        assert [names[label] for label in split["label"]] == [files[b] for b in stored(split)]
        assert set(split["label"]) == {0, 1, 2, 3}
        assert all(cell["path"] is None for cell in cells(split))
    assert not set(stored(ds["train"])) & set(stored(ds["test"]))
    # stratified: airplanes, half of the images, are about half of each split
    assert 12 <= Counter(ds["train"]["label"])[3] <= 14
    assert 5 <= Counter(ds["test"]["label"])[3] <= 7
    # the same seed, the same sample; another seed, another one
    again = loaders.caltech101(root).dataset
    assert stored(again["train"]) == stored(ds["train"]) and stored(again["test"]) == stored(ds["test"])
    assert stored(loaders.caltech101(root, seed=1).dataset["train"]) != stored(ds["train"])


def test_caltech101_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="101_ObjectCategories"):
        loaders.load("caltech101", str(tmp_path))
    (tmp_path / "101_ObjectCategories" / "airplanes").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape("no .jpg images")):
        loaders.caltech101(tmp_path)


# ---- the sample itself ------------------------------------------------------------------------------------------


def test_stratified_sample_known_answer():
    labels = [0] * 100 + [1] * 50 + [2] * 10
    sample = loaders.stratified_sample(labels, {"train": 80, "test": 32}, seed=0)
    count = {split: Counter(labels[i] for i in positions) for split, positions in sample.items()}
    # one of each class per split first, then the rest in proportion to what each class has left:
    # train 77 of (98, 48, 8) -> 49, 24, 4; test 29 of (49, 24, 4) -> 18.45, 9.04, 1.51 -> 18, 9, 2
    assert count["train"] == {0: 50, 1: 25, 2: 5}
    assert count["test"] == {0: 19, 1: 10, 2: 3}
    assert not set(sample["train"]) & set(sample["test"])
    assert all(positions == sorted(positions) for positions in sample.values())
    assert sample == loaders.stratified_sample(labels, {"train": 80, "test": 32}, seed=0)
    assert sample != loaders.stratified_sample(labels, {"train": 80, "test": 32}, seed=1)


def test_stratified_sample_covers_every_class_it_can():
    # a class with one image can only be in the first split; a split smaller than the classes takes what it can
    sample = loaders.stratified_sample([0, 0, 1, 2, 2, 2], {"train": 3, "test": 2}, seed=3)
    assert {0, 1, 2} == {[0, 0, 1, 2, 2, 2][i] for i in sample["train"]}
    assert {0, 2} == {[0, 0, 1, 2, 2, 2][i] for i in sample["test"]}
    small = loaders.stratified_sample([0, 1, 2, 3], {"train": 2}, seed=0)["train"]
    assert len(small) == 2
    with pytest.raises(ValueError, match="asked for"):
        loaders.stratified_sample([0, 1], {"train": 2, "test": 1}, seed=0)


# ---- MIT Indoor67 -----------------------------------------------------------------------------------------------


@pytest.fixture
def indoor(tmp_path):
    """Images/<class>/int0..5.jpg; TrainImages.txt lists int0-3 of each class, TestImages.txt int4-5 (kitchen's
    int5 as a file that is not there); CRLF line ends and a blank line, as text editors leave them."""
    files, lists = {}, {"train": [], "test": []}
    for name in ("office", "bakery", "kitchen"):
        for i in range(6):
            file = f"{name}/int{i}.jpg"
            files[jpeg(tmp_path / "Images" / file)] = file
            lists["train" if i < 4 else "test"].append(file if file != "kitchen/int5.jpg" else "kitchen/gone.jpg")
    (tmp_path / "TrainImages.txt").write_text("\r\n".join(lists["train"]) + "\r\n")
    (tmp_path / "TestImages.txt").write_text("\n".join(lists["test"]) + "\n\n")
    return tmp_path, files, lists


def test_indoor67_samples_each_official_list(indoor):
    root, files, lists = indoor
    loaded = loaders.load("indoor67", str(root))
    ds = loaded.dataset
    names = ["bakery", "kitchen", "office"]
    for split in ds.values():
        assert split.features["label"] == datasets.ClassLabel(names=names)
        assert split.column_names == ["image", "label"]
    # pools: 12 listed train images, 5 test ones there (kitchen/gone.jpg is not): the factor is 12/3991
    # (5/1317 is larger), so train takes all 12 and test floor(1317 * 12 / 3991) = 3
    assert (len(ds["train"]), len(ds["test"])) == (12, 3)
    assert any("left out 1 listed images" in note for note in loaded.notes)
    for split in ("train", "test"):
        listed = [files[b] for b in stored(ds[split])]
        assert set(listed) <= set(lists[split])
        assert [names[label] for label in ds[split]["label"]] == [file.split("/")[0] for file in listed]
    assert set(ds["test"]["label"]) == {0, 1, 2}  # every class, even with a file missing from its list


def test_indoor67_missing_list_and_bad_lines(indoor):
    root, _, _ = indoor
    (root / "TestImages.txt").rename(root / "elsewhere.txt")
    with pytest.raises(FileNotFoundError, match=re.escape("TestImages.txt")):
        loaders.indoor67(root)
    (root / "TestImages.txt").write_text("kitchen/../../secret.jpg\n")
    with pytest.raises(ValueError, match="not a plain file name"):
        loaders.indoor67(root)
    (root / "TestImages.txt").write_text("pantry/int1.jpg\n")  # no such class folder: nothing to test on
    with pytest.raises(ValueError, match="none of the images"):
        loaders.indoor67(root)


# ---- COCO 2014 --------------------------------------------------------------------------------------------------


@pytest.fixture
def coco(tmp_path):
    """train2014/, val2014/ and annotations/captions_*2014.json in COCO's JSON layout; val2014 holds a corrupt
    file and its JSON one image that is not there."""
    layout = {
        "train2014": {9: ["A man rides a horse. ", "a person on a horse"], 25: ["two dogs"], 30: ["a red bus"]},
        "val2014": {42: ["a plate of food"], 73: ["a cat on a sofa", "a sleeping cat"], 74: ["nothing"], 80: ["x"]},
    }
    for year, captions in layout.items():
        pictures = [{"id": i, "file_name": f"COCO_{year}_{i:012d}.jpg", "height": 8, "width": 8} for i in captions]
        for picture in pictures:
            if picture["id"] == 74:
                (tmp_path / year / picture["file_name"]).write_bytes(b"not a jpeg at all")
            elif picture["id"] != 80:
                jpeg(tmp_path / year / picture["file_name"])
        # COCO's annotations are not grouped by image: interleave them; each image keeps its captions' order
        pairs = [(i, cs[k]) for k in range(2) for i, cs in captions.items() if k < len(cs)]
        notes = [{"id": 1000 + n, "image_id": i, "caption": c} for n, (i, c) in enumerate(pairs)]
        data = {"info": {}, "licenses": [], "images": pictures, "annotations": notes}
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{year}.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_keeps_the_official_splits_with_their_captions(coco):
    loaded = loaders.load("coco", str(coco))
    ds = loaded.dataset
    assert set(ds) == {"train", "test"}
    for split in ds.values():
        assert split.column_names == ["image", "captions"]
        assert split.features["captions"] == datasets.List(datasets.Value("string"))
    assert ds["train"]["captions"] == [["A man rides a horse.", "a person on a horse"], ["two dogs"], ["a red bus"]]
    # val2014 is the test split; image 80 has no file: left out and said so; image 74 is corrupt: kept as it is
    assert ds["test"]["captions"] == [["a plate of food"], ["a cat on a sofa", "a sleeping cat"], ["nothing"]]
    assert any("left out 1 images" in note for note in loaded.notes)
    test_cells = cells(ds["test"])
    assert test_cells[2] == {"bytes": b"not a jpeg at all", "path": None}
    with pytest.raises(images.ImageError):
        images.decode(test_cells[2])  # the pipeline's own decoder: an error row there, not a crash here
    assert images.decode(test_cells[0]).shape == (8, 8, 3)
    assert stored(ds["train"])[0] == (coco / "train2014" / "COCO_train2014_000000000009.jpg").read_bytes()


def test_coco_missing_annotation_file_and_folder(coco):
    (coco / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("captions_val2014.json")):
        loaders.coco(coco)
    (coco / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(ValueError, match="not a COCO captions file"):
        loaders.coco(coco)
    (coco / "annotations" / "captions_val2014.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        loaders.coco(coco)
    for file in (coco / "val2014").iterdir():
        file.unlink()
    (coco / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []})
    )
    with pytest.raises(ValueError, match="none of the 1 images"):
        loaders.coco(coco)


# ---- VISPR ------------------------------------------------------------------------------------------------------


@pytest.fixture
def vispr(tmp_path):
    """images/<fold>/<id>.jpg and annotations/<fold>/<id>.json ({id, image_path, labels}), as VISPR ships them;
    one annotation's image_path leads out of the folder (to a real file), one image is missing."""
    root = tmp_path / "vispr"
    labels = {
        "train2017": {"2017_10001": ["a0_safe"], "2017_10002": ["a17_color", "a1_age_approx", "a4_gender"]},
        "val2017": {"2017_20001": ["a9_face_complete"]},
        "test2017": {"2017_30001": ["a0_safe"], "2017_30002": ["a102_vehicle_ownership"], "2017_30003": ["a0_safe"]},
    }
    outside = jpeg(tmp_path / "outside.jpg")
    for fold, annotated in labels.items():
        for image_id, attributes in annotated.items():
            image_path = f"images/{fold}/{image_id}.jpg"
            if image_id == "2017_30002":
                image_path = "../outside.jpg"  # refused: the image is looked for in images/<fold>/ instead
            if image_id != "2017_30003":
                jpeg(root / "images" / fold / f"{image_id}.jpg")
            anno = {"id": image_id, "image_path": image_path, "labels": attributes}
            (root / "annotations" / fold).mkdir(parents=True, exist_ok=True)
            (root / "annotations" / fold / f"{image_id}.json").write_text(json.dumps(anno))
    return root, outside


def test_vispr_reads_each_fold_with_its_attribute_lists(vispr):
    root, outside = vispr
    loaded = loaders.load("vispr", str(root))
    ds = loaded.dataset
    assert set(ds) == {"train", "validation", "test"}
    for split in ds.values():
        assert split.column_names == ["image", "labels"]
        assert split.features["labels"] == datasets.List(datasets.Value("string"))
    assert ds["train"]["labels"] == [["a0_safe"], ["a17_color", "a1_age_approx", "a4_gender"]]
    assert ds["validation"]["labels"] == [["a9_face_complete"]]
    assert ds["test"]["labels"] == [["a0_safe"], ["a102_vehicle_ownership"]]  # 2017_30003 has no image
    assert any("left out 1 annotated images" in note for note in loaded.notes)
    assert stored(ds["test"])[1] == (root / "images" / "test2017" / "2017_30002.jpg").read_bytes()
    assert outside not in stored(ds["test"])


def test_vispr_missing_folds_and_bad_annotations(vispr, tmp_path):
    root, _ = vispr
    for file in (root / "annotations" / "val2017").iterdir():
        file.unlink()
    loaded = loaders.vispr(root)
    assert set(loaded.dataset) == {"train", "test"}
    assert any("no validation split" in note for note in loaded.notes)
    (root / "annotations" / "train2017" / "2017_10001.json").write_text(json.dumps({"id": "2017_10001"}))
    with pytest.raises(ValueError, match=re.escape('2017_10001.json: no "labels"')):
        loaders.vispr(root)
    with pytest.raises(FileNotFoundError, match="annotations"):
        loaders.vispr(tmp_path / "empty")
    (tmp_path / "empty" / "annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="no annotated images"):
        loaders.vispr(tmp_path / "empty")


# ---- Hub copies and the dispatcher ------------------------------------------------------------------------------


def test_a_hub_copy_is_cast_to_the_same_columns(monkeypatch, tmp_path):
    """A Hub id goes to datasets.load_dataset (faked here: no Hub); its columns are renamed and its path-only
    image cells (an imagefolder repo) get their bytes; Caltech101 is split the paper's way from all its rows."""
    paths = [tmp_path / f"{i}.jpg" for i in range(12)]
    data = [jpeg(path) for path in paths]
    copy = datasets.Dataset.from_dict(
        {"img": [str(p) for p in paths], "cls": [i % 3 for i in range(12)], "note": ["x"] * 12},
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "cls": datasets.ClassLabel(names=["c", "a", "b"]),
                "note": datasets.Value("string"),
            }
        ),
    )
    asked = []
    monkeypatch.setattr(
        datasets, "load_dataset", lambda hub_id: asked.append(hub_id) or datasets.DatasetDict({"train": copy})
    )
    loaded = loaders.load("caltech101", "someone/caltech-101")
    assert asked == ["someone/caltech-101"]
    assert loaded.notes[0] == "from the Hub copy someone/caltech-101"
    ds = loaded.dataset
    assert (len(ds["train"]), len(ds["test"])) == (8, 3)  # 12 rows: 2000 and 980 scaled by 12/2980
    for split in ds.values():
        assert split.column_names == ["image", "label"]
        assert isinstance(split.features["image"], datasets.Image)
        assert set(split["label"]) == {0, 1, 2}
        assert all(cell == {"bytes": cell["bytes"], "path": None} and cell["bytes"] in data for cell in cells(split))
    loaders.load("caltech101")  # no data: the table's Hub id
    assert asked[-1] == loaders.HUB_IDS["caltech101"]


def test_a_hub_copy_of_coco_gets_a_captions_list(tmp_path):
    copy = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4))], "caption": ["one caption"], "url": ["http://x"]},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string"), "url": datasets.Value("string")}
        ),
    )
    ds = loaders.conform("coco", datasets.DatasetDict({"validation": copy})).dataset
    assert ds["validation"].column_names == ["image", "captions"]
    assert ds["validation"]["captions"] == [["one caption"]]
    with pytest.raises(ValueError, match="no column named labels or attributes"):
        loaders.conform("vispr", datasets.DatasetDict({"test": copy}))


def test_load_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        loaders.load("imagenet", str(tmp_path))
    with pytest.raises(ValueError, match="no Hub copy of indoor67"):
        loaders.load("indoor67")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        loaders.load("coco", str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        loaders.load("coco", str(tmp_path / "file.txt"))


def test_cli_writes_a_new_folder_and_never_overwrites(coco, tmp_path, capsys):
    out = tmp_path / "out"
    loaders.main(["--dataset", "coco", "--data", str(coco), "--out", str(out)])
    assert "wrote 3 train / 3 test rows" in capsys.readouterr().out
    saved = datasets.load_from_disk(str(out))
    assert saved["test"]["captions"][1] == ["a cat on a sofa", "a sleeping cat"]
    with pytest.raises(SystemExit, match="not overwriting"):
        loaders.main(["--dataset", "coco", "--data", str(coco), "--out", str(out)])
    with pytest.raises(SystemExit, match=re.escape("captions_train2014.json is missing")):
        loaders.main(["--dataset", "coco", "--data", str(tmp_path / "out" / "train"), "--out", str(tmp_path / "o2")])
