"""The one place that decodes, normalises and re-encodes images.

Every image enters the plugin through `decode` (whatever form `datasets` hands it over in) and leaves through
`clean`: a new image built from pixels alone, so no EXIF/XMP/IPTC/ICC/text chunk can survive. `datasets` stores it
as PNG (lossless, and Pillow writes no metadata the image does not carry).
"""
from __future__ import annotations

import base64
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Same ceiling as Pillow's own bomb warning; anything larger is refused before its pixels are read.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# Leading bytes of common formats: a file that starts like an image but will not open is corrupt, not "not an image".
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"RIFF", "WebP"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


class ImageError(ValueError):
    """An input that cannot be turned into pixels. The message is short and meant for `u2s_error`."""


def decode(value, max_pixels: int | None = None) -> np.ndarray:
    """Return the image as an HxWx3 uint8 RGB array, upright, first frame only (`max_pixels` None: MAX_PIXELS).

    `value` may be a PIL image, a `datasets` undecoded dict ({"bytes", "path"}), raw bytes, a file path, or an array.
    """
    max_pixels = max_pixels or MAX_PIXELS
    if isinstance(value, np.ndarray):
        return _array_to_rgb(value)
    if isinstance(value, Image.Image):
        return _normalise(value, max_pixels)
    data = _read_bytes(value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            return _normalise(image, max_pixels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
        if kind:
            raise ImageError(f"corrupt {kind} data (the header says {kind}, the rest cannot be read)") from None
        raise ImageError("not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "corrupt/truncated"
        raise ImageError(f"corrupt or truncated image ({_short(exc)})") from None


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
        try:
            with open(value, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ImageError(f"cannot read image file ({_short(exc)})") from None
    elif value is None:
        raise ImageError("missing image (None)")
    else:
        raise ImageError(f"unsupported image value of type {type(value).__name__}")
    if not data:
        raise ImageError("empty image file (0 bytes)")
    return data


def _normalise(image: Image.Image, max_pixels: int) -> np.ndarray:
    w, h = image.size
    if w * h > max_pixels:
        raise ImageError(f"image too large ({w}x{h} is over {max_pixels} pixels)")
    if w == 0 or h == 0:
        raise ImageError("image has no pixels")
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image.load()
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float grey: rescale instead of clipping everything above 255 to white.
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if grey.max(initial=0) > 255 else 255.0
        return _array_to_rgb(np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels become white rather than whatever colour hides under alpha 0.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        scaled = array.astype(np.float64)
        if scaled.max(initial=0) <= 1.0:
            scaled = scaled * 255.0
        array = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ImageError(f"array of shape {array.shape} is not an image")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(array, "RGBA"))
    return np.ascontiguousarray(array)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
