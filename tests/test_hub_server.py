"""The fake Hub speaks the protocol of the real clients: huggingface_hub and datasets upload to it and read back.

The clients read HF_ENDPOINT and the offline switches when imported, and this test session runs offline, so each
client runs in its own Python process with the environment of `HubServer.client_env` and prints one JSON line.
"""

import base64
import hashlib
import json
import subprocess
import sys
import urllib.request
from urllib.error import HTTPError

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub_server import HubServer

UPLOAD_AND_DOWNLOAD = """
import hashlib, json, sys
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
repo, folder = sys.argv[1:]
api = HfApi()
url = api.create_repo(repo, repo_type="dataset", private=True)
api.upload_file(path_or_fileobj=b"hello\\n", path_in_repo="notes.txt", repo_id=repo, repo_type="dataset")
api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset", commit_message="Add data")
names = ["notes.txt", "data/train.parquet", "big.csv"]
got = {name: open(hf_hub_download(repo, name, repo_type="dataset"), "rb").read() for name in names}
try:
    api.dataset_info(repo, token=False)
    anonymous = "visible"
except RepositoryNotFoundError:
    anonymous = "not found"
print(json.dumps({"repo_id": url.repo_id, "repo_type": url.repo_type, "anonymous": anonymous,
                  "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in got.items()}}))
"""

PUSH_AND_LOAD = """
import io, json, sys
from PIL import Image as Picture
from datasets import Dataset, Image, load_dataset
def png(colour):
    out = io.BytesIO()
    Picture.new("RGB", (8, 6), colour).save(out, format="PNG")
    return out.getvalue()
pngs = [png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))]
rows = {"image": [{"bytes": data, "path": None} for data in pngs], "label": [0, 1, 2]}
Dataset.from_dict(rows).cast_column("image", Image()).push_to_hub(sys.argv[1], private=True)
back = load_dataset(sys.argv[1], split="train").cast_column("image", Image(decode=False))
print(json.dumps({"labels": list(back["label"]), "same_bytes": [row["image"]["bytes"] == data
                                                               for row, data in zip(back, pngs)]}))
"""

GATE = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError
api = HfApi()
api.create_repo(sys.argv[1], repo_type="dataset", private=False)
api.upload_file(path_or_fileobj=b"rows", path_in_repo="rows.txt", repo_id=sys.argv[1], repo_type="dataset")
api.update_repo_settings(sys.argv[1], repo_type="dataset", gated="manual")
try:
    hf_hub_download(sys.argv[1], "rows.txt", repo_type="dataset", token=False)
    anonymous = "downloaded"
except GatedRepoError:
    anonymous = "gated"
print(json.dumps({"gated": api.dataset_info(sys.argv[1]).gated, "anonymous": anonymous}))
"""

FAILED_COMMIT = """
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
repo, folder = sys.argv[1:]
api = HfApi()
api.create_repo(repo, repo_type="dataset", private=True)
try:
    api.upload_folder(folder_path=folder, repo_id=repo, repo_type="dataset")
    status = None
except HfHubHTTPError as e:
    status = e.response.status_code
api.upload_file(path_or_fileobj=b"again", path_in_repo="again.txt", repo_id=repo, repo_type="dataset")
print(json.dumps({"status": status}))
"""

CARD = """
import json, sys
from huggingface_hub import DatasetCard, HfApi
card = b"---\\nlicense: cc-by-4.0\\npretty_name: Faces removed\\n---\\n# Faces removed\\n\\nAnonymised photos.\\n"
api = HfApi()
api.create_repo(sys.argv[1], repo_type="dataset", private=True)
api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=sys.argv[1], repo_type="dataset")
card = DatasetCard.load(sys.argv[1])
print(json.dumps({"license": card.data.license, "pretty_name": card.data.pretty_name, "text": card.text}))
"""

COMMIT_RULES = """
import json, sys
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
api, repo = HfApi(), sys.argv[1]
api.create_repo(repo, repo_type="dataset")
first = api.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id=repo, repo_type="dataset").oid
api.upload_file(path_or_fileobj=b"2", path_in_repo="two.txt", repo_id=repo, repo_type="dataset")
try:  # the branch moved on since `first`: the Hub refuses a commit built on a stale parent
    api.create_commit(repo, [CommitOperationAdd("three.txt", b"3")], commit_message="late", repo_type="dataset",
                      parent_commit=first)
    stale = None
except HfHubHTTPError as e:
    stale = e.response.status_code
pr = api.create_commit(repo, [CommitOperationAdd("four.txt", b"4")], commit_message="proposal", repo_type="dataset",
                       create_pr=True)
print(json.dumps({"stale": stale, "pr_revision": pr.pr_revision, "pr_num": pr.pr_num}))
"""


@pytest.fixture
def hub():
    with HubServer() as hub:
        yield hub
    assert hub.errors == []


def client(hub, tmp_path, script, *args) -> dict:
    """Runs `script` in a fresh Python whose Hub is `hub`; returns the JSON object it prints last."""
    command = [sys.executable, "-c", script, *map(str, args)]
    env = hub.client_env(tmp_path / "hf-home")
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def data_folder(tmp_path):
    """A small binary parquet file and a text file of more than 10 MB: both must go through LFS."""
    folder = tmp_path / "release"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"label": list(range(100))}), folder / "data" / "train.parquet")
    (folder / "big.csv").write_bytes(b"id,label\n" + b"1,cat\n" * (2 * 1024 * 1024))
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_then_download_with_huggingface_hub(hub, tmp_path):
    folder = data_folder(tmp_path)
    out = client(hub, tmp_path, UPLOAD_AND_DOWNLOAD, "tester/release", folder)
    assert out["repo_id"] == "tester/release" and out["repo_type"] == "dataset"
    local = {
        "notes.txt": b"hello\n",
        "data/train.parquet": (folder / "data" / "train.parquet").read_bytes(),
        "big.csv": (folder / "big.csv").read_bytes(),
    }
    assert out["sha256"] == {name: sha256(data) for name, data in local.items()}
    published = hub.files("tester/release")
    assert published.pop(".gitattributes") and published == local
    info = hub.repo("tester/release")
    assert info["private"] and info["commits"] == 3 and info["messages"][-1] == "Add data"
    assert info["lfs"] == ["big.csv", "data/train.parquet"]  # the parquet by its type, the csv by its size
    uploads = {path for method, path in hub.requests if method == "PUT" and path.startswith("/lfs-upload/")}
    assert uploads == {f"/lfs-upload/{sha256(local[name])}" for name in ("big.csv", "data/train.parquet")}
    assert out["anonymous"] == "not found"  # a private repo is hidden from a client without a token


def test_push_to_hub_then_load_dataset(hub, tmp_path):
    out = client(hub, tmp_path, PUSH_AND_LOAD, "tester/photos")
    assert out == {"labels": [0, 1, 2], "same_bytes": [True, True, True]}
    files = hub.files("tester/photos")
    assert set(files) == {".gitattributes", "README.md", "data/train-00000-of-00001.parquet"}
    assert b"num_examples: 3" in files["README.md"]
    info = hub.repo("tester/photos")
    assert info["private"] and info["lfs"] == ["data/train-00000-of-00001.parquet"]


def test_gating_is_recorded_and_keeps_anonymous_downloads_out(hub, tmp_path):
    out = client(hub, tmp_path, GATE, "tester/gated")
    assert out == {"gated": "manual", "anonymous": "gated"}
    assert hub.repo("tester/gated")["gated"] == "manual"
    assert ("PUT", "/api/datasets/tester/gated/settings") in hub.requests


def test_a_failed_commit_publishes_nothing(hub, tmp_path):
    hub.fail_next_commit = True
    out = client(hub, tmp_path, FAILED_COMMIT, "tester/broken", data_folder(tmp_path))
    assert out == {"status": 500}
    assert any(path.startswith("/lfs-upload/") for _, path in hub.requests)  # the content went up ...
    info = hub.repo("tester/broken")  # ... yet the failed commit left the repo as the next one found it
    assert info["messages"] == ["initial commit", "Upload again.txt with huggingface_hub"] and info["lfs"] == []
    assert set(hub.files("tester/broken")) == {".gitattributes", "again.txt"}
    assert not hub.fail_next_commit  # the switch fails one commit only


def test_dataset_card_reads_the_readme_pushed(hub, tmp_path):
    out = client(hub, tmp_path, CARD, "tester/card")
    assert out == {
        "license": "cc-by-4.0",
        "pretty_name": "Faces removed",
        "text": "# Faces removed\n\nAnonymised photos.\n",
    }
    assert ("POST", "/api/validate-yaml") in hub.requests


def test_stale_parents_and_pull_requests(hub, tmp_path):
    out = client(hub, tmp_path, COMMIT_RULES, "tester/rules")
    assert out == {"stale": 412, "pr_revision": "refs/pr/1", "pr_num": 1}
    assert set(hub.files("tester/rules")) == {".gitattributes", "one.txt", "two.txt"}
    assert set(hub.files("tester/rules", "refs/pr/1")) == {".gitattributes", "one.txt", "two.txt", "four.txt"}


def call(hub, method, path, body=b"", token=True, headers=None) -> tuple[int, bytes, dict]:
    """One raw request, for the rules the clients never break on their own."""
    auth = {"Authorization": f"Bearer {hub.token}"} if token else {}
    request = urllib.request.Request(hub.url + path, body, {**auth, **(headers or {})}, method=method)
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def commit_body(*operations) -> bytes:
    lines = [{"key": "header", "value": {"summary": "raw", "description": ""}}, *operations]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_raw_rules_tokens_atomic_commits_and_ranges(hub):
    create = json.dumps({"name": "raw", "organization": "tester", "type": "dataset", "visibility": "private"})
    assert call(hub, "POST", "/api/repos/create", create.encode(), token=False)[0] == 401
    assert call(hub, "POST", "/api/repos/create", create.encode())[0] == 200
    assert call(hub, "POST", "/api/repos/create", create.encode())[0] == 409
    add = {"key": "file", "value": {"path": "a.txt", "content": base64.b64encode(b"0123456789").decode()}}
    commit = "/api/datasets/tester/raw/commit/main"
    assert call(hub, "POST", commit, commit_body(add), token=False)[0] == 401
    unknown_lfs = {"key": "lfsFile", "value": {"path": "b.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}}
    assert call(hub, "POST", commit, commit_body(add, unknown_lfs))[0] == 422
    missing = {"key": "deletedFile", "value": {"path": "nowhere.txt"}}
    status, _, headers = call(hub, "POST", commit, commit_body(add, missing))
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    assert set(hub.files("tester/raw")) == {".gitattributes"}  # neither commit applied its first operation
    assert call(hub, "POST", commit, commit_body(add))[0] == 200
    resolve = "/datasets/tester/raw/resolve/main/a.txt"
    assert call(hub, "GET", resolve, token=False)[0] == 401
    assert call(hub, "GET", resolve, headers={"Range": "bytes=2-4"})[:2] == (206, b"234")
    status, _, headers = call(hub, "GET", "/api/datasets/tester/raw/tree/main/data")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    assert call(hub, "GET", "/api/datasets/tester/raw", token=False)[2]["X-Error-Code"] == "RepoNotFound"
    assert call(hub, "GET", "/api/datasets/tester/raw", headers={"Authorization": "Bearer wrong"})[0] == 401
