"""ScoreEdit: s_norm = CLIP(c_pub, safe_image) / CLIP(c_pub, image), checked against open_clip computed here."""

import dataclasses

import datasets
import pytest
import torch
import torch.nn.functional as F
from datasets.fingerprint import Hasher

import u2s_hf as u2s
from u2s_hf import scoring
from u2s_hf.stages.score_edit import MARK

import tiny_models

torch.set_num_threads(1)
CAPTIONS = [
    "a person in a space suit",
    "a cup of coffee on a table",
    "a cat lying on a rug",
    "an old photo of a woman",
    "a rocket on its launch pad",
    "a man holding a camera",
    "a printed page of text",
    "a red brick wall",
]
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "safe_image": datasets.Image(),
        "c_pub": datasets.Value("string"),
        "c_priv": datasets.Value("string"),
        "u2s_status": datasets.Value("string"),
        "u2s_error": datasets.Value("string"),
    }
)


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    torch.manual_seed(1)  # the same random tiny model in every run: its cosines take both signs (scored_pairs)
    return tiny_models.open_clip_model(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture(scope="module")
def small(photos):
    return {name: photo.convert("RGB").resize((64, 64)) for name, photo in photos.items()}


def cosines(model_id, pictures, texts):
    """The open_clip cosine of each picture with its text, computed with open_clip's own API."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(model_id)
    tokenizer = open_clip.get_tokenizer(model_id)
    with torch.no_grad():
        image = F.normalize(model.encode_image(torch.stack([preprocess(p) for p in pictures])), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    return (image * text).sum(-1).tolist()


def rows(small, pairs, **columns) -> datasets.Dataset:
    """A dataset of (original, edited, caption) rows; other columns None unless given."""
    n = len(pairs)
    data = {
        "image": [small[a] if a else None for a, _, _ in pairs],
        "safe_image": [small[b] if b else None for _, b, _ in pairs],
        "c_pub": [caption for _, _, caption in pairs],
        "c_priv": [None] * n,
        "u2s_status": ["edited"] * n,
        "u2s_error": [None] * n,
    }
    return datasets.Dataset.from_dict({**data, **columns}, features=FEATURES)


def scored_pairs(small, clip_model):
    """Pairs whose s_norm is defined (the original's cosine with its caption > 0), and one whose original's cosine
    is <= 0, picked by computing every cosine directly."""
    originals = [small["astronaut"]] * len(CAPTIONS) + [small["coffee"]] * len(CAPTIONS)
    found = cosines(clip_model, originals, CAPTIONS * 2)
    positive = [i for i, value in enumerate(found) if value > 0]
    negative = [i for i, value in enumerate(found) if value <= 0]
    assert len(positive) >= 3 and negative, found  # the seeded tiny model gives both signs
    name = lambda i: "astronaut" if i < len(CAPTIONS) else "coffee"  # noqa: E731
    edits = ["chelsea", "grace_hopper", "page"]
    good = [(name(i), edit, CAPTIONS[i % len(CAPTIONS)]) for i, edit in zip(positive, edits, strict=False)]
    bad = (name(negative[0]), "name_card", CAPTIONS[negative[0] % len(CAPTIONS)])
    return good, bad


def test_s_norm_is_the_ratio_of_open_clip_cosines(small, clip_model):
    good, bad = scored_pairs(small, clip_model)
    ds = rows(small, [*good, bad]).map(u2s.ScoreEdit(clip_model=clip_model), batched=True)
    before = cosines(clip_model, [small[a] for a, _, _ in good], [c for _, _, c in good])
    after = cosines(clip_model, [small[b] for _, b, _ in good], [c for _, _, c in good])
    expected = [edit / original for original, edit in zip(before, after, strict=True)]
    assert ds["s_norm"][:3] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert len(set(ds["s_norm"][:3])) == 3  # three different edits, three different scores
    assert ds["s_norm"][3] is None
    assert ds["u2s_error"][3].startswith(MARK + "the original's CLIP cosine with its caption is -")
    assert ds["u2s_error"][:3] == [None] * 3
    assert ds["u2s_status"] == ["edited"] * 4  # it measures, it does not decide
    assert ds.features["s_norm"] == datasets.Value("float64")


def test_an_unchanged_image_scores_one_and_swapped_columns_the_inverse(small, clip_model):
    good, _ = scored_pairs(small, clip_model)
    original, edit, caption = good[0]
    ds = rows(small, [(original, original, caption), (original, edit, caption)])
    same, s_norm = ds.map(u2s.ScoreEdit(clip_model=clip_model), batched=True)["s_norm"]
    assert same == pytest.approx(1.0, abs=1e-6)
    swapped = u2s.ScoreEdit(clip_model=clip_model, image_column="safe_image", output_column="image")
    after = cosines(clip_model, [small[edit]], [caption])[0]
    inverse = ds.map(swapped, batched=True)["s_norm"][1]
    if after > 0:
        assert inverse == pytest.approx(1 / s_norm, rel=1e-4)
    else:  # the edit is now the "original", and its cosine is not above 0
        assert inverse is None


def test_rows_without_a_caption_or_an_image_get_none_and_a_reason(small, clip_model):
    good, _ = scored_pairs(small, clip_model)
    original, edit, caption = good[0]
    pairs = [
        (original, edit, None),
        (original, edit, "   "),
        (None, edit, caption),
        (original, None, caption),
        (original, edit, caption),
        (original, edit, caption),
        (original, edit, caption),
    ]
    ds = rows(
        small,
        pairs,
        u2s_status=["edited", "edited", "edited", "error", "redacted", "error", "edited"],
        u2s_error=[None, None, None, "edit: image unreadable", "no prompt to edit with", "caption failed", None],
    )
    broken = {"bytes": b"this is not an image", "path": None}
    ds = ds.cast_column("safe_image", datasets.Image(decode=False))
    ds = ds.map(lambda row, i: {"safe_image": broken} if i == 6 else {}, with_indices=True)
    out = ds.map(u2s.ScoreEdit(clip_model=clip_model), batched=True)
    assert out["s_norm"][:4] == [None] * 4 and out["s_norm"][6] is None
    assert out["s_norm"][4] is not None and out["s_norm"][5] == pytest.approx(out["s_norm"][4])
    errors = out["u2s_error"]
    assert errors[0] == errors[1] == MARK + "no caption (c_pub)"
    assert errors[2] == MARK + "no original image (image)"
    assert errors[3] == "edit: image unreadable; " + MARK + "no edited image (safe_image)"
    assert errors[4] == "no prompt to edit with" and errors[5] == "caption failed"  # scored, reasons kept
    assert errors[6].startswith(MARK + "edited image: ")
    assert out["u2s_status"] == ["edited", "edited", "edited", "error", "redacted", "error", "edited"]


def test_the_same_values_whatever_the_batching(small, clip_model):
    good, bad = scored_pairs(small, clip_model)
    ds = rows(small, [*good, bad, *good, (good[0][0], None, good[0][2])])
    reference = ds.map(u2s.ScoreEdit(clip_model=clip_model), batched=True)["s_norm"]
    assert sum(value is not None for value in reference) == 6
    for batch_size, clip_batch in ((1, 32), (3, 2), (8, 1)):
        stage = u2s.ScoreEdit(clip_model=clip_model, batch_size=clip_batch)
        out = ds.map(stage, batched=True, batch_size=batch_size, num_proc=1)["s_norm"]
        assert [v is None for v in out] == [v is None for v in reference]
        assert [v for v in out if v is not None] == pytest.approx([v for v in reference if v is not None], rel=1e-5)


def test_the_cache_fingerprint_covers_the_model_and_the_columns(small, clip_model, tmp_path):
    good, _ = scored_pairs(small, clip_model)
    ds = rows(small, good, c_priv=["a blue sky"] * len(good))
    ds.save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))  # on disk: map results are cached
    other_model = tiny_models.open_clip_model(tmp_path / "other")
    stages = {
        "base": u2s.ScoreEdit(clip_model=clip_model),
        "model": u2s.ScoreEdit(clip_model=other_model),
        "caption": u2s.ScoreEdit(clip_model=clip_model, caption_column="c_priv"),
        "images": u2s.ScoreEdit(clip_model=clip_model, image_column="safe_image", output_column="image"),
    }
    assert dataclasses.asdict(stages["model"].config)["clip_model"] == other_model
    assert dataclasses.asdict(stages["caption"].config)["caption_column"] == "c_priv"
    maps = {name: ds.map(stage, batched=True) for name, stage in stages.items()}
    assert len({m._fingerprint for m in maps.values()}) == len(maps)
    assert len({m.cache_files[0]["filename"] for m in maps.values()}) == len(maps)
    for name in ("model", "caption", "images"):
        assert maps[name]["s_norm"] != maps["base"]["s_norm"], name
    again = ds.map(u2s.ScoreEdit(clip_model=clip_model), batched=True)
    assert again.cache_files == maps["base"].cache_files  # the same settings: a cache hit
    assert Hasher.hash(u2s.ScoreEdit(clip_model=clip_model)) == Hasher.hash(stages["base"])


def test_settings(clip_model):
    assert u2s.ScoreEditConfig().clip_model == scoring.PAPER_CLIP
    config = u2s.ScoreEdit().config
    assert (config.caption_column, config.image_column, config.output_column) == ("c_pub", "image", "safe_image")
    with pytest.raises(ValueError, match="batch_size"):
        u2s.ScoreEdit(batch_size=0)
    with pytest.raises(ValueError, match="clip_model"):
        u2s.ScoreEdit(clip_model="")
    with pytest.raises(TypeError, match="no_such_setting"):
        u2s.ScoreEdit(no_such_setting=1)
    with pytest.raises(KeyError, match="c_pub"):
        u2s.ScoreEdit(clip_model=clip_model)({"image": [None], "safe_image": [None]})
