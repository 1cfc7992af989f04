"""A small in-process HTTP server that speaks the part of the Hugging Face Hub API that `huggingface_hub` and
`datasets` use to create repos, upload to them and read them back, so that publishing can be tested end to end
against the real clients: point `HF_ENDPOINT` at `hub.url` (see `client_env`).

Dataset repos live in memory: per repo its private flag, gated value and branches, each a list of commits holding
whole snapshots {path: bytes}. LFS objects are stored by sha256. Every request is recorded in `hub.requests` as
(method, unquoted path); `hub.fail_next_commit = True` makes the next commit answer 500 without applying anything.
Writes need `Authorization: Bearer <hub.token>`; a private repo read without it looks missing, as on the Hub.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
# The Hub creates every repo with one commit holding a .gitattributes that sends binary formats through LFS;
# ours names only the formats a dataset release holds.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.parquet", "*.arrow", "*.png", "*.jpg", "*.jpeg", "*.webp", "*.zip", "*.gz", "*.bin")
).encode()
LFS_MIN_SIZE = 10 * 1024 * 1024  # from 10 MB on, the Hub takes any file through LFS, text or not
JSON = {"Content-Type": "application/json"}
_API, _GIT = r"/api/datasets/(?P<id>[\w.-]+/[\w.-]+)", r"/datasets/(?P<id>[\w.-]+/[\w.-]+)"  # dataset repos only


@dataclass
class Commit:
    sha: str
    message: str
    parent: str | None
    files: dict[str, bytes]
    lfs: frozenset[str] = frozenset()  # the paths stored as LFS objects: listed with an `lfs` entry
    description: str = ""
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))


@dataclass
class Repo:
    private: bool
    gated: bool | str = False
    branches: dict[str, list[Commit]] = field(default_factory=dict)  # also holds pull requests, as refs/pr/N

    def commit(self, revision: str) -> Commit:
        """The head of a branch (or pull request), or a commit by its sha, as the Hub resolves revisions."""
        if revision in self.branches:
            return self.branches[revision][-1]
        found = next((c for cs in self.branches.values() for c in cs if c.sha == revision), None)
        if found is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return found


class HubError(Exception):
    """An error answer, with the `X-Error-Code` the client turns into its own exception types."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """What git holds in place of an LFS file: its tree entry's oid and size are the pointer's."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


class HubServer:
    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content; uploaded objects count only once committed
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []  # unexpected server exceptions: a test can assert there were none
        self.fail_next_commit = False
        self._lock = threading.Lock()
        self._shas = itertools.count()
        # (methods, URL pattern, handler, whether it needs the token); URL parts come quoted: `rev` may be refs%2Fpr%2F1
        self._routes = [
            ("GET", r"/api/whoami-v2", self._whoami, True),
            ("POST", r"/api/repos/create", self._create_repo, True),
            ("POST", r"/api/validate-yaml", lambda request: {"errors": [], "warnings": []}, False),
            ("GET", _API + r"(?:/revision/(?P<rev>.+))?", self._info, False),
            ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree, False),
            ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", self._paths_info, False),
            ("POST", _API + r"/preupload/(?P<rev>[^/]+)", self._preupload, True),
            ("POST", _API + r"/commit/(?P<rev>[^/]+)", self._commit, True),
            ("PUT", _API + r"/settings", self._settings, True),
            ("POST", _API + r"/branch/(?P<branch>[^/]+)", self._create_branch, True),
            ("POST", _GIT + r"\.git/info/lfs/objects/batch", self._lfs_batch, True),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_put, False),  # like a presigned storage URL
            ("GET HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve, False),
        ]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval lets `shutdown` return quickly at the end of each test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # --- helpers for tests ---

    def client_env(self, home: Path, token: bool = True) -> dict[str, str]:
        """The environment for a client process talking to this server. The clients read these at import time."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(home), HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
        env.update(HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        if token:
            env["HF_TOKEN"] = self.token
        return env

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            return dict(self.repos[repo_id].commit(revision).files)

    def repo(self, repo_id: str) -> dict:
        with self._lock:
            repo = self.repos[repo_id]
            main = repo.branches["main"]
            history = {"commits": len(main), "messages": [c.message for c in main], "lfs": sorted(main[-1].lfs)}
            return {"private": repo.private, "gated": repo.gated, "branches": sorted(repo.branches), **history}

    # --- dispatch ---

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        self.requests.append((method, unquote(path)))
        auth = headers.get("Authorization")
        try:
            if auth is not None and auth != f"Bearer {self.token}":  # the Hub refuses a bad token even on reads
                raise HubError(401, "Invalid credentials in Authorization header")
            for methods, pattern, route, needs_token in self._routes:
                match = re.fullmatch(pattern, path)
                if match and method in methods.split():
                    if needs_token and auth is None:
                        raise HubError(401, "Authorization header is required")
                    args = {k: unquote(v) for k, v in match.groupdict("").items()}
                    request = _Request(args, query, body, authed=auth is not None, range=headers.get("Range"))
                    with self._lock:
                        answer = route(request)
                    return answer if isinstance(answer, tuple) else (200, JSON, json.dumps(answer).encode())
            raise HubError(404, f"no such endpoint: {method} {path}")
        except HubError as e:
            # The client reads X-Error-Code to raise RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError...
            extra = {"X-Error-Message": str(e), **({"X-Error-Code": e.code} if e.code else {})}
            return e.status, {**JSON, **e.headers, **extra}, json.dumps({"error": str(e)}).encode()
        except (KeyError, ValueError, TypeError) as e:  # a request we cannot read: the client's fault
            return 400, JSON, json.dumps({"error": f"bad request: {e!r}"}).encode()
        except Exception as e:
            self.errors.append(repr(e))
            return 500, JSON, json.dumps({"error": repr(e)}).encode()

    def _repo(self, request: _Request) -> Repo:
        repo = self.repos.get(request.args["id"])
        if repo is None or (repo.private and not request.authed):
            # The Hub answers alike for a missing repo and a hidden one: 401 to strangers, 404 to users.
            raise HubError(404 if request.authed else 401, "Repository not found", "RepoNotFound")
        return repo

    def _new_sha(self, message: str) -> str:
        return hashlib.sha1(f"{next(self._shas)}:{message}".encode()).hexdigest()

    # --- account and repos ---

    def _whoami(self, request):
        return {"type": "user", "name": USER, "orgs": [], "auth": {"accessToken": {"role": "write"}}}

    def _create_repo(self, request):
        body = json.loads(request.body)
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        if body.get("type") != "dataset":
            raise HubError(400, "this fake Hub holds dataset repos only")
        if repo_id in self.repos:
            raise HubError(409, "You already created this dataset repo")
        # Current clients send `visibility`; older ones sent `private`.
        private = body.get("visibility") == "private" or body.get("private") is True
        first = Commit(self._new_sha("initial commit"), "initial commit", None, {".gitattributes": GITATTRIBUTES})
        self.repos[repo_id] = Repo(private, branches={"main": [first]})
        return {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id, "id": repo_id}

    def _settings(self, request):
        repo, body = self._repo(request), json.loads(request.body)
        if "gated" in body:
            if body["gated"] not in (False, "auto", "manual"):
                raise HubError(400, f"invalid gated value {body['gated']!r}")
            repo.gated = body["gated"]
        if "visibility" in body or "private" in body:
            repo.private = body.get("visibility") == "private" or body.get("private") is True
        return {}

    def _create_branch(self, request):
        repo = self._repo(request)
        branch, start = request.args["branch"], json.loads(request.body or b"{}").get("startingPoint")
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        repo.branches[branch] = [repo.commit(start or "main")]
        return {}

    def _info(self, request):
        repo = self._repo(request)
        commit = repo.commit(request.args["rev"] or "main")
        entries = [self._entry(commit, path) for path in sorted(commit.files)]
        siblings = [{"rfilename": e["path"], "blobId": e["oid"], **e} for e in entries]
        state = {"private": repo.private, "gated": repo.gated, "disabled": False, "lastModified": commit.date}
        return {"id": request.args["id"], "sha": commit.sha, **state, "tags": [], "siblings": siblings}

    # --- reading files ---

    @staticmethod
    def _entry(commit: Commit, path: str) -> dict:
        """A file as the tree and paths-info endpoints describe it (also the info's siblings, renamed there)."""
        data = commit.files[path]
        if path not in commit.lfs:
            return {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
        pointer, sha256 = lfs_pointer(data), hashlib.sha256(data).hexdigest()
        lfs = {"oid": sha256, "sha256": sha256, "size": len(data), "pointerSize": len(pointer)}
        return {"type": "file", "path": path, "size": len(data), "oid": git_oid(pointer), "lfs": lfs}

    @staticmethod
    def _folder(path: str) -> dict:
        return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}

    def _tree(self, request):
        commit = self._repo(request).commit(request.args["rev"])
        folder = request.args["path"].strip("/")
        prefix = folder + "/" if folder else ""
        recursive = request.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries: dict[str, dict] = {}
        for path in sorted(p for p in commit.files if p.startswith(prefix)):
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):  # the folders on the way
                sub = prefix + "/".join(parts[:depth])
                entries.setdefault(sub, self._folder(sub))
            if recursive or len(parts) == 1:
                entries[path] = self._entry(commit, path)
        if folder and not entries:
            # push_to_hub globs data/ before the first upload: fsspec needs this exact answer to mean "no files".
            raise HubError(404, f"{folder} does not exist on {request.args['rev']}", "EntryNotFound")
        return [entries[path] for path in sorted(entries)]

    def _paths_info(self, request):
        commit = self._repo(request).commit(request.args["rev"])
        found = []
        for path in parse_qs(request.body.decode()).get("paths", []):  # the client sends a form, not JSON
            if path in commit.files:
                found.append(self._entry(commit, path))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                found.append(self._folder(path.rstrip("/")))
        return found

    def _resolve(self, request):
        repo = self._repo(request)
        commit, path = repo.commit(request.args["rev"]), request.args["path"]
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist on {request.args['rev']}", "EntryNotFound", headers)
        if repo.gated and not request.authed:
            raise HubError(401, "Access to this gated repo is restricted", "GatedRepo")
        entry, data = self._entry(commit, path), commit.files[path]
        headers["ETag"] = f'"{entry["oid"]}"'
        if "lfs" in entry:  # the client takes an LFS file's ETag and size from these, as the Hub redirects those
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(len(data))})
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", request.range or "")
        if ranged:
            start, end = int(ranged[1]), min(int(ranged[2] or len(data) - 1), len(data) - 1)
            if start >= len(data):
                return 416, {**headers, "Content-Range": f"bytes */{len(data)}"}, b""
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start : end + 1]
        return 200, headers, data

    # --- uploading ---

    def _preupload(self, request):
        commit = self._repo(request).commit(request.args["rev"])
        attributes = commit.files.get(".gitattributes", b"").decode().splitlines()
        patterns = [line.split()[0] for line in attributes if "filter=lfs" in line]
        answers = []
        for file in json.loads(request.body)["files"]:
            path, sample = file["path"], base64.b64decode(file["sample"])
            # git matches a pattern without a slash against the file's name, one with a slash against its path
            tracked = any(fnmatch.fnmatchcase(path if "/" in p else path.rsplit("/", 1)[-1], p) for p in patterns)
            lfs = tracked or file["size"] >= LFS_MIN_SIZE or b"\0" in sample  # the sample: the first 512 bytes
            answer = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if path in commit.files:  # lets the client skip unchanged files: sha256 for LFS, git oid otherwise
                data = commit.files[path]
                answer["oid"] = hashlib.sha256(data).hexdigest() if path in commit.lfs else git_oid(data)
            answers.append(answer)
        return {"files": answers, "commitOid": commit.sha}

    def _lfs_batch(self, request):
        self._repo(request)
        objects = []
        for obj in json.loads(request.body)["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_objects:  # no `actions` tells the client the object is already there
                answer["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, request):
        # Like the Hub's presigned storage URLs, the upload href needs no token; the content must match its oid.
        if hashlib.sha256(request.body).hexdigest() != request.args["oid"]:
            raise HubError(400, "content does not match its sha256 oid")
        self.lfs_objects[request.args["oid"]] = request.body
        return {}

    def _commit(self, request):
        repo = self._repo(request)
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header" or not lines[0]["value"].get("summary"):
            raise HubError(400, "a commit starts with a header line holding a summary")
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise HubError(500, "injected failure: nothing was committed")
        header, branch = lines[0]["value"], request.args["rev"]
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head, parent = repo.branches[branch][-1], header.get("parentCommit")
        if request.query.get("create_pr") == ["1"]:
            base = repo.commit(parent) if parent else head
            branch = f"refs/pr/{sum(b.startswith('refs/pr/') for b in repo.branches) + 1}"
        elif parent and parent != head.sha:
            raise HubError(412, f"parent commit {parent} is not the head of {branch} ({head.sha})")
        else:
            base = head
        # Build the whole new snapshot first: a commit applies entirely or not at all.
        files, lfs = dict(base.files), set(base.lfs)
        for line in lines[1:]:
            key, path = line["key"], line["value"]["path"]
            if key == "file":
                files[path] = base64.b64decode(line["value"]["content"])
                lfs.discard(path)
            elif key == "lfsFile":
                data = self.lfs_objects.get(line["value"]["oid"])
                if data is None or line["value"].get("size", len(data)) != len(data):
                    raise HubError(422, f"LFS object {line['value']['oid']} for {path} was never uploaded")
                files[path] = data
                lfs.add(path)
            elif key in ("deletedFile", "deletedFolder"):
                inside = path.rstrip("/") + "/" if key == "deletedFolder" else None
                gone = [p for p in files if p == path or (inside and p.startswith(inside))]
                if not gone:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
                    lfs.discard(p)
            else:
                raise HubError(400, f"unknown commit operation {key}")
        summary, description = header["summary"], header.get("description", "")
        commit = Commit(self._new_sha(summary), summary, base.sha, files, frozenset(lfs), description)
        if branch == request.args["rev"]:
            repo.branches[branch].append(commit)
        else:
            repo.branches[branch] = [base, commit]  # a pull request: its own ref, starting from its base
        page = f"{self.url}/datasets/{request.args['id']}"
        answer = {"success": True, "commitOid": commit.sha, "commitUrl": f"{page}/commit/{commit.sha}"}
        if branch.startswith("refs/pr/"):
            answer["pullRequestUrl"] = f"{page}/discussions/{branch.rsplit('/', 1)[1]}"
        return answer


@dataclass
class _Request:
    args: dict[str, str]  # the URL's parts, unquoted
    query: dict[str, list[str]]
    body: bytes
    authed: bool
    range: str | None = None  # the Range header


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients pool connections

    def log_message(self, *args):
        pass

    def _serve(self):
        url, method = urlsplit(self.path), self.command
        status, headers, body = self.hub.handle(method, url.path, parse_qs(url.query), self.headers, self._read_body())
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))  # on HEAD too: the size of what GET would send
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        # The clients send every body with a Content-Length, LFS uploads of file objects included (measured);
        # a chunked body would be misread, so say so loudly.
        assert "chunked" not in self.headers.get("Transfer-Encoding", ""), "chunked bodies are not supported"
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_HEAD = do_POST = do_PUT = _serve
