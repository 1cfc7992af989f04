"""Fuzzing `images.decode`: mutated and truncated files of every format Pillow can write here must decode to an
HxWx3 uint8 array or raise ImageError; any other exception would end a whole run over one bad cell.

Deterministic (fixed seeds) and small (48x40 images): about 2,000 decodes in a few seconds.
"""

import collections
import io
import random
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image, features

from u2s_hf import images

SEED = 9
MUTATIONS, TRUNCATIONS = 48, 12  # per file
MAX_PIXELS = 250_000  # a mutated header may claim a large size: refused instead of decoded, keeping the test fast
# Formats Pillow opens and saves that are not fuzzed, and why.
NOT_FUZZED = {
    "EPS": "loading runs Ghostscript, an external program, on the fuzzed bytes",
    "BUFR": "stub plugin: loading needs an application handler",
    "GRIB": "stub plugin",
    "HDF5": "stub plugin",
    "WMF": "stub plugin off Windows",
}


def _pictures():
    photo = Image.fromarray(skimage.data.astronaut()).resize((48, 40), Image.BILINEAR)
    other = Image.fromarray(skimage.data.coffee()).resize((48, 40), Image.BILINEAR)
    return photo, other


def _save(image, fmt, **options) -> bytes:
    if "append_images" in options:
        options["append_images"] = [frame.copy() for frame in options["append_images"]]
    buffer = io.BytesIO()
    image.copy().save(buffer, fmt, **options)
    return buffer.getvalue()


def _grey16(image):
    return Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)


def sample_files() -> dict:
    """name -> (Pillow format, file bytes): every format Pillow can write in this environment, in several flavours
    (multi-frame, compressed, deep and palette modes)."""
    photo, other = _pictures()
    two = {"save_all": True, "append_images": [other]}  # _save copies it: a save leaves options on the frames
    palette = photo.convert("P")
    palette.info["transparency"] = 0
    files = {
        "jpeg": ("JPEG", _save(photo, "JPEG", quality=80)),
        "jpeg-progressive": ("JPEG", _save(photo, "JPEG", quality=80, progressive=True)),
        "jpeg-cmyk": ("JPEG", _save(photo.convert("CMYK"), "JPEG")),
        "mpo-2-frames": ("MPO", _save(photo, "MPO", **two)),
        "png": ("PNG", _save(photo, "PNG")),
        "png-16-bit-grey": ("PNG", _save(_grey16(photo), "PNG")),
        "png-palette-transparency": ("PNG", _save(palette, "PNG")),
        "apng-2-frames": ("PNG", _save(photo, "PNG", **two)),
        "gif-2-frames": ("GIF", _save(photo.convert("P"), "GIF", duration=50, **two)),
        "tiff-2-pages": ("TIFF", _save(photo, "TIFF", **two)),
        "tiff-16-bit-grey": ("TIFF", _save(_grey16(photo), "TIFF")),
        "tiff-float": ("TIFF", _save(photo.convert("F"), "TIFF")),
        "tiff-cmyk": ("TIFF", _save(photo.convert("CMYK"), "TIFF")),
        "bmp": ("BMP", _save(photo, "BMP")),
        "bmp-palette": ("BMP", _save(photo.convert("P"), "BMP")),
        "dib": ("DIB", _save(photo, "DIB")),
        "ico": ("ICO", _save(photo, "ICO", sizes=[(48, 40), (16, 16)])),
        "icns": ("ICNS", _save(photo, "ICNS")),  # Pillow writes every size up to 1024x1024
        "ppm": ("PPM", _save(photo, "PPM")),
        "pgm-16-bit": ("PPM", _save(_grey16(photo), "PPM")),
        "tga": ("TGA", _save(photo, "TGA")),
        "tga-rle": ("TGA", _save(photo, "TGA", compression="tga_rle")),
        "pcx": ("PCX", _save(photo, "PCX")),
        "qoi": ("QOI", _save(photo, "QOI")),
        "sgi": ("SGI", _save(photo, "SGI")),
        "dds": ("DDS", _save(photo, "DDS")),
        "im": ("IM", _save(photo, "IM")),
        "spider": ("SPIDER", _save(photo.convert("F"), "SPIDER")),
        "blp": ("BLP", _save(photo.convert("P"), "BLP")),
        "msp": ("MSP", _save(photo.convert("1"), "MSP")),
        "xbm": ("XBM", _save(photo.convert("1"), "XBM")),
    }
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"):
        files[f"tiff-2-pages-{compression}"] = ("TIFF", _save(photo, "TIFF", compression=compression, **two))
    if features.check("webp"):
        files["webp"] = ("WEBP", _save(photo, "WEBP"))
        files["webp-lossless-alpha"] = ("WEBP", _save(photo.convert("RGBA"), "WEBP", lossless=True))
        files["webp-animated"] = ("WEBP", _save(photo, "WEBP", **two))
    if features.check("avif"):
        files["avif"] = ("AVIF", _save(photo, "AVIF", speed=10))
        files["avif-animated"] = ("AVIF", _save(photo, "AVIF", speed=10, **two))
    if features.check("jpg_2000"):
        files["jpeg2000"] = ("JPEG2000", _save(photo, "JPEG2000"))
        files["j2k-codestream"] = ("JPEG2000", _save(photo, "JPEG2000", no_jp2=True, irreversible=True))
    return files


FILES = sample_files()


def mutants(data: bytes, rng: random.Random):
    """`MUTATIONS` copies with 1-8 random byte changes, insertions or deletions, then `TRUNCATIONS` prefixes."""
    for _ in range(MUTATIONS):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at, op = rng.randrange(len(mutant)), rng.random()
            if op < 0.6:
                mutant[at] = rng.randrange(256)
            elif op < 0.8:
                mutant[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                del mutant[at : at + rng.randint(1, 8)]
        yield bytes(mutant)
    for _ in range(TRUNCATIONS):
        yield data[: rng.randrange(1, len(data))]


def escapes(cases) -> list[str]:
    """Decode each (label, bytes); return what broke the contract."""
    broken = []
    for label, data in cases:
        try:
            rgb = images.decode(data, max_pixels=MAX_PIXELS)
        except images.ImageError as exc:
            if not 0 < len(str(exc)) < 200:
                broken.append(f"{label}: ImageError message of {len(str(exc))} characters")
            continue
        except Exception as exc:
            broken.append(f"{label}: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        if not (
            isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size
        ):
            broken.append(f"{label}: returned {type(rgb).__name__} {getattr(rgb, 'shape', '')}")
    return broken


def _report(broken: list[str]) -> str:
    kinds = collections.Counter(line.split(": ")[1] for line in broken)
    return f"{len(broken)} decodes broke the contract ({dict(kinds)}), e.g.:\n" + "\n".join(broken[:10])


def test_every_format_pillow_writes_here_is_fuzzed():
    Image.init()
    writable = (set(Image.OPEN) & set(Image.SAVE)) | {"MPO"}
    fuzzed = {fmt for fmt, _ in FILES.values()}
    assert writable - fuzzed - set(NOT_FUZZED) == set()
    for name, (fmt, data) in FILES.items():  # the unmutated files are good images
        assert Image.open(io.BytesIO(data)).format == fmt, name
        assert not escapes([(name, data)]), name


@pytest.mark.filterwarnings("ignore")  # Pillow warns about some corrupt files (EXIF, TIFF tags) as it reads them
@pytest.mark.parametrize("name", sorted(FILES))
def test_mutated_and_truncated_files_decode_or_raise_image_error(name):
    _fmt, data = FILES[name]
    rng = random.Random(SEED ^ zlib.crc32(name.encode()))
    broken = escapes((f"{name} #{i}", mutant) for i, mutant in enumerate(mutants(data, rng)))
    assert not broken, _report(broken)


@pytest.mark.filterwarnings("ignore")
def test_a_two_page_tiff_cut_anywhere_in_its_first_half():
    # The first IFD and page come first, the second IFD last: these cuts keep a header that opens and points at a
    # second page that is not there (once a TypeError "Missing dimensions" that ended the run).
    data = FILES["tiff-2-pages"][1]
    broken = escapes((f"cut at {cut}", data[:cut]) for cut in range(1, len(data) // 2, 7))
    assert not broken, _report(broken)
