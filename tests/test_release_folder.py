"""`u2s anonymize --out`: never delete or corrupt what the user has; a killed run leaves nothing that looks done."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from u2s_hf import cli
from u2s_hf.release_folder import MARKER, ReleaseFolder

from processes import REPO, u2s, wait_for


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def src(tmp_path, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos["astronaut"].save(folder / "astronaut.jpg")
    photos["coffee"].save(folder / "coffee.jpg")
    return folder


def test_overwrite_replaces_only_an_earlier_release(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    code, _, err = run(["anonymize", src, "--out", out, "--overwrite"], capsys)
    assert code == 2 and "not a u2s release" in err and (out / "thesis.txt").read_text() == "mine"
    released = tmp_path / "released"
    assert run(["anonymize", src, "--out", released], capsys)[0] == 0
    assert (released / MARKER).is_file()
    code, _, err = run(["anonymize", src, "--out", released], capsys)
    assert code == 2 and "--overwrite" in err
    (released / "report.json").write_text("stale")
    assert run(["anonymize", src, "--out", released, "--overwrite", "--set", "method=fill"], capsys)[0] == 0
    assert json.loads((released / "report.json").read_text())["stages"]["edit"]["method"] == "fill"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("where", ["source", "parent", "inside"])
def test_the_source_is_never_the_target(src, capsys, where):
    out = {"source": src, "parent": src.parent, "inside": src / "safe"}[where]
    before = sorted(p.name for p in src.parent.rglob("*"))
    for extra in ([], ["--overwrite"]):
        code, _, err = run(["anonymize", src, "--out", out, *extra], capsys)
        assert code == 2 and "overlap the source" in err and "Traceback" not in err
    assert sorted(p.name for p in src.parent.rglob("*")) == before


def test_a_parquet_source_is_never_replaced(photos, tmp_path, capsys):
    import corpus

    parquet = tmp_path / "photos.parquet"
    corpus.image_dataset({"astronaut": photos["astronaut"]}).to_parquet(str(parquet))
    data = parquet.read_bytes()
    for out in (parquet, tmp_path):
        code, _, err = run(["anonymize", parquet, "--out", out, "--overwrite"], capsys)
        assert code == 2 and "Traceback" not in err
    assert parquet.read_bytes() == data


def test_out_problems_are_reported_before_any_work(src, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("y")
    for out, message in ((a_file, "not a folder"), (full, "not empty")):
        code, _, err = run(["anonymize", src, "--out", out], capsys)
        assert code == 2 and message in err
        assert "u2s inspect" not in err and "Generating" not in err  # nothing was loaded or run
    assert a_file.read_text() == "mine"


def test_a_second_run_into_the_same_out_is_refused_at_once(src, tmp_path, capsys):
    out = tmp_path / "out"
    with ReleaseFolder(out):  # a run in progress
        for extra in ([], ["--overwrite"]):
            code, _, err = run(["anonymize", src, "--out", out, *extra], capsys)
            assert code == 2 and "another u2s run" in err
    assert not out.exists()
    assert run(["anonymize", src, "--out", out], capsys)[0] == 0


@pytest.fixture
def many(tmp_path, photos):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        photos["grace_hopper"].save(folder / f"{i:03d}.jpg")
    return folder


def test_a_killed_run_leaves_no_release_and_a_plain_rerun_succeeds(many, tmp_path):
    out = tmp_path / "out"
    log = tmp_path.parent / f"{tmp_path.name}.log"
    process = u2s("anonymize", many, "--out", out, "--batch-size", "2", log=log)
    try:
        assert wait_for(lambda: any(tmp_path.glob(".out.tmp-*")) or process.poll() is not None)
        time.sleep(1.0)  # well into the run
        assert process.poll() is None, log.read_text()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()  # nothing that looks like a release
    rerun = u2s("anonymize", many, "--out", out, "--limit", "2", log=log)
    assert rerun.wait(300) == 0, log.read_text()
    assert (out / MARKER).is_file() and len(datasets.load_from_disk(str(out))["train"]) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the killed run's folder is gone


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_num_proc_workers_exit_when_the_parent_is_killed(many, tmp_path):
    process = u2s(
        "anonymize",
        many,
        "--out",
        tmp_path / "out",
        "--num-proc",
        "2",
        "--batch-size",
        "1",
        log=tmp_path.parent / f"{tmp_path.name}.log",
    )
    workers: set[int] = set()
    try:
        assert wait_for(lambda: len(_children(process.pid)) >= 2 or process.poll() is not None, 180)
        time.sleep(2.0)  # the workers are inside a stage by now
        workers = _children(process.pid)
        assert workers and process.poll() is None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        assert wait_for(lambda: not any(_alive(w) for w in workers), 30), "workers outlived their parent"
    finally:
        for pid in workers | {process.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_evaluate_never_replaces_files_it_did_not_write(src, tmp_path, capsys):
    release = tmp_path / "release"
    assert run(["anonymize", src, "--out", release], capsys)[0] == 0
    written = (release / "report.json").read_text()
    evaluate = ["evaluate", "--original", src, "--anonymized", release, "--metrics", "cheating", "--no-lpips", "--out"]
    code, _, err = run([*evaluate, release], capsys)
    assert code == 2 and "did not write" in err and "u2s evaluate:" not in err  # refused before any scoring
    assert (release / "report.json").read_text() == written
    for _ in range(2):  # its own earlier report may be replaced
        assert run([*evaluate, tmp_path / "report"], capsys)[0] == 0


def test_the_sample_maker_never_replaces_a_file_it_did_not_write(tmp_path):
    script = [sys.executable, str(REPO / "dataset_scripts" / "make_sample.py"), str(tmp_path)]
    assert subprocess.run(script, capture_output=True).returncode == 0
    assert subprocess.run(script, capture_output=True).returncode == 0  # its own photos: written again, same bytes
    (tmp_path / "coffee.jpg").write_bytes(b"my own coffee photo")
    done = subprocess.run(script, capture_output=True, text=True)
    assert done.returncode != 0 and "not overwriting" in done.stderr
    assert (tmp_path / "coffee.jpg").read_bytes() == b"my own coffee photo"
