"""`u2s.anonymize` and the stages over a streamed dataset (`IterableDataset`): the same rows, values, bytes and
column order as over a Dataset, worked on lazily, with the same fail-closed rules."""

import datasets
import pytest

import u2s_hf as u2s

import corpus

NAMES = ("coffee", "astronaut", "name_card", "chelsea", "grace_hopper")


@pytest.fixture(scope="module")
def sample(photos):
    ds = corpus.image_dataset({name: photos[name] for name in NAMES})
    # a path column (left out of the release view) and a corrupt image (an error row, not a crashed stream)
    ds = ds.add_column("file_name", [f"/data/{name}.jpg" for name in ds["name"]])
    corrupt = {"name": "corrupt", "image": {"bytes": b"\xff\xd8 not a jpeg", "path": None}, "file_name": "x.jpg"}
    return datasets.concatenate_datasets([ds, datasets.Dataset.from_list([corrupt], features=ds.features)])


def stored(ds) -> list[dict]:
    """Every row as stored (image columns undecoded: their bytes), in order."""
    images = [name for name, feature in ds.features.items() if isinstance(feature, datasets.Image)]
    for name in images:
        ds = ds.cast_column(name, datasets.Image(decode=False))
    return list(ds)


def test_a_streamed_dataset_gives_the_same_rows_bytes_and_columns(sample):
    whole = u2s.anonymize(sample, batch_size=2)
    streamed = u2s.anonymize(sample.to_iterable_dataset(num_shards=2), batch_size=2)
    assert isinstance(streamed, datasets.IterableDataset)
    assert streamed.features == whole.features  # known before a row is read, in the same order
    assert list(streamed.features) == whole.column_names
    assert stored(streamed) == stored(whole)
    statuses = {row["name"]: row["u2s_status"] for row in stored(streamed)}
    assert statuses["corrupt"] == "error" and statuses["astronaut"] == "redacted"
    assert statuses["coffee"] == "kept_safe"


def test_rows_are_read_and_worked_on_as_they_are_asked_for(sample):
    read = []

    def rows():
        for row in sample.cast_column("image", datasets.Image(decode=False)):
            read.append(row["name"])
            yield row

    streamed = datasets.IterableDataset.from_generator(rows, features=sample.features)
    safe = u2s.anonymize(streamed, batch_size=2)
    assert read == []  # nothing read before the first row is asked for
    first = next(iter(safe))
    assert first["name"] == "coffee" and read == ["coffee", "astronaut"]  # one batch, no more


def test_a_path_only_cell_is_read_only_from_the_image_root(tmp_path, photos):
    photos["astronaut"].save(tmp_path / "astronaut.png")
    (tmp_path / "outside").mkdir()
    photos["astronaut"].save(tmp_path / "outside" / "astronaut.png")
    cells = [{"bytes": None, "path": str(tmp_path / "astronaut.png")}]
    cells.append({"bytes": None, "path": str(tmp_path / "outside" / "astronaut.png")})
    ds = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    streamed = ds.to_iterable_dataset()
    unread = list(u2s.anonymize(streamed))
    assert [row["u2s_status"] for row in unread] == ["error", "error"]
    assert all("not read" in row["u2s_error"] for row in unread)
    inside = tmp_path / "inside"
    inside.mkdir()
    (tmp_path / "astronaut.png").rename(inside / "astronaut.png")
    cells[0]["path"] = str(inside / "astronaut.png")
    ds = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    read = list(u2s.anonymize(ds.to_iterable_dataset(), image_root=str(inside)))
    assert [row["u2s_status"] for row in read] == ["redacted", "error"]


def test_stages_map_over_a_streamed_dataset(sample):
    ds = sample.select(range(3))
    whole = ds.map(u2s.inspect, batched=True, batch_size=2)
    streamed = ds.to_iterable_dataset().map(u2s.inspect, batched=True, batch_size=2)
    assert [row["privacy_flag"] for row in streamed] == whole["privacy_flag"]
    # the same detections; a Dataset stores them as float32, a stream hands on the detector's floats
    for found, stored_found in zip((row["detections"] for row in streamed), whole["detections"], strict=True):
        assert [d["label"] for d in found] == [d["label"] for d in stored_found]
        for d, stored_d in zip(found, stored_found, strict=True):
            assert d["box"] == pytest.approx(stored_d["box"], rel=1e-6)


def test_a_streamed_dataset_with_unknown_features_or_columns_is_refused_before_reading(sample):
    unknown = sample.to_iterable_dataset().map(lambda row: row)  # features unknown after a map
    with pytest.raises(ValueError, match="features are unknown"):
        u2s.anonymize(unknown)
    with pytest.raises(ValueError, match="not found"):
        u2s.anonymize(sample.to_iterable_dataset(), image_column="photo")
    with pytest.raises(ValueError, match="keep_columns"):
        u2s.anonymize(sample.to_iterable_dataset(), keep_columns=["nope"])


def test_a_streamed_dataset_dict_keeps_its_splits(sample):
    streamed = datasets.IterableDatasetDict(
        {"train": sample.to_iterable_dataset(), "test": sample.to_iterable_dataset()}
    )
    safe = u2s.anonymize(streamed, batch_size=4)
    assert isinstance(safe, datasets.IterableDatasetDict) and set(safe) == {"train", "test"}
    assert [row["name"] for row in safe["test"]] == sample["name"]
