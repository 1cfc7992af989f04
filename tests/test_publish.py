"""`u2s publish` and `u2s anonymize --push-to-hub`: a release on the Hub in one commit, behind a gate.

Releases are made by `u2s anonymize` (lite preset, offline) from real photos. The Hub is `hub_server.HubServer`,
spoken to by the real clients: huggingface_hub and datasets read HF_ENDPOINT when imported and this test session
runs offline, so everything that publishes or reads the Hub runs in its own process with `hub.client_env`. A gate
that let something through would therefore reach the server, and `hub.requests` would show it.
"""

import hashlib
import io
import json
import shutil
import subprocess
import sys

import datasets
import pyarrow.parquet as pq
import pytest

from u2s_hf import cli
from u2s_hf.release_card import VERIFIED, hub_card
from u2s_hf.release_folder import MARKER

from hub_server import HubServer

SHARD = "data/train-00000-of-00001.parquet"

# Load a published dataset and its card back; print the rows (images as sha256 of their bytes) and the card.
LOAD = """
import hashlib, json, sys
from datasets import Image, load_dataset
from huggingface_hub import DatasetCard
repo = sys.argv[1]
loaded = load_dataset(repo)
rows = {}
for split, part in loaded.items():
    part = part.cast_column("safe_image", Image(decode=False))
    rows[split] = [{k: (hashlib.sha256(v["bytes"]).hexdigest() if k == "safe_image" and v else v) for k, v in r.items()}
                   for r in part]
card = DatasetCard.load(repo)
print(json.dumps({"rows": rows, "data": card.data.to_dict(), "text": card.text}))
"""


@pytest.fixture(scope="module")
def photo_dir(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "page"):  # a face, nothing to find, printed text
        photos[name].save(folder / f"{name}.jpg")
    return folder


@pytest.fixture(scope="module")
def base(photo_dir, tmp_path_factory):
    """A release folder written by `u2s anonymize`."""
    out = tmp_path_factory.mktemp("releases") / "base"
    assert cli.main(["anonymize", str(photo_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture
def hub():
    with HubServer() as hub:
        yield hub
    assert hub.errors == []


def make_release(base, out, change=None, verified=True):
    """A copy of the release folder `base` at `out`: `u2s_verified` set to `verified` on every row (None: no such
    column, as before Verify runs), then the data passed through `change` (DatasetDict -> DatasetDict)."""
    shutil.copytree(base, out)
    data = datasets.load_from_disk(str(base))
    if VERIFIED in data["train"].column_names:
        data = data.remove_columns(VERIFIED)
    if verified is not None:
        features = datasets.Features({**data["train"].features, VERIFIED: datasets.Value("bool")})
        data = data.map(lambda b: {VERIFIED: [verified] * len(b["u2s_status"])}, batched=True, features=features)
    if change is not None:
        data = change(data)
    shutil.rmtree(out / "train")
    (out / "dataset_dict.json").unlink()
    data.save_to_disk(str(out))
    return out


def u2s(hub, tmp_path, *args):
    """The `u2s` command in its own process, with `hub` as its Hub."""
    command = [sys.executable, "-m", "u2s_hf.cli", *map(str, args)]
    env = hub.client_env(tmp_path / "hf-home")
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def client(hub, tmp_path, script, *args) -> dict:
    """`script` in its own process with `hub` as its Hub; the JSON object it prints last."""
    command = [sys.executable, "-c", script, *map(str, args)]
    done = subprocess.run(
        command, env=hub.client_env(tmp_path / "hf-home"), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def local_rows(folder) -> dict:
    """The rows of a release as LOAD prints the published ones."""
    data = datasets.load_from_disk(str(folder))
    rows = {}
    for split, part in data.items():
        part = part.cast_column("safe_image", datasets.Image(decode=False))
        rows[split] = [
            {k: hashlib.sha256(v["bytes"]).hexdigest() if k == "safe_image" and v else v for k, v in r.items()}
            for r in part
        ]
    return json.loads(json.dumps(rows))  # floats and tuples as JSON gives them back


def section(text: str, title: str) -> str:
    """The body of the card section `title` (up to the next heading)."""
    body = text.split(f"# {title}\n", 1)[1]
    return "\n".join(line for line in body.splitlines() if not line.startswith("<!--")).split("\n#", 1)[0].strip()


def test_publish_then_load_dataset_gives_the_release(base, hub, tmp_path):
    release = make_release(base, tmp_path / "release")
    done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/photos-safe")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "published 3 rows to tester/photos-safe (private)" in done.stdout
    files = hub.files("tester/photos-safe")
    assert set(files) == {".gitattributes", "README.md", "report.json", "contact_sheet.png", SHARD}
    assert files["report.json"] == (release / "report.json").read_bytes()
    assert files["contact_sheet.png"] == (release / "contact_sheet.png").read_bytes()
    images = pq.read_table(io.BytesIO(files[SHARD])).column("safe_image").combine_chunks()
    assert images.field("path").null_count == len(images)  # embedded bytes, no path
    info = hub.repo("tester/photos-safe")
    assert info["private"] and info["gated"] is False and info["commits"] == 2  # the Hub's first commit and ours
    assert [path for method, path in hub.requests if method == "POST" and "/commit/" in path] == [
        "/api/datasets/tester/photos-safe/commit/main"
    ]

    out = client(hub, tmp_path, LOAD, "tester/photos-safe")
    assert out["rows"] == local_rows(release)  # every column, and every image byte for byte
    report = json.loads((release / "report.json").read_text())
    data, text = out["data"], out["text"]
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert data["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": data["dataset_info"]["splits"][0]["num_bytes"], "num_examples": 3}
    ]
    assert data["pretty_name"] == f"{report['source']} (anonymised)" and "anonymized" in data["tags"]
    assert "extra_gated_prompt" not in data and "license" not in data
    status = report["counts"]["train"]["status"]
    statuses = sorted(status)
    table = f"| train | 3 | {report['counts']['train']['flagged']} | " + " | ".join(str(status[s]) for s in statuses)
    assert table in section(text, "Dataset Structure")
    processing = section(text, "Data Collection and Processing")
    assert "CenterFace" in processing and report["models"]["faces"]["sha256"] in processing
    sensitive = section(text, "Personal and Sensitive Information")
    assert sensitive.startswith("The original images are not part of this dataset")
    limits = section(text, "Bias, Risks, and Limitations")
    assert "faces and readable text only" in limits and "tattoos" in limits


def test_public_gated_with_access_prompt_and_an_existing_public_repo_is_kept_public_only_on_request(
    base, hub, tmp_path
):
    release = make_release(base, tmp_path / "release")
    args = ["publish", release, "--repo-id", "tester/open", "--public", "--gated", "manual", "--license", "cc-by-4.0"]
    done = u2s(hub, tmp_path, *args)
    assert done.returncode == 0, done.stderr[-4000:]
    assert hub.repo("tester/open")["private"] is False and hub.repo("tester/open")["gated"] == "manual"
    settings = hub.requests.index(("PUT", "/api/datasets/tester/open/settings"))
    commit = hub.requests.index(("POST", "/api/datasets/tester/open/commit/main"))
    assert settings < commit  # gated before the data lands
    data = client(hub, tmp_path, LOAD, "tester/open")["data"]
    assert data["license"] == "cc-by-4.0"
    assert "anonymised automatically" in data["extra_gated_prompt"] and data["extra_gated_fields"]

    before = hub.files("tester/open")
    done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/open")  # private by default: refused
    assert done.returncode == 2 and "tester/open exists and is public" in done.stderr and "--public" in done.stderr
    assert hub.files("tester/open") == before and hub.repo("tester/open")["commits"] == 2


def test_a_failed_commit_leaves_the_earlier_release_and_says_why(base, hub, tmp_path):
    release = make_release(base, tmp_path / "release")
    assert u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/photos").returncode == 0
    before = hub.files("tester/photos")
    hub.fail_next_commit = True
    done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/photos", "--max-shard-size", "1KB")
    assert done.returncode == 2
    assert "nothing was committed to main" in done.stderr and "injected failure" in done.stderr
    assert any(path.startswith("/lfs-upload/") for _, path in hub.requests)  # it failed midway, after uploading
    assert hub.files("tester/photos") == before and hub.repo("tester/photos")["commits"] == 2


def test_publishing_again_replaces_the_shards_and_keeps_the_users_files(base, hub, tmp_path):
    release = make_release(base, tmp_path / "release")
    for _ in range(2):  # the same release twice: the same three shards
        done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/again", "--max-shard-size", "1KB")
        assert done.returncode == 0, done.stderr[-4000:]
    three = [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert sorted(p for p in hub.files("tester/again") if p.startswith("data/")) == three
    mine = """
import sys
from huggingface_hub import HfApi
api = HfApi()
api.upload_file(path_or_fileobj=b"mine", path_in_repo="notes.txt", repo_id=sys.argv[1], repo_type="dataset")
api.upload_file(path_or_fileobj=b"a,b", path_in_repo="data/mine.csv", repo_id=sys.argv[1], repo_type="dataset")
print("{}")
"""
    client(hub, tmp_path, mine, "tester/again")
    done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/again")
    assert done.returncode == 0, done.stderr[-4000:]
    files = hub.files("tester/again")
    assert sorted(p for p in files if p.startswith("data/")) == ["data/mine.csv", SHARD]
    assert files["notes.txt"] == b"mine"
    assert client(hub, tmp_path, LOAD, "tester/again")["rows"] == local_rows(release)  # 3 rows, not 6


def with_column(name, values, feature):
    return lambda data: data.map(
        lambda b, i: {name: [values[j] for j in i]},
        batched=True,
        with_indices=True,
        features=datasets.Features({**data["train"].features, name: feature}),
    )


def first_image(data):
    """The index of the first row with an image."""
    return next(i for i, status in enumerate(data["train"]["u2s_status"]) if status not in ("error", "dropped"))


def with_path(data):
    """One image cell that carries a path beside its bytes."""
    data = data.cast_column("safe_image", datasets.Image(decode=False))
    row = first_image(data)

    def add_path(b, indices):
        cells = zip(b["safe_image"], indices, strict=True)
        return {"safe_image": [dict(v, path="/home/alice/IMG_0001.jpg") if i == row else v for v, i in cells]}

    return data.map(add_path, batched=True, with_indices=True, features=data["train"].features)


def as_error(data):
    row = first_image(data)
    return data.map(lambda r, i: {"u2s_status": "error" if i == row else r["u2s_status"]}, with_indices=True)


def original_images(data):
    return data.map(lambda b: {"image": b["safe_image"]}, batched=True).cast_column("image", datasets.Image())


def unverified(data):
    return data.map(lambda r, i: {VERIFIED: i == 0}, with_indices=True)  # rows 1 and 2 did not pass


def symlinked_report(folder, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text((folder / "report.json").read_text())
    (folder / "report.json").unlink()
    (folder / "report.json").symlink_to(elsewhere)


def escaping_split(folder, tmp_path):
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["../train"]}))


def many_rows(data):
    return datasets.DatasetDict({"train": datasets.concatenate_datasets([data["train"]] * 40)})


@pytest.mark.parametrize(
    "change, verified, folder_change, extra, message",
    [
        (original_images, True, None, [], "column 'image' holds images or other media; only safe_image may"),
        (with_path, True, None, [], "1 safe_image values carry a file path"),
        (
            with_column("file_name", ["a.jpg", "b.jpg", "c.jpg"], datasets.Value("string")),
            True,
            None,
            [],
            "column 'file_name' holds source file names or paths (--keep-column file_name",
        ),
        (
            with_column("raw", [b"\xff\xd8", b"", None], datasets.Value("binary")),
            True,
            None,
            [],
            "column 'raw' holds raw bytes",
        ),
        (as_error, True, None, [], "1 rows with status error or dropped carry an image (train 1)"),
        (None, None, None, [], "Verify did not run: there is no u2s_verified column"),
        (unverified, True, None, [], "2 rows have u2s_verified False"),
        (None, True, lambda f, t: (f / MARKER).unlink(), [], "has no .u2s-release marker"),
        (None, True, symlinked_report, [], "holds a symbolic link, report.json"),
        (None, True, escaping_split, [], "split names '../train' cannot be file names"),
        (many_rows, True, None, ["--max-shard-size", "1KB"], "needs 123 files and one commit holds at most 100"),
    ],
    ids=[
        "original-image",
        "image-path",
        "path-column",
        "bytes-column",
        "error-with-image",
        "no-verify",
        "unverified",
        "no-marker",
        "symlink",
        "split-name",
        "too-many-files",
    ],
)
def test_the_gate_refuses_before_sending_anything(base, hub, tmp_path, change, verified, folder_change, extra, message):
    release = make_release(base, tmp_path / "release", change=change, verified=verified)
    if folder_change is not None:
        folder_change(release, tmp_path)
    done = u2s(hub, tmp_path, "publish", release, "--repo-id", "tester/refused", *extra)
    assert done.returncode == 2, done.stderr[-4000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "IMG_0001" not in done.stderr  # the refusal does not repeat a path it refuses
    assert hub.requests == []


def test_what_the_gate_lets_through_on_request(base, hub, tmp_path):
    names = with_column("file_name", ["a.jpg", "b.jpg", "c.jpg"], datasets.Value("string"))
    release = make_release(base, tmp_path / "release", change=lambda d: unverified(names(d)))
    args = ["publish", release, "--repo-id", "tester/asked", "--keep-column", "file_name", "--allow-unverified"]
    done = u2s(hub, tmp_path, *args)
    assert done.returncode == 0, done.stderr[-4000:]
    out = client(hub, tmp_path, LOAD, "tester/asked")
    assert [row["file_name"] for row in out["rows"]["train"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert "except `file_name`, kept on purpose" in section(out["text"], "Personal and Sensitive Information")
    limits = section(out["text"], "Bias, Risks, and Limitations")
    assert "2 rows did not pass Verify and were published anyway" in limits
    assert "| verified | not passed | not looked at |" in out["text"] and "| 1 | 2 | 0 |" in out["text"]


def test_push_to_hub_anonymizes_then_publishes(photo_dir, hub, tmp_path):
    out = tmp_path / "out"
    args = ["anonymize", photo_dir, "--out", out, "--push-to-hub", "tester/pushed"]
    done = u2s(hub, tmp_path, *args, "--gated", "auto")
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("u2s: 3 rows -> ") and lines[1].startswith("u2s: published 3 rows to tester/pushed")
    assert (out / MARKER).is_file()
    info = hub.repo("tester/pushed")
    assert info["private"] and info["gated"] == "auto" and info["commits"] == 2
    assert hub.files("tester/pushed")["report.json"] == (out / "report.json").read_bytes()
    assert client(hub, tmp_path, LOAD, "tester/pushed")["rows"] == local_rows(out)


def test_publish_options_need_push_to_hub(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["anonymize", str(photo_dir), "--out", str(out), "--public"]) == 2
    assert "--public is an option of publishing: add --push-to-hub NAME" in capsys.readouterr().err
    assert cli.main(["anonymize", str(photo_dir), "--out", str(out), "--push-to-hub", "no/such/repo"]) == 2
    assert "repo id 'no/such/repo'" in capsys.readouterr().err
    assert not out.exists()  # refused before the run, not after it


PYTHON_API = """
import json, sys
import datasets
import u2s_hf
release, repo = sys.argv[1:]
data = datasets.load_from_disk(release)["train"].train_test_split(test_size=1, shuffle=False)
try:
    u2s_hf.publish(datasets.DatasetDict({"a/b": data["train"]}), repo)
    refused = None
except ValueError as e:
    refused = str(e)
published = u2s_hf.publish(data, repo, commit_message="From Python")
print(json.dumps({"refused": refused, "rows": published.rows, "files": published.files, "private": published.private,
                  "test": [r["u2s_status"] for r in data["test"]], "train": [r["u2s_status"] for r in data["train"]]}))
"""


def test_the_python_api_publishes_a_datasetdict(base, hub, tmp_path):
    release = make_release(base, tmp_path / "release")
    out = client(hub, tmp_path, PYTHON_API, release, "tester/from-python")
    assert "split names 'a/b' cannot be file names" in out["refused"] and "Nothing was sent" in out["refused"]
    # the refusal sent nothing: the first request is the publish's own first look at the repo
    assert hub.requests[0] == ("GET", "/api/datasets/tester/from-python")
    assert out["rows"] == 3 and out["private"]
    shards = ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert out["files"] == ["README.md", *shards]  # no report.json or contact sheet: a Dataset has none
    assert set(hub.files("tester/from-python")) == {".gitattributes", "README.md", *shards}
    assert hub.repo("tester/from-python")["messages"][-1] == "From Python"
    loaded = client(hub, tmp_path, LOAD, "tester/from-python")
    assert [r["u2s_status"] for r in loaded["rows"]["train"]] == out["train"]
    assert [r["u2s_status"] for r in loaded["rows"]["test"]] == out["test"]
    assert "no `report.json` or contact sheet came with it" in section(loaded["text"], "Dataset Description")
    assert section(loaded["text"], "Data Collection and Processing").startswith("Not recorded")


def card_of(base, summary_change=None, source=None):
    summary = json.loads((base / "report.json").read_text())
    if source is not None:
        summary["source"] = source
    if summary_change:
        summary_change(summary)
    return hub_card(datasets.load_from_disk(str(base)), summary, "tester/card")


def test_the_card_renders_verify_and_says_when_identity_was_not_checked(base):
    verify = {
        "identity_model": None,
        "looked_at": 3,
        "passed": 2,
        "re_edited": 1,
        "obscured": 0,
        "dropped": 0,
        "identity_not_checked": 1,
    }
    text = card_of(base, lambda s: s.update(verify=dict(verify)))
    sensitive = section(text, "Personal and Sensitive Information")
    assert "Verify" in sensitive and "identity not checked" in sensitive
    for line in ("- rows looked at: 3", "- passed: 2", "- edited again: 1", "- obscured whole: 0", "- dropped: 0"):
        assert line in sensitive
    assert "Verify did not check identity" in section(text, "Bias, Risks, and Limitations")
    checked = card_of(base, lambda s: s.update(verify={**verify, "identity_model": "antelopev2", "looked_at": 7}))
    assert "identity checked with antelopev2" in checked and "identity not checked" not in checked
    assert "- rows looked at: 7" in checked
    redacted_only = card_of(base, lambda s: s.update(verify={**verify, "identity_not_checked": 0}))
    assert "no row needed an identity check" in redacted_only and "did not check identity" not in redacted_only
    without = card_of(base, lambda s: s.pop("verify", None))
    assert "Verify" not in section(without, "Personal and Sensitive Information")  # no verify key: no summary


def test_the_card_escapes_what_comes_from_the_source(base):
    text = card_of(base, source="<img src=x onerror=alert(1)>\n# Heading")
    assert "<img" not in text and "\n# Heading" not in text
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
