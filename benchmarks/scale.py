"""Load: the `u2s anonymize` command line over a small and a large folder of photos (200 and 2,000 by default), in
the same run: peak memory (the process's ru_maxrss, as `wait4` reports it) and images/s, each as a ratio of the
large run to the small one; then how much work a rerun redoes after a `kill -9` halfway through a run.

Goals (issue #14): peak RSS of the large run at most 1.2x that of the small one, and images/s not lower.

    python benchmarks/scale.py [--images 200,2000] [--set text=false] [--shard-size 500]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dataset_scripts"))
import make_sample

U2S = Path(sys.executable).parent / "u2s"


def photo_folder(root: Path, n: int) -> Path:
    """`n` JPEG files made from the package photos (7 distinct, about 512 px)."""
    photos = list(make_sample.sample_photos().items())
    folder = root / f"photos-{n}"
    folder.mkdir()
    for i in range(n):
        name, photo = photos[i % len(photos)]
        photo.save(folder / f"{i:05d}_{name}.jpg", quality=92)
    return folder


def start(src: Path, out: Path, extra: list[str], cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as output:
        return subprocess.Popen(
            [str(U2S), "anonymize", str(src), "--out", str(out), *extra], env=env, stdout=output, stderr=output
        )


def finish(process: subprocess.Popen) -> tuple[int, int]:
    """(exit status, peak RSS in bytes) of the process, from wait4 (Linux reports ru_maxrss in KiB)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024


def measured(src: Path, n: int, extra: list[str], work: Path) -> tuple[float, int]:
    """(images/s, peak RSS) of one run with an empty datasets cache."""
    cache = work / f"cache-{n}"
    log = work / f"run-{n}.log"
    began = time.perf_counter()
    code, peak = finish(start(src, work / f"out-{n}", extra, cache, log))
    wall = time.perf_counter() - began
    if code != 0:
        sys.exit(f"u2s failed on {n} photos:\n{log.read_text()[-3000:]}")
    shutil.rmtree(cache)
    return n / wall, peak


def redone_after_kill(src: Path, n: int, extra: list[str], shard_size: int, work: Path) -> str:
    """Kill a run (`kill -9`) in the middle of the shard after half of them are done, rerun it with the same
    arguments: how much of the work the rerun did again, and its time against an uninterrupted run's."""
    out, cache, log = work / "out-killed", work / "cache-killed", work / "killed.log"
    args = [*extra, "--shard-size", str(shard_size)]
    total = -(-n // shard_size)
    began = time.perf_counter()
    code, _ = finish(start(src, work / "out-whole", args, cache, log))
    whole = time.perf_counter() - began
    process = start(src, out, args, cache, log)
    shards = work / f".{out.name}.u2s-shards"
    while process.poll() is None and len([p for p in shards.glob("*/*/*") if "." not in p.name]) < total // 2:
        time.sleep(0.05)
    time.sleep(whole / total / 2)  # halfway into the next shard
    process.send_signal(signal.SIGKILL)
    finish(process)
    began = time.perf_counter()
    code, _ = finish(start(src, out, args, cache, log))
    rerun = time.perf_counter() - began
    if code != 0:
        sys.exit(f"the rerun failed:\n{log.read_text()[-3000:]}")
    said = re.search(r"(\d+) of (\d+) shards kept from an earlier run, (\d+) worked on", log.read_text())
    kept, worked = (int(said.group(1)), int(said.group(3))) if said else (0, total)
    return (
        f"killed in the middle of a run over {n} photos in {total} shards of {shard_size}: the rerun kept {kept} "
        f"shards and worked on {worked} ({min(worked * shard_size, n) / n:.0%} of the rows) in {rerun:.0f} s, "
        f"{rerun / whole:.2f}x an uninterrupted run ({whole:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="200,2000", help="the small and the large number of photos")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to u2s anonymize")
    parser.add_argument("--shard-size", type=int, help="passed to u2s anonymize (default: its own)")
    args = parser.parse_args()
    small, large = (int(v) for v in args.images.split(","))
    extra = [option for setting in args.set for option in ("--set", setting)]
    if args.shard_size:
        extra += ["--shard-size", str(args.shard_size)]
    work = Path(tempfile.mkdtemp(prefix="u2s-scale-"))
    try:
        small_src = photo_folder(work, small)
        rate_small, peak_small = measured(small_src, small, extra, work)
        rate_large, peak_large = measured(photo_folder(work, large), large, extra, work)
        print(f"u2s anonymize {' '.join(extra) or '(lite defaults)'}, {os.cpu_count()} cores")
        for n, rate, peak in ((small, rate_small, peak_small), (large, rate_large, peak_large)):
            print(f"  {n:6d} photos: {rate:6.2f} images/s, peak RSS {peak / 2**20:7.0f} MiB")
        print(
            f"  {large} vs {small}: peak RSS {peak_large / peak_small:.2f}x (goal <= 1.2x), "
            f"images/s {rate_large / rate_small:.2f}x (goal >= 1.0x)"
        )
        print("  " + redone_after_kill(small_src, small, extra, max(1, small // 10), work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
