"""Peak memory of `images.decode` per file kind, as bytes per pixel and as a ratio to an 8-bit RGB JPEG of the same
size decoded in the same run (the memory guard's budget is about what that baseline needs at `max_pixels`).

Each decode runs in a fresh fork of one child process and reports its own ru_maxrss growth (Linux).

    python benchmarks/decode_memory.py [--megapixels 9]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import os, resource, sys
from u2s_hf import images
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    pid = os.fork()
    if pid == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        images.decode(data, max_pixels=10**10)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def files(folder: Path, width: int, height: int) -> dict[str, Path]:
    """One file per kind, all of the same size, with photo-like noise (so no format compresses it away)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    grey16 = Image.fromarray((rng.integers(0, 65536, (height, width))).astype(np.uint16))
    kinds = {
        "8-bit RGB JPEG (baseline)": (rgb, "JPEG", {"quality": 90}),
        "progressive RGB JPEG": (rgb, "JPEG", {"quality": 90, "progressive": True}),
        "CMYK JPEG": (rgb.convert("CMYK"), "JPEG", {"quality": 90}),
        "16-bit grey PNG": (grey16, "PNG", {"compress_level": 1}),
        "RGBA PNG": (rgb.convert("RGBA"), "PNG", {"compress_level": 1}),
        "float TIFF": (rgb.convert("F"), "TIFF", {}),
        "WebP": (rgb, "WEBP", {"quality": 90}),
    }
    paths = {}
    for i, (name, (image, fmt, options)) in enumerate(kinds.items()):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        paths[name] = folder / f"{i}.{fmt.lower()}"
        paths[name].write_bytes(buffer.getvalue())
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=9.0)
    args = parser.parse_args()
    width = height = int((args.megapixels * 1e6) ** 0.5)
    with tempfile.TemporaryDirectory() as folder:
        paths = files(Path(folder), width, height)
        done = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths.values())], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    peaks = dict(zip(paths, map(int, done.stdout.split()), strict=True))
    baseline = peaks["8-bit RGB JPEG (baseline)"]
    print(f"images.decode peak memory, {width}x{height} ({width * height / 1e6:.1f} Mpx), one fork per decode")
    for name, peak in peaks.items():
        print(f"  {name:28s} {peak / (width * height):5.1f} bytes/pixel  {peak / baseline:5.2f}x baseline")


if __name__ == "__main__":
    main()
