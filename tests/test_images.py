import contextlib
import io
import os
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps

from u2s_hf import images

import corpus


@pytest.mark.parametrize("name", [n for n, kind in corpus.BAD_INPUTS.items() if kind == "ok"])
def test_awkward_but_valid_files_decode_to_rgb(bad_dir, name):
    rgb = images.decode({"path": str(bad_dir / name), "bytes": None})
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.mark.parametrize(
    "name, reason",
    [
        ("corrupt.jpg", "corrupt"),
        ("truncated.png", "truncated"),
        ("empty.jpg", "empty"),
        ("not_an_image.jpg", "not an image"),
        ("bomb.png", "too large"),
        ("cut_pages.tif", "truncated"),
    ],
)
def test_undecodable_files_raise_a_short_readable_reason(bad_dir, name, reason):
    with pytest.raises(images.ImageError, match=reason) as info:
        images.decode({"path": str(bad_dir / name), "bytes": None})
    assert len(str(info.value)) < 200


def test_missing_cells_and_files_are_errors(tmp_path):
    for value in (None, {"bytes": None, "path": None}, str(tmp_path / "nope.jpg"), 12):
        with pytest.raises(images.ImageError):
            images.decode(value)


def test_exif_rotation_is_applied(bad_dir, photos):
    upright = images.decode((bad_dir / "exif_rotated.jpg").read_bytes())
    assert upright.shape[:2] == photos["astronaut"].size[::-1]
    # Upright means close to the original, not to the sideways pixels the file stores.
    diff = np.abs(upright.astype(int) - np.asarray(photos["astronaut"]).astype(int)).mean()
    assert diff < 10


def test_sixteen_bit_grey_is_rescaled_not_clipped(bad_dir, photos):
    rgb = images.decode(str(bad_dir / "sixteen_bit.png"))
    grey = np.asarray(photos["astronaut"].convert("L")).astype(int)
    assert np.abs(rgb[..., 0].astype(int) - grey).max() <= 1


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent
    assert (images.decode(rgba) == 255).all()


def test_animated_gif_gives_its_first_frame(bad_dir, photos):
    rgb = images.decode(str(bad_dir / "animated.gif"))
    assert rgb.shape[:2] == photos["astronaut"].size[::-1]
    first = np.asarray(photos["astronaut"].convert("P").convert("RGB")).astype(int)
    assert np.abs(rgb.astype(int) - first).mean() < 5


def test_pixel_guard_is_configurable(photos):
    with pytest.raises(images.ImageError, match="too large"):
        images.decode(photos["astronaut"], max_pixels=100)


def test_float_arrays_in_unit_range_are_scaled():
    assert images.decode(np.full((2, 2), 1.0)).max() == 255


def test_clean_images_carry_no_metadata(bad_dir):
    source = Image.open(bad_dir / "gps.jpg")
    assert source.getexif().get_ifd(0x8825), "fixture should carry GPS"
    clean = images.clean(images.decode(str(bad_dir / "gps.jpg")))
    buffer = io.BytesIO()
    clean.save(buffer, "PNG")  # what datasets does with it
    again = Image.open(io.BytesIO(buffer.getvalue()))
    assert not again.getexif() and not again.info and not again.text


def test_resize_to_max_side_keeps_aspect():
    small, scale = images.resize_to_max_side(np.zeros((100, 300, 3), np.uint8), 150)
    assert small.shape[:2] == (50, 150) and scale == 0.5
    same, scale = images.resize_to_max_side(np.zeros((10, 30, 3), np.uint8), 150)
    assert same.shape[:2] == (10, 30) and scale == 1.0


# -- fail closed: any failure to read one value is that value's ImageError ----------------------------------------


def _encoded(image, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small(photos):
    return photos["astronaut"].resize((64, 48), Image.BILINEAR)


@pytest.mark.parametrize(
    "array",
    [
        np.array([[object()] * 3] * 3, dtype=object),
        np.ones((3, 3), complex),
        np.ones((3, 3), bool),
        np.full((3, 3), np.nan),
        np.full((3, 3, 3), np.inf),
        np.zeros((2, 3, 3, 3), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.array(5),
        np.array([["a", "b"]]),
        np.zeros((3, 3), "V4"),
        np.zeros((3, 3), "datetime64[s]"),
        np.zeros((3, 3), [("r", "u1")]),
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_arrays_that_are_not_images_are_image_errors(array):
    with pytest.raises(images.ImageError):
        images.decode(array)


def test_arrays_obey_the_pixel_guard():
    huge = np.broadcast_to(np.uint8(7), (3000, 3000, 3))  # no memory of its own; a copy would take 27 MB
    with pytest.raises(images.ImageError, match="too large"):
        images.decode(huge, max_pixels=1_000_000)


def test_only_the_first_frame_is_read(photos):
    # A 2-page TIFF cut right after its first page: the second page's IFD is gone. Walking the frames (n_frames)
    # raised TypeError here and ended the run; frame 0 alone is a good image.
    page, other = photos["astronaut"].resize((48, 40)), photos["coffee"].resize((48, 40))
    data = _encoded(page, "TIFF", save_all=True, append_images=[other])
    first_page_ends = Image.open(io.BytesIO(data)).tile[0].offset + 48 * 40 * 3  # header, first IFD, first strip
    rgb = images.decode(data[: first_page_ends + 4])
    assert np.array_equal(rgb, np.asarray(page))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_undone_like_pillow(small, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(small, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(images.decode(data), expected)


# -- limits: pixels, bytes, Pillow's own bomb check -----------------------------------------------------------------


def test_the_memory_guard_counts_bytes_not_only_pixels(small):
    pixels = small.width * small.height
    rgb_jpeg = _encoded(small, "JPEG")
    # libjpeg keeps every DCT coefficient of a progressive file (8 bytes a pixel for 4:4:4 CMYK) and the WebP decoder
    # keeps frames of its own: more bytes than an RGB image of the same pixel count, which the guard is sized for.
    costly = {
        "progressive CMYK JPEG": _encoded(small.convert("CMYK"), "JPEG", progressive=True, subsampling=0),
        "WebP": _encoded(small, "WEBP"),
    }
    assert images.decode(rgb_jpeg, max_pixels=pixels).shape == (small.height, small.width, 3)
    assert images.decode(_encoded(small.convert("CMYK"), "JPEG"), max_pixels=pixels).shape[:2] == small.size[::-1]
    for name, data in costly.items():
        with pytest.raises(images.ImageError, match="memory guard") as info:
            images.decode(data, max_pixels=pixels)
        assert len(str(info.value)) < 200, name
        assert images.decode(data, max_pixels=4 * pixels).shape == (small.height, small.width, 3), name


def test_a_jpeg_over_the_guard_is_decoded_reduced(photos):
    photo = photos["astronaut"].resize((400, 300), Image.BILINEAR)
    data = _encoded(photo, "JPEG", quality=95)
    rgb = images.decode(data, max_pixels=40_000)  # 120,000 pixels: decoded at 1/2 scale
    assert rgb.shape == (150, 200, 3)
    half = np.asarray(photo.resize((200, 150), Image.BOX)).astype(int)
    assert np.abs(rgb.astype(int) - half).mean() < 6
    with pytest.raises(images.ImageError, match="too large"):
        images.decode(data, max_pixels=1_000)  # even 1/8 scale (50x38) is over
    with pytest.raises(images.ImageError, match="too large"):
        images.decode(_encoded(photo, "PNG"), max_pixels=40_000)  # PNG has no reduced decode
    # A progressive JPEG keeps full-size coefficients whatever the scale: reducing does not make it fit.
    with pytest.raises(images.ImageError, match="too large"):
        images.decode(_encoded(photo, "JPEG", progressive=True), max_pixels=40_000)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "GIF"])
def test_max_pixels_governs_not_pillows_bomb_limit(monkeypatch, small, fmt):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2,000 pixels, warns over 1,000
    data = _encoded(small.resize((60, 50)), fmt)  # 3,000 pixels
    assert images.decode(data, max_pixels=5000).shape == (50, 60, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(images.ImageError, match="over 1000 pixels"):  # None: Pillow's current limit, by our check
        images.decode(data)
    assert Image.MAX_IMAGE_PIXELS == 1000


# -- reading files: only regular files of bounded size, never blocking, never naming the path ---------------------


def _in_thread(function, *args, timeout=10):
    """function(*args) in a thread: (finished, result or exception). A regression that blocks cannot hang the suite."""
    outcome = []

    def run():
        try:
            outcome.append(function(*args))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), (outcome or [None])[0]


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    try:
        for call in (lambda: images.decode({"bytes": None, "path": str(fifo)}), lambda: images.read_file(str(fifo))):
            finished, outcome = _in_thread(call)
            assert finished, "reading a FIFO blocked"
            assert isinstance(outcome, images.ImageError) and "FIFO" in str(outcome)
    finally:  # release a reader that did block, so its thread ends
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_devices_and_directories_are_refused(tmp_path):
    with pytest.raises(images.ImageError, match=r"not a regular file \(a character device\)"):
        images.read_file("/dev/zero")
    with pytest.raises(images.ImageError, match=r"not a regular file \(a directory\)"):
        images.read_file(tmp_path)


def test_files_over_the_limit_are_refused_without_reading(tmp_path):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB that takes no disk, and would take a GiB of memory to read
    with pytest.raises(images.ImageError, match=f"{1 << 30} bytes"):  # the size comes from fstat, not from reading
        images.read_file(sparse, max_bytes=1 << 20)
    with open(sparse, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)
    with pytest.raises(images.ImageError, match="too large"):
        images.decode({"bytes": None, "path": str(sparse)})
    exact = tmp_path / "ten.bin"
    exact.write_bytes(b"0123456789")
    assert images.read_file(exact, max_bytes=10) == b"0123456789"
    with pytest.raises(images.ImageError, match="too large"):
        images.read_file(exact, max_bytes=9)


def test_file_errors_never_name_the_path(tmp_path):
    missing = tmp_path / "private-name-42.jpg"
    for value in (str(missing), {"bytes": None, "path": str(missing)}):
        with pytest.raises(images.ImageError) as info:
            images.decode(value)
        assert "private-name-42" not in str(info.value) and str(tmp_path) not in str(info.value)
        assert "No such file" in str(info.value)


def test_postscript_is_never_interpreted():
    """EPS decodes by running Ghostscript on the file: a program from the dataset. It is not an image to us."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    with pytest.raises(images.ImageError, match="not an image"):
        images.decode(eps)
