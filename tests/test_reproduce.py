"""dataset_scripts/reproduce.py end to end on archives laid out like the real ones (made here from package photos):
load, anonymise with the lite chain, evaluate, and `tables.md` with the paper's numbers beside ours."""

import json
import re
import sys
from pathlib import Path

import pytest

import tiny_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dataset_scripts"))
import reproduce


def crops(photo, n: int, size: int = 96):
    """n different crops of a photo (a class's images)."""
    width, height = photo.size
    step = max(1, (min(width, height) - size) // n)
    return [photo.crop((i * step, i * step, i * step + size, i * step + size)) for i in range(n)]


@pytest.fixture(scope="module")
def caltech(tmp_path_factory, photos, class_photos):
    """101_ObjectCategories/<class>/image_NNNN.jpg: three classes of crops, and a class of whole faces."""
    root = tmp_path_factory.mktemp("caltech")
    classes = {name: crops(photo, 8) for name, photo in class_photos.items()}
    faces = [photos["astronaut"].resize((side, side)) for side in (176, 192)]
    classes["Faces"] = faces + [photos["grace_hopper"].resize((side, side * 5 // 4)) for side in (160, 176)]
    for name, images in classes.items():
        folder = root / "101_ObjectCategories" / name
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(folder / f"image_{i + 1:04d}.jpg", quality=95)
    return root


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| run"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_caltech101_from_archive_to_tables(caltech, tmp_path, tmp_path_factory):
    backbone = str(tiny_models.vit_mae(tmp_path_factory.mktemp("vit-mae")))
    out = tmp_path / "run"
    args = ["--dataset", "caltech101", "--data", str(caltech), "--preset", "lite", "--out", str(out)]
    options = ["--metrics", "cheating,utility", "--epochs", "2", "--backbone", backbone, "--mode", "linear"]
    assert reproduce.main([*args, *options, "--no-lpips"]) == 0
    text = (out / "tables.md").read_text()
    rows = table_rows(text)
    head = next(line for line in text.splitlines() if line.startswith("| run"))
    titles = [cell.strip() for cell in head.strip("|").split("|")][1:]
    paper, ours, difference = rows["paper: U2S FE LLM"], rows["ours: anonymized"], rows["ours − paper U2S FE LLM"]
    ssim = titles.index("SSIM ↓")
    assert paper[ssim] == "0.8551"  # the paper's numbers, whatever the preset
    report = json.loads((out / "evaluation" / "report.json").read_text())["anonymized"]
    assert float(ours[ssim]) == pytest.approx(report["ssim"], abs=1e-4)
    assert float(difference[ssim]) == pytest.approx(report["ssim"] - 0.8551, abs=1e-4)
    accuracy = titles.index("Acc (%)")
    assert float(ours[accuracy]) == pytest.approx(report["accuracy"] * 100, abs=1e-4)  # the paper's unit
    assert rows["paper: raw"][accuracy] == "94.2770"
    assert re.search(r"- lpips: switched off", text)  # what was not measured, with the reason
    assert (out / "anonymized" / ".u2s-release").is_file() and (out / "original" / "dataset_dict.json").is_file()
    # a rerun reuses the loaded data and the release, and writes the same tables
    assert reproduce.main([*args, *options, "--no-lpips"]) == 0
    assert table_rows((out / "tables.md").read_text()).keys() == rows.keys()


def test_vispr_stage1_check_against_its_labels(tmp_path, photos):
    """Flags from the real detectors (test_pipeline: astronaut, grace_hopper and name_card are flagged, coffee and
    chelsea are not) against labels that call grace_hopper safe, as an annotator might."""
    root = tmp_path / "vispr"
    labels = {
        "train2017": {"1": ("astronaut", ["a9_face_complete", "a4_gender"]), "2": ("coffee", ["a0_safe"])},
        "val2017": {"3": ("chelsea", ["a0_safe"]), "4": ("name_card", ["a70_education_history"])},
        "test2017": {"5": ("grace_hopper", ["a0_safe"])},
    }
    for fold, annotated in labels.items():
        for image_id, (name, attributes) in annotated.items():
            (root / "images" / fold).mkdir(parents=True, exist_ok=True)
            (root / "annotations" / fold).mkdir(parents=True, exist_ok=True)
            photos[name].convert("RGB").save(root / "images" / fold / f"{image_id}.jpg", quality=95)
            anno = {"id": image_id, "image_path": f"images/{fold}/{image_id}.jpg", "labels": attributes}
            (root / "annotations" / fold / f"{image_id}.json").write_text(json.dumps(anno))
    out = tmp_path / "run"
    assert reproduce.main(["--dataset", "vispr", "--data", str(root), "--preset", "lite", "--out", str(out)]) == 0
    ours = table_rows((out / "tables.md").read_text())["ours: anonymized"]
    # private: astronaut, name_card; flagged: those and grace_hopper -> recall 1, precision 2/3, F1 0.8
    # Face group (faces against safe images): astronaut against coffee, chelsea, grace_hopper -> 1, 1/2, 2/3
    assert ours == ["1.0000", "0.6667", "0.8000", "1.0000", "0.5000", "0.6667"]
    paper = table_rows((out / "tables.md").read_text())["paper: U2S FE LLM"]
    assert paper == ["0.9750", "0.7930", "0.8740", "0.8500", "0.9270", "0.8870"]


def test_coco_is_measured_by_captioning(tmp_path, photos, tmp_path_factory):
    """COCO's utility is the captioning task (Table 4): a tiny BLIP-2 fine-tuned on the anonymised train2014 and
    scored against the original val2014 captions, beside the paper's BLEU-4 and CIDEr."""
    root = tmp_path / "coco"
    layout = {"train2014": ("astronaut", "coffee", "chelsea"), "val2014": ("grace_hopper", "camera")}
    for year, names in layout.items():
        (root / year).mkdir(parents=True)
        pictures, notes = [], []
        for i, name in enumerate(names):
            pictures.append({"id": i, "file_name": f"COCO_{year}_{i:012d}.jpg"})
            photos[name].convert("RGB").save(root / year / pictures[-1]["file_name"], quality=95)
            notes.append({"id": 100 + i, "image_id": i, "caption": f"a photo of {name.replace('_', ' ')}"})
        (root / "annotations").mkdir(exist_ok=True)
        annotations = {"images": pictures, "annotations": notes}
        (root / "annotations" / f"captions_{year}.json").write_text(json.dumps(annotations))
    captioner = str(tiny_models.blip2(tmp_path_factory.mktemp("blip2")))
    out = tmp_path / "run"
    args = ["--dataset", "coco", "--data", str(root), "--preset", "lite", "--out", str(out), "--metrics", "utility"]
    options = ["--captioner", captioner, "--caption-epochs", "1", "--caption-tokenizer", "python"]
    assert reproduce.main([*args, *options]) == 0
    text = (out / "tables.md").read_text()
    rows = table_rows(text)
    titles = [
        cell.strip() for cell in next(x for x in text.splitlines() if x.startswith("| run")).strip("|").split("|")
    ]
    bleu, cider = titles.index("BLEU-4 ↑") - 1, titles.index("CIDEr ↑") - 1
    assert rows["paper: raw"][bleu] == "0.4360" and rows["paper: raw"][cider] == "1.4130"
    report = json.loads((out / "evaluation" / "report.json").read_text())["anonymized"]
    assert float(rows["ours: anonymized"][cider]) == pytest.approx(report["cider"], abs=1e-4)
