"""Publishing a release on the Hugging Face Hub: the gate, then one commit.

The gate (`check`) reads only what is on this machine and refuses, before a single request is sent, a release that
could leak what anonymisation removed: a folder that is not a finished u2s release (no marker, a symbolic link in
it), an image column other than `safe_image`, an image that carries a file path, a column of file names or paths or
raw bytes, an `error`/`dropped` row that carries an image, rows that Verify did not pass, a split name that is not a
plain file name. `publish` then writes the data as Parquet shards in the layout `Dataset.push_to_hub` writes
(`data/<split>-XXXXX-of-YYYYY.parquet`, images as embedded bytes), the card (`release_card.hub_card`), and commits
them with `report.json` and `contact_sheet.png` in ONE `create_commit`, which also deletes the shards of an earlier
publish that the new one does not replace. The Hub applies a commit whole or not at all, so a failure leaves the
target revision as it was. The endpoint and token come from huggingface_hub as everywhere (`HF_ENDPOINT`,
`HF_TOKEN` or the saved login).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets.features.features import require_decoding
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .config import STATUSES
from .pipeline import PATH_COLUMNS
from .release_card import VERIFIED, arrow_size, hub_card
from .release_folder import MARKER, PARTIAL
from .version import __version__

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "safe_image"
STATUS_COLUMN = "u2s_status"
NO_IMAGE = ("error", "dropped")  # statuses whose rows must carry no image
DATA_DIR = "data"
MAX_SHARD_SIZE = "500MB"  # Dataset.push_to_hub's default (datasets.config.MAX_SHARD_SIZE)
# The Hub advises fewer than 100 files per commit made over HTTP (hub docs, "Repository limitations and
# recommendations"); create_commit's hard limit is 25k LFS files. One commit is what makes a publish atomic, so a
# release that needs more files is refused with the shard size that would fit.
MAX_COMMIT_FILES = 100
GATED = ("auto", "manual")
# datasets' rule for split names (datasets.naming._split_re): words joined by single dots, so no `/`, `..` or `-`.
SPLIT = re.compile(r"\w+(\.\w+)*")
SHARD = re.compile(rf"{DATA_DIR}/\w+(\.\w+)*-\d{{5}}-of-\d{{5}}\.parquet")  # what publish writes, and replaces
PNG = b"\x89PNG\r\n\x1a\n"


class PublishError(ValueError):
    """Publishing failed; the target revision is as it was."""


class Refused(PublishError):
    """The gate refused the release: nothing was sent to the Hub."""


@dataclasses.dataclass(frozen=True)
class Release:
    """What is published: the release view, and from a release folder its report.json and contact sheet as written."""

    data: datasets.DatasetDict
    report: bytes | None = None
    sheet: bytes | None = None
    name: str = "the release"

    @property
    def summary(self) -> dict | None:
        return json.loads(self.report) if self.report is not None else None


@dataclasses.dataclass(frozen=True)
class Published:
    """What `publish` did."""

    repo_id: str
    revision: str
    commit_url: str
    pr_url: str | None
    private: bool
    gated: str | bool
    rows: int
    files: tuple[str, ...]  # the paths the commit wrote
    deleted: tuple[str, ...]  # shards of an earlier publish that it removed

    def line(self) -> str:
        where = "private" if self.private else "public"
        gate = f", gated: {self.gated}" if self.gated else ""
        return f"u2s: published {self.rows} rows to {self.repo_id} ({where}{gate}): {self.pr_url or self.commit_url}"


def publish(
    release,
    repo_id: str,
    private: bool = True,
    gated: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    allow_unverified: bool = False,
    keep_columns=(),
    commit_message: str | None = None,
    license: str | None = None,
    max_shard_size: int | str | None = None,
) -> Published:
    """Publish `release` (a release folder written by `u2s anonymize`, or a release view: a Dataset or DatasetDict)
    as the dataset repo `repo_id`, in one commit, after the gate (`check`) let it through.

    `private` applies when the repo is created; an existing public repo is refused unless `private=False`.
    `gated` ("auto" or "manual") gates the repo before the data lands, and the card carries an access prompt.
    `revision` is the branch to commit to (made from main when missing); `create_pr` opens a pull request instead.
    `allow_unverified` lets rows that Verify did not pass (or a release Verify never ran on) through the gate;
    `keep_columns` lets named columns of file names, paths or raw bytes through. `license` goes into the card,
    `max_shard_size` sizes the Parquet shards (default 500MB, as `push_to_hub`).
    """
    shard_size = check_options(repo_id, gated, max_shard_size)
    opened = check(release, allow_unverified=allow_unverified, keep_columns=keep_columns)
    plan = _plan(opened, shard_size)
    kept = tuple(c for c in next(iter(opened.data.values())).column_names if c in _names(keep_columns))
    with tempfile.TemporaryDirectory(prefix="u2s-publish-") as tmp:
        shards = _write_shards(opened.data, plan, Path(tmp))
        card = hub_card(
            opened.data,
            opened.summary,
            repo_id,
            data_dir=DATA_DIR,
            license=license,
            gated=bool(gated),
            download_size=sum(path.stat().st_size for _, path in shards),
            kept=kept,
        )
        additions = [CommitOperationAdd(name, str(path)) for name, path in shards]
        additions.append(CommitOperationAdd("README.md", card.encode()))
        if opened.report is not None:
            additions.append(CommitOperationAdd("report.json", opened.report))
        if opened.sheet is not None:
            additions.append(CommitOperationAdd("contact_sheet.png", opened.sheet))
        rows = sum(len(part) for part in opened.data.values())
        message = commit_message or f"Publish an anonymised release ({rows} rows) with u2s_hf {__version__}"
        return _commit(additions, repo_id, private, gated, revision, create_pr, token, message, rows)


def check_options(repo_id: str, gated, max_shard_size) -> int:
    """Refuse options that cannot work, before any work; returns the shard size in bytes."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise Refused(f"repo id {repo_id!r}: {exc}") from None
    if gated not in (None, *GATED):
        raise Refused(f"gated={gated!r}: choose one of {', '.join(GATED)} (or leave the repo's setting alone)")
    try:
        size = convert_file_size_to_int(max_shard_size or MAX_SHARD_SIZE)
    except ValueError as exc:
        raise Refused(f"--max-shard-size {max_shard_size!r}: {exc}") from None
    if size < 1:
        raise Refused(f"--max-shard-size {max_shard_size!r} must be positive")
    return size


def check(release, allow_unverified: bool = False, keep_columns=()) -> Release:
    """The gate: the release, opened, or `Refused` naming everything that stops it. Reads local files only."""
    opened = as_release(release)
    keep_columns = _names(keep_columns)
    found = refusals(opened.data, allow_unverified=allow_unverified, keep_columns=keep_columns)
    if found:
        raise Refused(f"refusing to publish {opened.name}: " + "; ".join(found) + ". Nothing was sent to the Hub.")
    return opened


def as_release(release) -> Release:
    if isinstance(release, datasets.DatasetDict):
        return Release(datasets.DatasetDict(release))
    if isinstance(release, datasets.Dataset):
        return Release(datasets.DatasetDict({str(release.split or "train"): release}))
    if isinstance(release, (str, os.PathLike)):
        return open_release(release)
    raise TypeError(f"publish takes a release folder, a Dataset or a DatasetDict, not {type(release).__name__}")


def open_release(folder) -> Release:
    """A release folder that `u2s anonymize` finished: its marker, no links or special files, split names that are
    plain names (checked before the dataset is opened: a `../x` split would be read from outside the folder)."""
    root = Path(folder)
    if root.is_symlink() or not root.is_dir():
        raise Refused(f"{folder} is not a folder: publish a release folder written by `u2s anonymize`")
    marker = root / MARKER
    if marker.is_symlink() or not marker.is_file():
        raise Refused(f"{folder} is not a u2s release: it has no {MARKER} marker (written last by `u2s anonymize`)")
    if (root / PARTIAL).exists():
        raise Refused(f"{folder} is an unfinished u2s release ({PARTIAL})")
    for parent, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(parent) / name
            if path.is_symlink():
                raise Refused(
                    f"{folder} holds a symbolic link, {path.relative_to(root)}: refusing to publish what it "
                    "points to (copy the file in, or remove the link)"
                )
            if not path.is_dir() and not path.is_file():
                raise Refused(f"{folder} holds {path.relative_to(root)}, which is not a regular file")
    listing = root / "dataset_dict.json"
    if listing.is_file():
        try:
            splits = json.loads(listing.read_text())["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Refused(f"{listing} cannot be read: {exc}") from None
        bad = [s for s in splits if not isinstance(s, str) or not SPLIT.fullmatch(s)]
        if bad:
            raise Refused(f"{folder}: {_bad_splits(bad)}")
    try:
        data = datasets.load_from_disk(str(root))
    except Exception as exc:  # whatever datasets raises on a folder it cannot read
        raise Refused(f"cannot read the dataset in {folder}: {exc}") from None
    report = root / "report.json"
    if not report.is_file():
        raise Refused(f"{folder} has no report.json: not a complete u2s release")
    try:
        if not isinstance(json.loads(report.read_bytes()), dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise Refused(f"{report} cannot be read: {exc}") from None
    sheet = root / "contact_sheet.png"
    sheet_bytes = sheet.read_bytes() if sheet.is_file() else None
    if sheet_bytes is not None and not sheet_bytes.startswith(PNG):
        raise Refused(f"{sheet} is not a PNG image")
    dsd = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({str(data.split or "train"): data})
    return Release(dsd, report.read_bytes(), sheet_bytes, name=str(folder))


def refusals(data: datasets.DatasetDict, allow_unverified: bool = False, keep_columns=()) -> list[str]:
    """Everything in `data` (a release view) that the gate refuses, each naming the column or the count of rows."""
    if not data:
        return ["it holds no split"]
    bad = [split for split in data if not SPLIT.fullmatch(split)]
    if bad:
        return [_bad_splits(bad)]
    first = next(iter(data.values()))
    if any(part.features != first.features for part in data.values()):
        return ["its splits have different columns or types (load_dataset reads them as one dataset)"]
    features, found = first.features, []
    if not isinstance(features.get(IMAGE_COLUMN), datasets.Image):
        found.append(f"it has no {IMAGE_COLUMN} Image column: not an anonymised u2s release view")
    if STATUS_COLUMN not in features:
        found.append(f"it has no {STATUS_COLUMN} column: not a u2s release view")
    schema = features.arrow_schema
    for name, feature in features.items():
        if name == IMAGE_COLUMN:
            continue
        if require_decoding(feature, ignore_decode_attribute=True):
            found.append(f"column {name!r} holds images or other media; only {IMAGE_COLUMN} may (the originals?)")
        elif _has_binary(schema.field(name).type) and name not in keep_columns:
            found.append(
                f"column {name!r} holds raw bytes, which may be an original image or file "
                f"(--keep-column {name} publishes it anyway)"
            )
        if name.lower() in PATH_COLUMNS and name not in keep_columns:
            found.append(f"column {name!r} holds source file names or paths (--keep-column {name} publishes it anyway)")
    verified = VERIFIED in features
    if not verified and not allow_unverified:
        found.append(f"Verify did not run: there is no {VERIFIED} column (run Verify, or pass --allow-unverified)")
    if verified and features[VERIFIED] != datasets.Value("bool"):
        found.append(f"column {VERIFIED} is not a bool column")
        verified = False
    if (
        IMAGE_COLUMN not in features
        or STATUS_COLUMN not in features
        or not isinstance(features[IMAGE_COLUMN], datasets.Image)
    ):
        return found
    counts = {split: _scan(part, verified) for split, part in data.items()}
    problems = {  # (what is wrong, what to do)
        "path": (
            f"{IMAGE_COLUMN} values carry a file path",
            ": it would be published beside the image (push_to_hub keeps its base name); save the images as bytes "
            "without paths",
        ),
        "no_bytes": (f"{IMAGE_COLUMN} values hold no image bytes", ""),
        "status": (f"rows have a {STATUS_COLUMN} that is not one of {', '.join(STATUSES)}", ""),
        "imaged": (f"rows with status {' or '.join(NO_IMAGE)} carry an image", ": such rows must carry none"),
    }
    if not allow_unverified:
        problems["unverified"] = (
            f"rows have {VERIFIED} False",
            ": Verify did not pass them; fix them, or pass --allow-unverified",
        )
    for key, (text, hint) in problems.items():
        total = sum(c[key] for c in counts.values())
        if total:
            per_split = ", ".join(f"{split} {c[key]}" for split, c in counts.items() if c[key])
            found.append(f"{total} {text} ({per_split}){hint}")
    return found


def _scan(part: datasets.Dataset, verified: bool) -> collections.Counter:
    """Counts of the row-level problems in one split, read as Arrow (no image is decoded)."""
    found = collections.Counter()
    columns = [IMAGE_COLUMN, STATUS_COLUMN] + ([VERIFIED] if verified else [])
    for table in part.select_columns(columns).with_format("arrow").iter(batch_size=1000):
        image = table.column(IMAGE_COLUMN).combine_chunks()
        fields = dict(
            zip([image.type.field(i).name for i in range(image.type.num_fields)], image.flatten(), strict=True)
        )
        present = image.is_valid()
        has_bytes = pc.is_valid(fields["bytes"])
        has_path = pc.fill_null(pc.greater(pc.utf8_length(fields["path"]), 0), False)
        found["path"] += pc.sum(has_path).as_py() or 0
        found["no_bytes"] += pc.sum(pc.and_(present, pc.invert(has_bytes))).as_py() or 0
        carries = pc.or_(has_bytes, has_path).to_pylist()
        status = table.column(STATUS_COLUMN).to_pylist()
        found["status"] += sum(s not in STATUSES for s in status)
        found["imaged"] += sum(s in NO_IMAGE and c for s, c in zip(status, carries, strict=True))
        if verified:
            found["unverified"] += sum(v is False for v in table.column(VERIFIED).to_pylist())
    return found


def _has_binary(kind: pa.DataType) -> bool:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return True
    if getattr(pa.types, "is_binary_view", None) and pa.types.is_binary_view(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _has_binary(kind.value_type)
    return any(_has_binary(kind.field(i).type) for i in range(kind.num_fields))


def _names(columns) -> tuple[str, ...]:
    """Column names, one name given alone counting as one (not as its letters)."""
    return (columns,) if isinstance(columns, str) else tuple(columns)


def _bad_splits(names) -> str:
    return (
        f"split names {', '.join(repr(n) for n in names)} cannot be file names in the repo (letters, digits "
        "and _, joined by single dots)"
    )


def _plan(release: Release, shard_size: int) -> dict[str, int]:
    """Shards per split, as push_to_hub counts them (Arrow size / max_shard_size + 1), never more than rows; refused
    when the commit would hold more than MAX_COMMIT_FILES files."""
    sizes = {split: arrow_size(part) for split, part in release.data.items()}
    plan = {split: max(1, min(len(part), sizes[split] // shard_size + 1)) for split, part in release.data.items()}
    others = 1 + (release.report is not None) + (release.sheet is not None)
    files = sum(plan.values()) + others
    if files > MAX_COMMIT_FILES:
        room = MAX_COMMIT_FILES - others - len(plan)
        need = math.ceil(sum(sizes.values()) / max(room, 1) / 1e6)
        raise Refused(
            f"refusing to publish {release.name}: it needs {files} files and one commit holds at most "
            f"{MAX_COMMIT_FILES} (the Hub's advice); pass --max-shard-size {need}MB or more. Nothing was sent "
            "to the Hub."
        )
    return plan


def _write_shards(data: datasets.DatasetDict, plan: dict[str, int], folder: Path) -> list[tuple[str, Path]]:
    """Parquet shards as push_to_hub writes them: contiguous `Dataset.shard`s written with `to_parquet`. The gate
    made sure every image is bytes without a path, so nothing needs embedding (`embed_table_storage` would read
    files from paths, and keep their base names)."""
    written = []
    for split, part in data.items():
        count = plan[split]
        for index in range(count):
            name = f"{DATA_DIR}/{split}-{index:05d}-of-{count:05d}.parquet"
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            part.shard(num_shards=count, index=index, contiguous=True).to_parquet(str(path))
            written.append((name, path))
    return written


def _commit(additions, repo_id, private, gated, revision, create_pr, token, message, rows) -> Published:
    """Create the repo if needed, gate it, then one commit of `additions` plus the deletion of stale shards."""
    api = HfApi(token=token)
    branch = revision or "main"
    try:
        if "/" not in repo_id:  # a bare name is the user's own, as on the Hub
            repo_id = f"{api.whoami()['name']}/{repo_id}"
        try:  # as push_to_hub: look first, create when missing (the repo's privacy is set only here)
            info = api.repo_info(repo_id, repo_type="dataset")
        except RepositoryNotFoundError:
            api.create_repo(repo_id, repo_type="dataset", private=private)
            info = api.repo_info(repo_id, repo_type="dataset")
        if private and not info.private:
            raise PublishError(
                f"{repo_id} exists and is public: publishing there would make the release public. Pass --public "
                "(private=False) to publish into it anyway. Nothing was uploaded."
            )
        if not private and info.private:
            logger.warning(
                "u2s: %s already exists and is private; it stays private (its settings on the Hub change that)", repo_id
            )
        if gated:
            api.update_repo_settings(repo_id, repo_type="dataset", gated=gated)
        if branch != "main" and not branch.startswith("refs/pr/"):
            api.create_branch(repo_id, repo_type="dataset", branch=branch, exist_ok=True)
        parent = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
        new = {op.path_in_repo for op in additions}
        stale = [
            p
            for p in api.list_repo_files(repo_id, repo_type="dataset", revision=parent)
            if SHARD.fullmatch(p) and p not in new
        ]
        commit = api.create_commit(
            repo_id,
            operations=[*additions, *(CommitOperationDelete(p) for p in stale)],
            commit_message=message,
            repo_type="dataset",
            revision=revision,
            create_pr=create_pr,
            parent_commit=parent,
        )
    except PublishError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:  # huggingface_hub's HTTP errors are OSErrors
        reason = " ".join(str(exc).split())[:800] or type(exc).__name__
        raise PublishError(f"publishing to {repo_id} failed, nothing was committed to {branch}: {reason}") from exc
    return Published(
        repo_id=repo_id,
        revision=commit.pr_revision or branch,
        commit_url=commit.commit_url,
        pr_url=commit.pr_url,
        private=bool(info.private),
        gated=gated or info.gated or False,
        rows=rows,
        files=tuple(sorted(new)),
        deleted=tuple(stale),
    )
