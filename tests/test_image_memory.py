"""Peak memory of `images.decode`, measured as ru_maxrss growth in a forked child (Linux): 16-bit grey must decode
without full-size float64 copies, and the memory guard's model (`images._peak_bytes`) must not underestimate."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from u2s_hf import images

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB, and fork")

# Reads each file, then decodes it in a fresh fork: a fork's ru_maxrss starts at its current size, so each growth
# is that decode's own peak.
CHILD = """
import os, resource, sys
from u2s_hf import images
max_pixels = int(sys.argv[1])
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    pid = os.fork()
    if pid == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rgb = images.decode(data, max_pixels=max_pixels)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(rgb.shape[0], rgb.shape[1], (after - before) * 1024, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def peak_growth(paths, max_pixels: int) -> list[tuple[int, int, int]]:
    """(height, width, peak bytes) of decoding each file."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(max_pixels), *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [tuple(map(int, line.split())) for line in done.stdout.splitlines()]
    assert len(rows) == len(paths), done.stderr[-2000:]
    return rows


def test_sixteen_bit_grey_just_under_the_guard_decodes_in_bounded_memory(tmp_path, photos):
    # 20 Mpx of mostly flat 16-bit grey: a file of a few hundred KB. Decoding it once took ~28 bytes a pixel
    # (float64 copies of the whole image); Pillow's buffer (2), the RGB result (3) and chunks need about 6.
    size = (5000, 3999)
    grey = Image.new("I;16", size, 20000)
    grey.paste(Image.fromarray(np.asarray(photos["astronaut"].convert("L"), np.uint16) * 257), (100, 100))
    path = tmp_path / "grey16.png"
    grey.save(path, compress_level=1)
    assert path.stat().st_size < 2 << 20
    [(h, w, peak)] = peak_growth([path], max_pixels=20_000_000)
    assert (w, h) == size
    assert peak < 12 * w * h, f"{peak / (w * h):.1f} bytes a pixel"


def _flavours(photo):
    rotated = Image.Exif()
    rotated[0x0112] = 6
    grey16 = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    return {
        "jpeg": (photo, "JPEG", {}),
        "jpeg-exif-rotated": (photo, "JPEG", {"exif": rotated.tobytes()}),
        "jpeg-cmyk-progressive": (photo.convert("CMYK"), "JPEG", {"progressive": True}),
        "png-16-bit-grey": (grey16, "PNG", {"compress_level": 1}),
        "png-rgba": (photo.convert("RGBA"), "PNG", {"compress_level": 1}),
        "tiff-float": (photo.convert("F"), "TIFF", {}),
        "webp": (photo, "WEBP", {"method": 0}),
    }


def test_the_memory_model_does_not_underestimate(tmp_path, photos):
    photo = photos["astronaut"].resize((2000, 2000), Image.BILINEAR)
    paths, estimates = [], []
    for name, (image, fmt, options) in _flavours(photo).items():
        path = tmp_path / name
        image.save(path, fmt, **options)
        data = path.read_bytes()
        opened = Image.open(io.BytesIO(data))
        estimates.append(images._peak_bytes(opened.size, opened.mode, images._decoder_bytes(opened, data)))
        paths.append(path)
    measured = peak_growth(paths, max_pixels=50_000_000)
    for path, estimate, (_, _, peak) in zip(paths, estimates, measured, strict=True):
        # Slack: chunk buffers (a few MB whatever the size), allocator and library overheads.
        assert peak <= estimate + (12 << 20), f"{path.name}: {peak / 4e6:.1f} bytes a pixel, model {estimate / 4e6:.1f}"
