import io

import numpy as np
import pytest
from PIL import Image

import corpus
from u2s_hf import images


@pytest.mark.parametrize("name", [n for n, kind in corpus.BAD_INPUTS.items() if kind == "ok"])
def test_awkward_but_valid_files_decode_to_rgb(bad_dir, name):
    rgb = images.decode({"path": str(bad_dir / name), "bytes": None})
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.mark.parametrize("name, reason", [
    ("corrupt.jpg", "corrupt"), ("truncated.png", "truncated"), ("empty.jpg", "empty"),
    ("not_an_image.jpg", "not an image"), ("bomb.png", "too large")])
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
