import json

import datasets
import numpy as np
import pytest
from PIL import Image

from u2s_hf import cli

import corpus


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_anonymize_a_folder_into_a_release(sample_dir, bad_dir, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for folder in (sample_dir, bad_dir):
        for f in folder.iterdir():
            (src / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code, stdout, _ = run(["anonymize", src, "--out", out, "--batch-size", "4"], capsys)
    assert code == 0 and stdout.startswith("u2s: ")
    assert {p.name for p in out.iterdir()} >= {"report.json", "contact_sheet.png", "README.md", "dataset_dict.json"}
    release = datasets.load_from_disk(str(out))["train"]
    assert "image" not in release.column_names and len(release) == 7 + len(corpus.BAD_INPUTS)
    report = json.loads((out / "report.json").read_text())
    status = report["counts"]["train"]["status"]
    assert status["error"] == sum(kind == "error" for kind in corpus.BAD_INPUTS.values())
    assert sum(status.values()) == len(release) and status["kept_safe"] == 3  # coffee, chelsea, one pixel
    assert report["models"]["faces"]["model"] == "CenterFace" and report["versions"]["u2s_hf"]
    card = (out / "README.md").read_text()
    assert "faces and readable text only" in card and "u2s_hf" in card
    for row in release:
        if row["safe_image"] is not None:  # nothing written carries metadata
            assert not row["safe_image"].getexif() and not row["safe_image"].info
    for path in out.rglob("*"):
        assert b"SERIAL-123456" not in path.read_bytes() if path.is_file() else True


def test_contact_sheet_shows_no_original_pixels(sample_dir, tmp_path, capsys, photos):
    out = tmp_path / "out"
    assert run(["anonymize", sample_dir, "--out", out], capsys)[0] == 0
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[0] > 100 and sheet.std() > 10


def test_limit_split_and_settings(sample_dir, tmp_path, capsys):
    saved = tmp_path / "saved"
    datasets.load_dataset("imagefolder", data_dir=str(sample_dir)).save_to_disk(str(saved))
    out = tmp_path / "out"
    code, _stdout, _ = run(
        [
            "anonymize",
            saved,
            "--out",
            out,
            "--split",
            "train",
            "--limit",
            "2",
            "--set",
            "method=fill",
            "--set",
            "face_threshold=0.4",
        ],
        capsys,
    )
    assert code == 0
    release = datasets.load_from_disk(str(out))
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert len(release) == 2 and stages["edit"]["method"] == "fill" and stages["inspect"]["face_threshold"] == 0.4


def test_parquet_source(photos, tmp_path, capsys):
    parquet = tmp_path / "photos.parquet"
    corpus.image_dataset({"astronaut": photos["astronaut"]}).to_parquet(str(parquet))
    out = tmp_path / "out"
    assert run(["anonymize", parquet, "--out", out], capsys)[0] == 0
    assert datasets.load_from_disk(str(out))["train"][0]["u2s_status"] == "redacted"


@pytest.mark.parametrize(
    "args, message",
    [
        (["anonymize", "/no/such/folder", "--out", "OUT"], "does not exist"),
        (["anonymize", "someone/no-such-dataset", "--out", "OUT"], "cannot open someone/no-such-dataset"),
        (["anonymize", "SRC", "--out", "OUT", "--image-column", "pixels"], "no column 'pixels'"),
        (["anonymize", "SRC", "--out", "OUT", "--split", "validation"], "no split 'validation'"),
        (["anonymize", "SRC", "--out", "OUT", "--set", "colour=red"], "no setting colour"),
        (["anonymize", "SRC", "--out", "OUT", "--set", "method=smudge"], "unknown redaction method"),
    ],
)
def test_user_errors_are_clear(sample_dir, tmp_path, capsys, args, message):
    args = [str(sample_dir) if a == "SRC" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    code, _, err = run(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err
