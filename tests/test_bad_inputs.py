import datasets
import numpy as np

import u2s_hf as u2s
from u2s_hf import images

import corpus


def test_a_bad_input_corpus_runs_to_the_end(bad_dir):
    ds = datasets.load_dataset("imagefolder", data_dir=str(bad_dir), split="train")
    originals = ds.cast_column("image", datasets.Image(decode=False))
    safe = u2s.anonymize(ds, keep_original=True, batch_size=4)
    assert len(safe) == len(corpus.BAD_INPUTS)
    assert set(safe["u2s_status"]) <= set(u2s.STATUSES)
    for row, original in zip(safe, originals, strict=True):
        name = original["image"]["path"].rsplit("/", 1)[-1]
        expected = corpus.BAD_INPUTS[name]
        if expected == "error":
            assert row["u2s_status"] == "error" and row["privacy_flag"], name
            assert row["safe_image"] is None and row["u2s_error"], name
            continue
        assert row["u2s_status"] in ("kept_safe", "redacted"), (name, row["u2s_error"])
        before = images.decode(original["image"])
        after = corpus.pixels(row["safe_image"])
        assert after.shape == before.shape, name
        if row["privacy_flag"]:  # flagged rows never keep their original pixels
            assert not np.array_equal(after, before), name
        else:
            assert np.array_equal(after, before), name
    flagged = {o["image"]["path"].rsplit("/", 1)[-1] for o, r in zip(originals, safe, strict=True) if r["privacy_flag"]}
    # Every awkward file showing a face is still seen as one.
    assert {
        "cmyk.jpg",
        "sixteen_bit.png",
        "palette_alpha.png",
        "exif_rotated.jpg",
        "animated.gif",
        "large.jpg",
        "gps.jpg",
        "grey_alpha.png",
    } <= flagged
