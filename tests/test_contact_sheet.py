"""The contact sheet sits in the release folder: it must show what was written, never the original pixels."""

import numpy as np
from PIL import Image

import u2s_hf as u2s
from u2s_hf import report

import corpus


def _thumb(image: Image.Image) -> np.ndarray:
    scale = report.TILE / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR)).astype(int)


def test_each_tile_shows_the_written_image_and_no_original_pixels(photos):
    safe = u2s.anonymize(corpus.image_dataset(photos), keep_original=True)
    sheet = np.asarray(report.contact_sheet(safe.remove_columns("image"))).astype(int)
    flagged = [i for i, flag in enumerate(safe["privacy_flag"]) if flag]
    assert len(flagged) >= 4
    width, height = 2 * report.TILE + 12, report.TILE + 20
    for k, i in enumerate(flagged):
        original, written = _thumb(photos[safe[i]["name"]]), _thumb(safe[i]["safe_image"])
        h, w = original.shape[:2]
        x, y = (k % 3) * width, (k // 3) * height
        left = sheet[y : y + h, x : x + w]
        right = sheet[y : y + h, x + report.TILE + 12 : x + report.TILE + 12 + w]
        assert np.abs(right - written).mean() < 2, safe[i]["name"]  # the image that was written
        assert np.abs(left - original).mean() > 8, safe[i]["name"]  # boxes on grey, not the photo
        scale = report.TILE / max(photos[safe[i]["name"]].size)
        for detection in safe[i]["detections"]:  # what was redacted is not shown as it was
            x0, y0, x1, y1 = (round(v * scale) for v in detection["box"])
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                region = (slice(y0, y1), slice(x0, x1))
                assert np.abs(right[region] - original[region]).mean() > 5, safe[i]["name"]
