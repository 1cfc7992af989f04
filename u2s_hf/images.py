"""The one place that decodes, normalises, limits and re-encodes images.

Every image enters the plugin through `decode` (whatever form `datasets` hands it over in) and leaves through
`clean`: a new image built from pixels alone, so no EXIF/XMP/IPTC/ICC/text chunk can survive. `datasets` stores it
as PNG (lossless, and Pillow writes no metadata the image does not carry).

Limits, so that one hostile value fails alone instead of ending a run:
- whatever Pillow (or numpy, for an array) raises on a value becomes that value's `ImageError`;
- files are read by `read_file`: regular files of at most MAX_FILE_BYTES, nothing that could block;
- the pixel guard (`max_pixels`) and a memory guard are applied to the header, before any pixel is read. The memory
  guard models the peak bytes of a decode (`_limit`) and refuses what needs more than an 8-bit RGB image of
  `max_pixels` pixels would; conversion works in row chunks, so no mode needs full-size temporaries.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import stat
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow's default bomb limit (~89 Mpx): the pixel guard when neither `max_pixels` nor Pillow's limit is set.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# The largest image file `read_file` reads (a 512 MiB photo is already extreme; the bytes are held while decoding).
MAX_FILE_BYTES = 512 * 1024 * 1024
# Leading bytes of common formats: a file that starts like an image but will not open is corrupt, not "not an image".
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"RIFF", "WebP"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Pixels converted at a time (rows, or part of a row): conversion temporaries stay ~2 MB whatever the image size.
_CHUNK_PIXELS = 1 << 16
# Bytes a pixel takes in Pillow's own buffer; every mode not listed takes 4 (RGB is stored as RGBX).
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Whole-image buffers a format's decoder keeps besides Pillow's, in bytes per pixel, measured on 9 Mpx files
# (tests/test_image_memory.py measures some). Decoders that stream rows into Pillow's buffer keep none; a format
# not measured is assumed to keep one 4-byte frame. JPEG and JPEG 2000 depend on the file: see _decoder_bytes.
_DECODER_BYTES = {
    **dict.fromkeys(
        ("PNG", "GIF", "TIFF", "BMP", "DIB", "PPM", "TGA", "PCX", "QOI", "SGI", "DDS", "IM", "SPIDER", "MSP", "XBM"), 0
    ),
    "WEBP": 13,
    "AVIF": 13,
}  # the decoder's canvas, its previous frame, the frame's copy to Pillow
_DEEP_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # rescaled to 8 bits, not clipped
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa", "P")  # composited on white ("P": the palette may carry transparency)
_UPRIGHT = {  # EXIF orientation -> numpy view that undoes it (the same transposes as ImageOps.exif_transpose)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a),
}
# Formats never opened: decoding EPS runs Ghostscript, an interpreter, on a PostScript program from the dataset.
_REFUSED_FORMATS = ("EPS",)
# Pillow's bomb check reads the global Image.MAX_IMAGE_PIXELS; decode lifts it, under this lock, while Image.open
# reads a header (and while an image over Pillow's limit but within `max_pixels` loads), so `max_pixels` governs.
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An input that cannot be turned into pixels. The message is short and meant for `u2s_error`."""


def decode(value, max_pixels: int | None = None) -> np.ndarray:
    """Return the image as an HxWx3 uint8 RGB array, upright, first frame only.

    `value` may be a PIL image, a `datasets` undecoded dict ({"bytes", "path"}), raw bytes, a file path, or an array.
    `max_pixels` None: Pillow's current limit (Image.MAX_IMAGE_PIXELS; MAX_PIXELS when that is None). An image over
    it, or whose decode would need more memory than an 8-bit RGB image of `max_pixels`, is an ImageError, except a
    JPEG file that fits when decoded at 1/2, 1/4 or 1/8 scale: it is decoded so, and the array is then smaller than
    the size the file states. Any failure to read the value raises ImageError, whatever Pillow or numpy raised.
    """
    max_pixels = max_pixels or _pillow_limit() or MAX_PIXELS
    if isinstance(value, np.ndarray):
        with _reading():
            return _array_to_rgb(value, max_pixels)
    if isinstance(value, Image.Image):
        return _image_to_rgb(value, max_pixels)
    data = _read_bytes(value)
    with _reading(data), _pillow_limit_lifted():
        image = Image.open(io.BytesIO(data), formats=_formats())  # reads the header only
    try:
        return _image_to_rgb(image, max_pixels, data)
    finally:
        image.close()


def read_file(path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file; ImageError unless it is a regular file of at most `max_bytes`.

    It never waits: a FIFO is opened non-blocking and refused, like devices and directories, before anything is
    read, and at most `max_bytes` + 1 bytes are read. Messages never hold the path (they end up in `u2s_error`).
    """
    try:
        _refuse_unless_regular(os.stat(path), max_bytes)  # devices are not even opened (opening one can act)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"cannot open image file ({exc.strerror or type(exc).__name__})") from None
    except (TypeError, ValueError):  # not a path, or one with a NUL byte
        raise ImageError("invalid image file path") from None
    try:
        with os.fdopen(fd, "rb") as f:  # closes fd
            size = _refuse_unless_regular(os.fstat(f.fileno()), max_bytes)  # what was opened, not what was stat'ed
            data = f.read(size + 1)  # + 1 notices a file that grew since fstat
            if len(data) > size:
                data += f.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise ImageError(f"cannot read image file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise ImageError(f"image file too large (over {max_bytes} bytes)")
    return data


def clean(rgb: np.ndarray) -> Image.Image:
    """A metadata-free image of these pixels, ready for a `datasets.Image()` column."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    # Pillow merges a preset encoderinfo into save(): zlib level 1 makes the PNG that datasets writes ~3x faster
    # for ~10% more bytes (on an older Pillow the hint is ignored and the default level applies).
    image.encoderinfo = {"compress_level": 1}
    return image


def data_url(rgb: np.ndarray, max_side: int = 1024) -> str:
    """A JPEG data URL of the pixels (shrunk to `max_side`), for sending an image to a model server."""
    small, _ = resize_to_max_side(rgb, max_side)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def resize_to_max_side(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most `max_side`; returns the array and the scale applied."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)), scale


# -- reading -----------------------------------------------------------------------------------------------------


def _read_bytes(value) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise ImageError("empty image cell (no bytes and no path)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        data = read_file(value)
    elif value is None:
        raise ImageError("missing image (None)")
    else:
        raise ImageError(f"unsupported image value of type {type(value).__name__}")
    if not data:
        raise ImageError("empty image file (0 bytes)")
    return data


def _refuse_unless_regular(info: os.stat_result, max_bytes: int) -> int:
    if not stat.S_ISREG(info.st_mode):
        kinds = (
            (stat.S_ISFIFO, "a FIFO"),
            (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"),
            (stat.S_ISDIR, "a directory"),
            (stat.S_ISSOCK, "a socket"),
        )
        kind = next((name for test, name in kinds if test(info.st_mode)), "not a file")
        raise ImageError(f"not a regular file ({kind})")
    if info.st_size > max_bytes:
        raise ImageError(f"image file too large ({info.st_size} bytes, over {max_bytes})")
    return info.st_size


@contextlib.contextmanager
def _reading(data: bytes = b""):
    """Pillow raises many exception types on bad input (TypeError, KeyError, struct.error, RuntimeError, ...):
    inside this block each one is the value's ImageError, with its type and a short message."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
        if kind:
            raise ImageError(f"corrupt {kind} data (the header says {kind}, the rest cannot be read)") from None
        raise ImageError("not an image (format not recognised)") from None
    except Image.DecompressionBombError:  # Pillow's own limit, where a caller's image reached us already limited
        raise ImageError("image too large (Pillow's decompression bomb guard)") from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image") from None
    except Exception as exc:
        raise ImageError(f"corrupt or truncated image ({_short(exc)})") from None


@contextlib.contextmanager
def _pillow_limit_lifted(lift: bool = True):
    if not lift:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _REFUSED_FORMATS]


def _pillow_limit() -> int | None:
    with _PILLOW_LIMIT_LOCK:  # never the None of another thread's lifted window
        return Image.MAX_IMAGE_PIXELS


# -- limits --------------------------------------------------------------------------------------------------------


def _limit(image: Image.Image, max_pixels: int, data: bytes | None) -> None:
    """Refuse `image` before its pixels are read when it has more than `max_pixels` pixels or its decode would peak
    above the bytes of an 8-bit RGB image of `max_pixels`; a JPEG file that decode opened is instead set to decode at
    the largest reduced scale that fits both."""
    w, h = image.size
    if w <= 0 or h <= 0:
        raise ImageError("image has no pixels")
    budget = _peak_bytes((max_pixels, 1), "RGB", 0)
    extra = _decoder_bytes(image, data)  # at the size the header states, even when drafted (see there)

    def fits(size):
        return size[0] * size[1] <= max_pixels and _peak_bytes(size, image.mode, extra) <= budget

    if data is not None and image.format in ("JPEG", "MPO") and not fits((w, h)):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale for the cost of the reduced pixels; draft works once.
        scale = next((s for s in (2, 4, 8) if fits((-(-w // s), -(-h // s)))), None)
        if scale:
            image.draft(None, (max(1, w // scale), max(1, h // scale)))
    if image.size[0] * image.size[1] > max_pixels:
        raise ImageError(f"image too large ({w}x{h} is over {max_pixels} pixels)")
    need = _peak_bytes(image.size, image.mode, extra)
    if need > budget:
        raise ImageError(
            f"image too large to decode within the memory guard ({w}x{h} {image.format or ''} "
            f"{image.mode} needs ~{_kib(need)}, over the {_kib(budget)} of {max_pixels} RGB pixels)"
        )


def _peak_bytes(size: tuple[int, int], mode: str, decoder: int) -> int:
    """Peak bytes of a decode, the larger of two phases: loading (Pillow's buffer for the mode and the `decoder`'s own
    whole-image buffers) and converting (Pillow's buffer, or the upright copy that replaces it once freed, and the
    RGB result). Conversion works on row chunks, so it adds no full-size temporaries."""
    pixels = size[0] * size[1]
    pillow = _PILLOW_BYTES.get(mode, 4)
    return max(pixels * pillow + decoder, pixels * (max(pillow, 3) + 3))


def _decoder_bytes(image: Image.Image, data: bytes | None) -> int:
    """Whole-image buffers that the format's decoder keeps while loading `image` (call before any draft)."""
    if data is None:  # a caller's image: opened (and in practice loaded) by the caller, under Pillow's own limit
        return 0
    w, h = image.size
    if image.format in ("JPEG", "MPO"):
        if not image.info.get("progressive") and _first_scan_has_every_component(data, len(image.layer)):
            return 0
        # Several scans: libjpeg keeps every DCT coefficient (2 bytes a sample, at full size even when drafted)
        # until the last scan is read (jdinput.c: has_multiple_scans).
        factors = [a * b for _, a, b, _ in image.layer] or [1, 1, 1]
        return int(2 * (w + 16) * (h + 16) * sum(factors) / max(1, max(factors)))
    if image.format == "JPEG2000":  # OpenJPEG's 32-bit samples plus a copy, for an untiled file
        return w * h * 6 * len(image.getbands())
    return w * h * _DECODER_BYTES.get(image.format, 4)


def _first_scan_has_every_component(data: bytes | None, components: int) -> bool:
    data, pos = data or b"", 2
    while pos + 4 < len(data) and data[pos] == 0xFF:  # the marker segments before the first scan (SOS)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:
            return data[pos + 4] >= components
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False  # a header this walk cannot follow counts as the costly kind


# -- conversion ----------------------------------------------------------------------------------------------------


def _image_to_rgb(image: Image.Image, max_pixels: int, data: bytes | None = None) -> np.ndarray:
    """`data`: the bytes `image` was opened from by decode (it may then be reduced, and is closed afterwards)."""
    with _reading(data or b""):
        if data is None and image.tell() != 0:  # a caller's image left on a later frame
            image.seek(0)
        _limit(image, max_pixels, data)
        w, h = image.size
        limit = _pillow_limit()
        with _pillow_limit_lifted(limit is not None and w * h > limit):
            image.load()  # frame 0 only: nothing here walks the other frames
            if image.size != (w, h):  # a few formats settle their size while loading
                _limit(image, max_pixels, None)
            orientation = image.getexif().get(0x0112, 1)
            upright = _UPRIGHT.get(orientation)
            rgb = _pixels(image)
    if upright is None:
        return rgb
    if data is not None:
        image.close()  # frees Pillow's buffer before the upright copy is made
    return np.ascontiguousarray(upright(rgb))


def _chunks(height: int, width: int):
    """(rows, columns) slices of about _CHUNK_PIXELS each: whole rows, or pieces of a row when rows are longer."""
    rows, columns = max(1, _CHUNK_PIXELS // width), min(width, _CHUNK_PIXELS)
    for top in range(0, height, rows):
        for left in range(0, width, columns):
            yield slice(top, min(height, top + rows)), slice(left, min(width, left + columns))


def _pixels(image: Image.Image) -> np.ndarray:
    """Pillow's loaded image as RGB, converted a chunk at a time."""
    w, h = image.size
    out = np.empty((h, w, 3), np.uint8)

    def part(rows, columns):
        return image.crop((columns.start, rows.start, columns.stop, rows.stop))

    top = None
    if image.mode in _DEEP_GREY:
        # 16-bit and float grey: rescale instead of clipping everything above 255 to white.
        high = max(np.nan_to_num(np.asarray(part(*chunk))).max() for chunk in _chunks(h, w))
        top = 65535.0 if high > 255 else 255.0
    for rows, columns in _chunks(h, w):
        piece = part(rows, columns)
        if top is not None:
            out[rows, columns] = _to_uint8(np.asarray(piece), top)[..., None]
        elif piece.mode in _ALPHA:
            out[rows, columns] = _on_white(piece)
        else:
            out[rows, columns] = np.asarray(piece if piece.mode == "RGB" else piece.convert("RGB"))
    return out


def _on_white(part: Image.Image) -> np.ndarray:
    # Transparent pixels become white rather than whatever colour hides under alpha 0.
    rgba = part.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))


def _to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    """`values` scaled so that `top` is 255, rounded and clipped (one chunk: the float64 copy stays small)."""
    scaled = values.astype(np.float64)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    scaled *= 255.0 / top
    scaled += 0.5
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.dtype.kind not in "uif":  # bool, complex, object, strings, dates, records...
        raise ImageError(f"array of dtype {array.dtype} is not an image")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ImageError(f"array of shape {array.shape} is not an image")
    h, w, channels = array.shape
    if h * w > max_pixels:
        raise ImageError(f"image too large ({w}x{h} is over {max_pixels} pixels)")
    top = None
    if array.dtype != np.uint8:
        low, high = array.min(), array.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ImageError("array has NaN or infinite values")
        top = 1.0 if high <= 1 else 255.0  # floats in [0, 1] are scaled up, other values clipped to [0, 255]
    out = np.empty((h, w, 3), np.uint8)
    for chunk in _chunks(h, w):
        part = array[chunk] if top is None else _to_uint8(array[chunk], top)
        out[chunk] = _on_white(Image.fromarray(np.ascontiguousarray(part), "RGBA")) if channels == 4 else part
    return out


def _kib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size >= 10 << 20 else f"{size / 1024:.0f} KiB"


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip()}" if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
