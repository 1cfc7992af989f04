import numpy as np
import pytest
from PIL import Image

from u2s_hf.editors import redact


@pytest.fixture
def noise():
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", ["pixelate", "blur", "fill", "inpaint"])
def test_each_method_changes_the_region_and_nothing_else(noise, method):
    out = redact.redact(noise, [[40, 30, 80, 70]], method, margin=0.25, cells=8)
    x0, y0, x1, y1 = redact.grow([40, 30, 80, 70], 0.25, 160, 120)
    assert (x0, y0, x1, y1) == (30, 20, 90, 80)
    inside = np.abs(out[y0:y1, x0:x1].astype(int) - noise[y0:y1, x0:x1]).mean()
    assert inside > 30  # noise averages out: a redacted region is far from the original
    outside = np.ones(noise.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    if method != "inpaint":  # Telea only writes inside the mask too, but check the strict methods exactly
        assert (out[outside] == noise[outside]).all()


def test_pixelate_uses_about_cells_blocks():
    patch = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = redact.pixelate(patch, 8)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 64


def test_grow_clips_to_the_image():
    assert redact.grow([-5, -5, 500, 500], 0.5, 100, 80) == (0, 0, 100, 80)


def test_obscure_changes_a_whole_image(noise):
    assert np.abs(redact.obscure(noise, 16).astype(int) - noise).mean() > 30


@pytest.mark.parametrize(
    "box",
    [
        [200, 10, 220, 30],  # right of the image
        [-30, -30, -10, -10],  # above and left of it
        [160, 0, 170, 10],  # touching its right edge from outside (a margin would reach in)
        [10, 10, 10, 40],  # zero width
        [10, 40, 30, 40],  # zero height
        [30, 20, 10, 40],  # x1 < x0
        [10, 20, float("nan"), 40],
        [10, 20, float("inf"), 40],
        [10, 20, 30],
        [],
        None,
        "1234",
        [True, 0, 5, 5],
    ],
)
def test_unusable_boxes_are_refused(noise, box):
    """They locate nothing: the caller must obscure more, not report the untouched image as redacted."""
    with pytest.raises(ValueError, match="box"):
        redact.redact(noise, [[40, 30, 80, 70], box], "pixelate", margin=0.25, cells=8)


def test_no_boxes_are_refused(noise):
    with pytest.raises(ValueError, match="no region"):
        redact.redact(noise, [], "pixelate", margin=0.25, cells=8)


@pytest.mark.parametrize("method", ["pixelate", "blur", "fill", "inpaint"])
def test_a_tiny_region_is_changed_too(noise, method):
    out = redact.redact(noise, [[10, 10, 16, 16]], method, margin=0, cells=8)
    assert (out[10:16, 10:16] != noise[10:16, 10:16]).any(-1).mean() > 0.9


def test_pixelation_cells_are_at_least_two_pixels_wide():
    patch = np.random.default_rng(2).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = redact.pixelate(patch, 8)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 9  # 3 x 3 cells of 2 x 2 pixels
    one = patch[:1, :1]
    assert np.array_equal(redact.pixelate(one, 8), one)


def blocks(height, width, size, seed=3):
    """Noise in uniform `size` x `size` blocks: already pixelated on that grid."""
    small = np.random.default_rng(seed).integers(0, 256, (height // size, width // size, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, size, axis=0), size, axis=1)


def test_a_redaction_that_leaves_a_region_as_it_was_is_refused():
    image = blocks(32, 32, 2)  # pixelating a 16-pixel region into 8 cells averages uniform blocks: no change
    with pytest.raises(ValueError, match="unchanged"):
        redact.redact(image, [[8, 8, 24, 24]], "pixelate", margin=0, cells=8)


def test_a_region_of_one_colour_may_stay_as_it_was(noise):
    image = noise.copy()
    image[20:60, 20:60] = 77
    out = redact.redact(image, [[30, 30, 50, 50]], "pixelate", margin=0.25, cells=8)
    assert np.array_equal(out, image)


def test_obscure_checks_its_own_output():
    with pytest.raises(ValueError, match="unchanged"):
        redact.obscure(blocks(32, 32, 2), 16)
    small = np.random.default_rng(4).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    assert not np.array_equal(redact.obscure(small, 16), small)
    grey = np.full((6, 6, 3), 90, np.uint8)
    assert np.array_equal(redact.obscure(grey, 16), grey)  # one colour: nothing to hide


BAD = {
    "outside": [40, 40, 50, 50],
    "zero_size": [5, 5, 5, 12],
    "nan": [1, 2, float("nan"), 8],
    "three_numbers": [1, 2, 3],
    "good_and_outside": None,
}
TINY = [10, 10, 16, 16]


def edit_rows():
    """Flagged rows whose detections cannot be trusted, one tiny face, one already-pixelated image, one unflagged."""
    import datasets

    from u2s_hf.stages.base import DETECTIONS

    noise = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    boxes = {**BAD, "good_and_outside": [[4, 4, 12, 12], BAD["outside"]]}
    rows = {name: (noise, box if name == "good_and_outside" else [box], True) for name, box in boxes.items()}
    rows["tiny"] = (noise, [TINY], True)
    rows["pixelated"] = (blocks(32, 32, 2), [BAD["outside"]], True)  # 16 cells across 32 px change nothing
    rows["unflagged"] = (noise, [BAD["outside"]], False)
    return rows, datasets.Dataset.from_dict(
        {
            "name": list(rows),
            "image": [Image.fromarray(r[0]) for r in rows.values()],
            "privacy_flag": [r[2] for r in rows.values()],
            "detections": [[{"label": "face", "score": 0.9, "box": b} for b in r[1]] for r in rows.values()],
        },
        features=datasets.Features(
            {
                "name": datasets.Value("string"),
                "image": datasets.Image(),
                "privacy_flag": datasets.Value("bool"),
                "detections": DETECTIONS,
            }
        ),
    )


@pytest.mark.parametrize("margin", [0.0, 0.25])
def test_edit_never_reports_unchanged_pixels_as_redacted(margin):
    import u2s_hf as u2s

    rows, ds = edit_rows()
    out = {row["name"]: row for row in ds.map(u2s.Edit(margin=margin), batched=True)}
    for name in BAD:
        row = out[name]
        assert row["u2s_status"] == "redacted", name
        assert "redaction failed" in row["u2s_error"] and row["u2s_error"].endswith("whole image obscured"), name
        after = np.asarray(row["safe_image"].convert("RGB"))
        assert np.abs(after.astype(int) - rows[name][0]).mean() > 20, name  # the whole image, not a few pixels
    tiny = out["tiny"]
    assert tiny["u2s_status"] == "redacted" and tiny["u2s_error"] is None
    x0, y0, x1, y1 = redact.grow(TINY, margin, 32, 32)
    after = np.asarray(tiny["safe_image"].convert("RGB"))
    assert (after[y0:y1, x0:x1] != rows["tiny"][0][y0:y1, x0:x1]).any(-1).mean() > 0.9
    dropped = out["pixelated"]
    assert dropped["u2s_status"] == "dropped" and dropped["safe_image"] is None
    assert "obscuring failed too" in dropped["u2s_error"]
    kept = out["unflagged"]
    assert kept["u2s_status"] == "kept_safe"
    assert np.array_equal(np.asarray(kept["safe_image"].convert("RGB")), rows["unflagged"][0])
