"""What a source may make u2s read, and what a release may carry: every image read once, path-only cells of
Parquet and save_to_disk sources never read, skipped files named, no paths, credentials or injected markup."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from markdown_it import MarkdownIt

import u2s_hf as u2s
from u2s_hf import cli, pipeline, release_card, report
from u2s_hf.stages.read import NOT_READ

import corpus
from chat_server import ChatServer

REPO = Path(__file__).resolve().parent.parent


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_file_replaced_under_the_same_name_and_time_is_read_anew(photos, tmp_path):
    """A cached flag must never be applied to other pixels: the landscape's 'not flagged' must not let the portrait
    that replaced it (same name, same mtime) out unredacted."""
    folder = tmp_path / "photos"
    folder.mkdir()
    target = folder / "x.jpg"
    photos["coffee"].save(target, quality=95)
    stamp = os.stat(target).st_mtime_ns
    first = u2s.anonymize(datasets.load_dataset("imagefolder", data_dir=str(folder), split="train"))
    assert first[0]["u2s_status"] == "kept_safe"
    photos["astronaut"].save(target, quality=95)
    os.utime(target, ns=(stamp, stamp))
    second = u2s.anonymize(datasets.load_dataset("imagefolder", data_dir=str(folder), split="train"))
    assert second[0]["privacy_flag"] and second[0]["u2s_status"] == "redacted"
    after = corpus.pixels(second[0]["safe_image"])
    assert after.shape == corpus.pixels(photos["astronaut"]).shape
    assert not np.array_equal(after, corpus.pixels(photos["astronaut"]))


def _path_only_parquet(tmp_path, paths) -> Path:
    struct = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
    table = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": str(p)} for p in paths]}, features=struct)
    table = table.cast(datasets.Features({"image": datasets.Image(decode=False)}))
    parquet = tmp_path / "crafted.parquet"
    table.to_parquet(str(parquet))
    return parquet


def _path_only_saved(tmp_path, paths) -> Path:
    """A save_to_disk folder whose Image cells hold only paths (save_to_disk itself embeds bytes: crafted)."""
    struct = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
    saved = tmp_path / "crafted"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": str(p)} for p in paths]}, features=struct
    ).save_to_disk(str(saved))
    info = json.loads((saved / "dataset_info.json").read_text())
    info["features"]["image"] = {"_type": "Image"}
    (saved / "dataset_info.json").write_text(json.dumps(info))
    return saved


@pytest.fixture
def local_files(tmp_path, photos):
    """A private photo elsewhere on the machine, a FIFO, and a device: what a crafted source may point at."""
    private = tmp_path / "elsewhere" / "private.jpg"
    private.parent.mkdir()
    photos["coffee"].save(private, quality=95)
    fifo = tmp_path / "elsewhere" / "pipe.jpg"
    os.mkfifo(fifo)
    return [private, fifo, Path("/dev/zero"), Path("/etc/hostname")]


@pytest.mark.parametrize("craft", [_path_only_parquet, _path_only_saved])
def test_path_only_cells_of_parquet_and_saved_sources_are_never_read(craft, local_files, tmp_path):
    src = craft(tmp_path, local_files)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A subprocess with a timeout: reading the FIFO would hang and /dev/zero would exhaust memory.
    done = subprocess.run(
        [sys.executable, "-m", "u2s_hf.cli", "anonymize", str(src), "--out", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    release = datasets.load_from_disk(str(out))
    release = release["train"] if isinstance(release, datasets.DatasetDict) else release
    assert release["u2s_status"] == ["error"] * len(local_files)
    assert release["safe_image"] == [None] * len(local_files)
    assert all(error == NOT_READ for error in release["u2s_error"])
    for path in out.rglob("*"):  # no path and no byte of the private photo in the release
        if path.is_file():
            data = path.read_bytes()
            assert str(tmp_path).encode() not in data and local_files[0].read_bytes()[:2000] not in data


def test_an_image_folder_reads_its_own_regular_files_only(tmp_path, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos["coffee"].save(folder / "coffee.jpg")
    outside = tmp_path / "outside.jpg"
    photos["astronaut"].save(outside)
    os.symlink(outside, folder / "linked.jpg")
    ds = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    names = [Path(cell["path"]).name for cell in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    for root in (None, str(folder)):  # the folder imagefolder read, or the same folder named
        safe = u2s.anonymize(ds, image_root=root)
        assert dict(zip(names, safe["u2s_status"], strict=True)) == {"coffee.jpg": "kept_safe", "linked.jpg": "error"}
        assert safe["u2s_error"][names.index("linked.jpg")] == NOT_READ
    assert u2s.anonymize(ds, image_root=False)["u2s_status"] == ["error", "error"]


def test_files_an_image_folder_skips_are_named(tmp_path, photos, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos["coffee"].save(folder / "coffee.jpg")
    (folder / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "portrait.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(64))
    photos["astronaut"].save(folder / "line\nbreak.jpg")
    out = tmp_path / "out"
    code, stdout, err = run(["anonymize", folder, "--out", out], capsys)
    assert code == 0
    for name in ("drawing.svg", "portrait.avif", "line\\nbreak.jpg"):
        assert f"skipped '{name}'" in err, err
    assert json.loads((out / "report.json").read_text())["skipped_files"] == 3
    assert "3 files of the source were skipped" in stdout


def test_path_columns_are_left_out_unless_kept(photos, tmp_path, capsys):
    ds = corpus.image_dataset({"astronaut": photos["astronaut"]})
    ds = ds.add_column("file_name", ["/home/ann/astronaut.jpg"]).add_column("image_path", ["/home/ann/a.jpg"])
    parquet = tmp_path / "photos.parquet"
    ds.to_parquet(str(parquet))
    assert run(["anonymize", parquet, "--out", tmp_path / "a"], capsys)[0] == 0
    columns = datasets.load_from_disk(str(tmp_path / "a"))["train"].column_names
    assert "file_name" not in columns and "image_path" not in columns and "name" in columns
    assert b"/home/ann" not in b"".join(p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert run(["anonymize", parquet, "--out", tmp_path / "b", "--keep-column", "file_name"], capsys)[0] == 0
    assert "file_name" in datasets.load_from_disk(str(tmp_path / "b"))["train"].column_names
    code, _, err = run(["anonymize", parquet, "--out", tmp_path / "c", "--keep-column", "nope"], capsys)
    assert code == 2 and "no column nope" in err
    assert "file_name" in u2s.anonymize(ds, keep_columns=["file_name"]).column_names


def _rendered_card(out: Path) -> str:
    return MarkdownIt("commonmark").render((out / "README.md").read_text().split("\n---\n", 1)[1])


def test_the_card_and_report_name_the_source_without_its_path_or_markup(tmp_path, photos, capsys):
    folder = tmp_path / "photos` <img src=x onerror=alert(1)> _x_"  # (datasets cannot load a folder named with [ ] *)
    folder.mkdir()
    photos["coffee"].save(folder / "coffee.jpg")
    out = tmp_path / "out"
    assert run(["anonymize", folder, "--out", out], capsys)[0] == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert str(tmp_path).encode() not in path.read_bytes(), path
    rendered = _rendered_card(out)
    assert "<img" not in rendered and "<a " not in rendered and "<em>" not in rendered
    assert "onerror" in rendered  # the name is shown, as text
    assert json.loads((out / "report.json").read_text())["source"] == folder.name
    # A user-given name with line breaks cannot start a heading or a block of HTML either.
    named = tmp_path / "named"
    name = "holiday\n# Owned\n<script>x</script> [click](javascript:alert(1)) *bold*"
    assert run(["anonymize", folder, "--out", named, "--name", name], capsys)[0] == 0
    rendered = _rendered_card(named)
    assert rendered.count("<h1>") == 1 and "Owned</h1>" not in rendered and "<script>" not in rendered
    assert "<a " not in rendered and "<em>" not in rendered
    assert json.loads((named / "report.json").read_text())["source"].startswith("holiday")


def test_credentials_in_a_server_url_are_never_written(photos, tmp_path, caplog):
    ds = corpus.image_dataset({"astronaut": photos["astronaut"], "coffee": photos["coffee"]})
    with ChatServer(lambda prompt, image: 500) as server:
        secret_url = server.base_url.replace("http://", "http://ann:tok-SECRET1@") + "?api_key=SECRET2"
        chosen = u2s.Preset(
            name="custom",
            inspect=u2s.Inspect(backend="server", model="org/vlm", base_url=secret_url, retries=0),
            edit=u2s.Edit(),
        )
        with caplog.at_level("INFO", logger="u2s_hf"):
            safe, timings = pipeline.run(ds, chosen)
        summary = report.build(safe, chosen, timings, source="custom")
    folder = tmp_path / "release"
    safe.save_to_disk(str(folder))
    release_card.write_beside(safe, folder, summary)
    written = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert b"SECRET" not in written and b"ann:" not in written and "SECRET" not in caplog.text
    assert summary["stages"]["inspect"]["base_url"] == server.base_url
    # Every request failed: the rows are redacted, and the summary says the model never answered.
    assert safe["u2s_status"] == ["redacted", "redacted"]
    assert summary["counts"]["all"]["model_failed"] == 2
    assert "a model request failed for 2 rows" in report.summary_line(summary, "out")
    assert "a model request failed" in release_card.dataset_card(summary)
