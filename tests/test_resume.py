"""`u2s anonymize` in shards: killed with `kill -9` at any point and rerun with the same arguments, it redoes at most
the shard that was being worked on, and writes the same release, row for row and byte for byte, as a run that was
never interrupted. It never writes beside the source, and never reuses rows of other settings or other sources."""

import json
import os
import re
import signal
import subprocess
import sys

import datasets
import pytest

from u2s_hf import cli

from hub_server import HubServer
from processes import REPO, u2s, wait_for

SHARD = 3
PHOTOS = ("astronaut", "coffee", "grace_hopper", "chelsea", "name_card", "camera", "page")
FACES_ONLY = ("--set", "text=false")  # the shards, not the detectors, are what is tested: keep each run short


@pytest.fixture(scope="module")
def src(tmp_path_factory, photos):
    """An image folder of 11 photos: 4 shards of 3 rows (the last one short)."""
    folder = tmp_path_factory.mktemp("resume") / "photos"
    folder.mkdir()
    for i in range(11):
        photos[PHOTOS[i % len(PHOTOS)]].save(folder / f"{i:03d}.jpg")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    assert cli.main(["anonymize", str(src), "--out", str(out), "--shard-size", str(SHARD), *FACES_ONLY]) == 0
    return out


def rows(release) -> list[dict]:
    """Every row of the release as stored: statuses, reasons, and the image bytes."""
    split = datasets.load_from_disk(str(release))["train"].cast_column("safe_image", datasets.Image(decode=False))
    return list(split)


def shard_folders(out, pattern):
    return list(out.parent.glob(f".{out.name}.u2s-shards/*/train/{pattern}"))


def done(out, k: int) -> bool:
    """Whether shard k of the run into `out` is complete (its folder has no .tmp or .work suffix)."""
    return any("." not in folder.name for folder in shard_folders(out, f"{k:06d}-*"))


def killed_then_rerun(src, out, tmp_path, when) -> str:
    """Run into `out`, `kill -9` it once `when()` holds, rerun it with the same arguments: the rerun's output."""
    args = ("anonymize", src, "--out", out, "--shard-size", SHARD, *FACES_ONLY)
    log = tmp_path / "first.log"
    process = u2s(*args, log=log)
    try:
        assert wait_for(lambda: when() or process.poll() is not None, 300)
        assert process.poll() is None, f"finished before the kill point: {log.read_text()}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()
    log = tmp_path / "rerun.log"
    assert u2s(*args, log=log).wait(300) == 0, log.read_text()
    return log.read_text()


def kept(log: str) -> int:
    found = re.search(r"(\d+) of (\d+) shards kept from an earlier run, (\d+) worked on", log)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize(
    "point, least_kept",
    [
        ("after the first shard", 1),
        ("in the middle of the third shard", 2),
        ("after the last shard, while the release is put together", 4),
    ],
)
def test_a_killed_run_resumes_and_writes_what_an_uninterrupted_run_writes(
    src, uninterrupted, tmp_path, point, least_kept
):
    out = tmp_path / "out"
    when = {
        "after the first shard": lambda: done(out, 0),
        "in the middle of the third shard": lambda: bool(shard_folders(out, "000002-*.work/source.arrow")),
        "after the last shard, while the release is put together": lambda: any(
            (folder / "train").is_dir() for folder in tmp_path.glob(".out.tmp-*")
        ),
    }[point]
    log = killed_then_rerun(src, out, tmp_path, when)
    assert kept(log) >= least_kept, log  # at most the shard that was being worked on is done again
    assert rows(out) == rows(uninterrupted)
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == json.loads((uninterrupted / "report.json").read_text())["counts"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # the work folder is gone


def test_a_rerun_with_other_settings_reuses_nothing(src, uninterrupted, tmp_path):
    out = tmp_path / "out"
    blurred = u2s(
        "anonymize",
        src,
        "--out",
        out,
        "--shard-size",
        SHARD,
        *FACES_ONLY,
        "--set",
        "method=blur",
        log=tmp_path / "blurred.log",
    )
    assert wait_for(lambda: done(out, 1) or blurred.poll() is not None, 300)
    os.kill(blurred.pid, signal.SIGKILL)
    blurred.wait(30)
    log = tmp_path / "pixelated.log"
    assert u2s("anonymize", src, "--out", out, "--shard-size", SHARD, *FACES_ONLY, log=log).wait(300) == 0
    assert kept(log.read_text()) == 0
    assert rows(out) == rows(uninterrupted)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # the blurred shards are gone


def test_a_source_folder_is_never_written_into(photos, tmp_path):
    saved = tmp_path / "saved"
    ds = datasets.Dataset.from_dict(
        {"image": [photos["astronaut"], photos["coffee"]]}, features=datasets.Features({"image": datasets.Image()})
    )
    ds.save_to_disk(str(saved))
    before = {p.name: p.stat().st_mtime_ns for p in saved.iterdir()}
    assert cli.main(["anonymize", str(saved), "--out", str(tmp_path / "out"), *FACES_ONLY]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in saved.iterdir()} == before  # no cache files beside the source


def test_a_work_folder_that_u2s_did_not_make_is_left_alone(src, tmp_path, capsys):
    theirs = tmp_path / ".out.u2s-shards"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert cli.main(["anonymize", str(src), "--out", str(tmp_path / "out"), "--limit", "1"]) == 2
    assert "was not made by u2s" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "mine" and not (tmp_path / "out").exists()


def test_a_parquet_source_streams_into_the_same_release(src, uninterrupted, tmp_path, capsys):
    parquet = tmp_path / "photos.parquet"
    cells = [{"bytes": path.read_bytes(), "path": None} for path in sorted(src.iterdir())]
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": cells}, features=features).to_parquet(str(parquet))
    cache = tmp_path / "cache"
    os.environ["HF_DATASETS_CACHE"], old = str(cache), os.environ.get("HF_DATASETS_CACHE")
    try:
        out = tmp_path / "streamed"
        args = ["anonymize", str(parquet), "--out", str(out), "--shard-size", str(SHARD), *FACES_ONLY]
        assert cli.main([*args, "--streaming"]) == 0
    finally:
        if old is None:
            del os.environ["HF_DATASETS_CACHE"]
        else:
            os.environ["HF_DATASETS_CACHE"] = old
    assert not list(cache.rglob("*.arrow"))  # the source was never converted or loaded whole
    assert rows(out) == rows(uninterrupted)
    assert cli.main(["anonymize", str(src), "--out", str(tmp_path / "x"), "--streaming"]) == 2
    assert "--streaming reads a .parquet file or a Hub dataset id" in capsys.readouterr().err


PUSH = """
import sys
from datasets import Dataset, Image
cells = [{"bytes": open(path, "rb").read(), "path": None} for path in sys.argv[2:]]
Dataset.from_dict({"image": cells}).cast_column("image", Image()).push_to_hub(sys.argv[1], private=True)
"""


def test_a_hub_dataset_streams_into_the_same_release(src, uninterrupted, tmp_path):
    photos = sorted(src.iterdir())
    with HubServer() as hub:
        env = {**hub.client_env(tmp_path / "hf-home"), "PYTHONPATH": str(REPO)}
        pushed = subprocess.run([sys.executable, "-c", PUSH, "tester/photos", *photos], env=env, capture_output=True)
        assert pushed.returncode == 0, pushed.stderr.decode()[-3000:]
        out = tmp_path / "out"
        args = ["anonymize", "tester/photos", "--out", out, "--streaming", "--shard-size", SHARD, *FACES_ONLY]
        done = subprocess.run([sys.executable, "-m", "u2s_hf.cli", *map(str, args)], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert any(path.endswith(".parquet") for _, path in hub.requests)  # the rows came from the Hub
    assert hub.errors == []
    assert rows(out) == rows(uninterrupted)
    assert not list((tmp_path / "hf-home").rglob("*.arrow"))  # nothing was downloaded and converted first
