"""The Ray Data engine on a real local Ray cluster: the rows, statuses and image bytes of the `datasets` path, error
rows kept as errors, a worker killed mid-run retried by Ray without losing or duplicating rows, and the same release
folder as `u2s anonymize`."""

import io
import json
import os
import signal

import datasets
import pytest
import ray

from u2s_hf import cli, pipeline
from u2s_hf import ray as u2s_ray
from u2s_hf.release_folder import MARKER

COMPARED = ("privacy_flag", "detections", "u2s_status", "u2s_error", "u2s_verified")
BATCH = 2


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sample(photos, tmp_path_factory) -> datasets.Dataset:
    """A face, a name card, a photo without either, and a corrupt file; `file_name` is a path column."""
    cells = {name: _jpeg(photos[name]) for name in ("astronaut", "name_card", "coffee")}
    cells["corrupt"] = cells["astronaut"][:200] + b"\x00" * 4000
    return datasets.Dataset.from_dict(
        {
            "name": list(cells),
            "file_name": [f"/home/someone/{name}.jpg" for name in cells],
            "image": [{"bytes": data, "path": None} for data in cells.values()],
        },
        features=datasets.Features(
            {"name": datasets.Value("string"), "file_name": datasets.Value("string"), "image": datasets.Image()}
        ),
    )


@pytest.fixture(scope="module")
def image_folder(sample, tmp_path_factory):
    """The sample as an image folder (names in metadata.csv), with a file `datasets` does not load."""
    folder = tmp_path_factory.mktemp("folder") / "photos"
    folder.mkdir()
    for row in sample.cast_column("image", datasets.Image(decode=False)):
        (folder / f"{row['name']}.jpg").write_bytes(row["image"]["bytes"])
    (folder / "metadata.csv").write_text("file_name,name\n" + "".join(f"{n}.jpg,{n}\n" for n in sample["name"]))
    (folder / "drawing.svg").write_text("<svg/>")
    return folder


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    """The release of the `datasets` path, written by the CLI."""
    out = tmp_path_factory.mktemp("reference") / "release"
    assert cli.main(["anonymize", str(image_folder), "--out", str(out), "--batch-size", str(BATCH)]) == 0
    return out


@pytest.fixture(scope="module")
def reference_rows(reference) -> list[dict]:
    safe = datasets.load_from_disk(str(reference))["train"]
    return list(safe.cast_column("safe_image", datasets.Image(decode=False)))


@pytest.fixture(scope="module")
def ray_release(cluster, image_folder, tmp_path_factory):
    """The release of `u2s anonymize --engine ray` (on the cluster this process is connected to); the image files
    are read on the driver."""
    out = tmp_path_factory.mktemp("ray") / "release"
    args = ["anonymize", str(image_folder), "--out", str(out), "--engine", "ray", "--batch-size", str(BATCH)]
    assert cli.main(args) == 0
    return out


@pytest.fixture(scope="module")
def ray_rows(cluster, sample, tmp_path_factory) -> list[dict]:
    """`u2s_hf.ray.anonymize` over a Parquet file of the sample."""
    parquet = tmp_path_factory.mktemp("parquet") / "photos.parquet"
    sample.to_parquet(str(parquet))
    return u2s_ray.anonymize(str(parquet), batch_size=BATCH).take_all()


def test_rows_statuses_and_bytes_are_the_datasets_path_s(ray_rows, sample, reference_rows):
    assert [row["name"] for row in ray_rows] == sample["name"]  # the source's order
    # the datasets path's columns, in its order: no image, no file_name
    assert list(ray_rows[0]) == [
        "name",
        "privacy_flag",
        "detections",
        "u2s_status",
        "u2s_error",
        "safe_image",
        "u2s_verified",
    ]
    assert_same_rows(ray_rows, reference_rows)
    assert {row["u2s_status"] for row in ray_rows} == {"redacted", "kept_safe", "error"}  # every kind of row


def test_a_failing_row_stays_a_failing_row(ray_rows):
    rows = {row["name"]: row for row in ray_rows}
    corrupt = rows["corrupt"]
    assert corrupt["u2s_status"] == "error" and corrupt["u2s_error"]
    assert corrupt["privacy_flag"] and corrupt["safe_image"] is None and corrupt["u2s_verified"] is False
    assert rows["coffee"]["u2s_status"] == "kept_safe"  # its batch neighbour went on


def test_a_killed_worker_is_retried_without_losing_or_duplicating_rows(cluster, sample, reference_rows, tmp_path):
    marker = tmp_path / "killed"
    lite = pipeline.preset("lite")
    rows = ray.data.from_arrow(_blocks(sample, 1))
    for stage in (lite.inspect, _killed_once(lite.edit, marker, "name_card"), lite.verify):
        rows = u2s_ray.map_stage(rows, stage, batch_size=1)
    out = rows.drop_columns(["image", "file_name"]).take_all()
    assert marker.exists()  # the Edit actor that took name_card's batch was killed
    assert sorted(row["name"] for row in out) == sorted(sample["name"])
    assert_same_rows(out, reference_rows)


def test_the_release_folder_is_the_datasets_path_s(ray_release, reference):
    ours, theirs = datasets.load_from_disk(str(ray_release)), datasets.load_from_disk(str(reference))
    assert type(ours) is type(theirs) is datasets.DatasetDict and ours.keys() == theirs.keys() == {"train"}
    ours, theirs = ours["train"], theirs["train"]
    assert list(ours.features.items()) == list(theirs.features.items())  # read files add u2s_status first
    assert ours["name"] == theirs["name"]
    plain = datasets.Image(decode=False)
    assert_same_rows(list(ours.cast_column("safe_image", plain)), list(theirs.cast_column("safe_image", plain)))
    report, expected = (json.loads((path / "report.json").read_text()) for path in (ray_release, reference))
    for key in ("source", "skipped_files", "preset", "stages", "models", "counts", "verify"):
        assert report[key] == expected[key], key
    assert report["timings_s"] == {"train": {"ray": report["timings_s"]["train"]["ray"]}}
    assert report["skipped_files"] == 1 and report["versions"]["ray"] == ray.__version__
    assert sorted(p.name for p in ray_release.iterdir()) == sorted(p.name for p in reference.iterdir())
    for name in ("contact_sheet.png", "README.md", MARKER):
        assert (ray_release / name).is_file(), name


def test_only_stages_that_run_a_model_here_ask_for_gpus():
    paper, lite = pipeline.preset("paper"), pipeline.preset("lite")
    assert [u2s_ray._on_gpu(stage) for stage in paper.stages] == [True, True, True, True, False]
    assert not any(u2s_ray._on_gpu(stage) for stage in lite.stages)
    served = pipeline.preset("paper", caption={"backend": "server", "base_url": "http://h:8000/v1", "model": "m"})
    assert not u2s_ray._on_gpu(served.caption)


def assert_same_rows(got: list[dict], expected: list[dict]):
    """The same rows, matched by name (each name once): the same privacy columns and the same safe_image bytes."""
    got, expected = _by_name(got), _by_name(expected)
    assert got.keys() == expected.keys()
    for name, row in expected.items():
        for column in COMPARED:
            assert got[name][column] == row[column], (name, column)
        assert _bytes(got[name]["safe_image"]) == _bytes(row["safe_image"]), name


def _by_name(rows: list[dict]) -> dict:
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), names
    return dict(zip(names, rows, strict=True))


def _bytes(cell):
    return None if cell is None else cell["bytes"]


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _blocks(ds: datasets.Dataset, rows: int) -> list:
    table = ds.cast_column("image", datasets.Image(decode=False)).with_format("arrow")[:]
    return [table.slice(start, rows) for start in range(0, len(table), rows)]


def _killed_once(stage, marker, name):
    """`stage`, but the process that first gets the batch holding row `name` is killed (SIGKILL, as `kill -9`:
    no exception, no cleanup) after leaving `marker`; the actor Ray restarts in its place runs it."""

    class KilledOnce(type(stage)):
        def __call__(self, batch, rank=None):
            if name in batch["name"] and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch, rank)

    killed = KilledOnce.__new__(KilledOnce)
    killed.config = stage.config
    return killed
