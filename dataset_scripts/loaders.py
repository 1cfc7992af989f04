"""The paper's four datasets as `datasets.DatasetDict`s with the columns the pipeline and the metrics read.

    python dataset_scripts/loaders.py --dataset caltech101 --data PATH --out DIR [--seed 0]

`--data` is the folder an official archive was extracted into, or a Hub id (default: `HUB_IDS`). From Python,
`load(name, data, seed)` or one loader per dataset; each returns `Loaded(dataset, notes)`.

What the folder must hold, the splits and the columns besides `image`:
- caltech101: `101_ObjectCategories/<class>/*.jpg`; train, test (a sample, below); `label` (101 classes).
- indoor67: `Images/<class>/*.jpg`, `TrainImages.txt`, `TestImages.txt`; train, test (samples of the two lists);
  `label` (67 classes).
- coco: `train2014/`, `val2014/`, `annotations/captions_train2014.json`, `captions_val2014.json`; train
  (train2014), test (val2014); `captions` (a list of strings).
- vispr: `images/<fold>/*.jpg`, `annotations/<fold>/*.json`; train, validation, test (folds train2017, val2017,
  test2017); `labels` (VISPR's attribute ids, a list of strings).

Split sizes. Caltech101 has no official split and Indoor67's (5,360 / 1,340 listed) is not the paper's, so both
get the paper's sizes (Table S1: 2,000 / 980 and 3,991 / 1,317) as a seeded, class-stratified sample
(`stratified_sample`): Caltech101's from all its images, Indoor67's train from TrainImages.txt and test from
TestImages.txt. A folder with fewer images than that gets every size scaled down by one factor, the largest its
pools allow. COCO and VISPR keep their official splits whole: the paper's notes give no sizes for them; COCO 2014
publishes no test captions, so val2014 is the test split. Each loader says what it did in its notes, and `load`
prints them.

Caltech101's archive has a 102nd folder, `BACKGROUND_Google`: random clutter, not an object class. It is left out
(and said so), as in the usual 101-class setup that the paper's 101-class figures follow.

Images are read into the `image` column as bytes with no path (a release never carries one; the pipeline refuses
to read paths from outside an image folder). A listed image that is not a file is left out and counted in the
notes. Every other file is a row: one whose bytes do not decode (a corrupt file) keeps them and becomes an error
row in the pipeline, one that cannot be read has no image (also an error row there). Neither COCO's nor VISPR's
image ids are kept: they lead back to the original photos.

Layouts. Caltech101's, Indoor67's and COCO's are the well-known ones of their official downloads (not checked here
against a download; Caltech101's current zip holds 101_ObjectCategories.tar.gz, to be extracted too). VISPR's was
checked against its authors' own code (github.com/tribhuvanesh/vpa and visual_redactions):
`<root>/images/<fold>/<id>.jpg` beside `<root>/annotations/<fold>/<id>.json`, each JSON with "id", "image_path"
(relative to the root) and "labels" (attribute ids such as "a17_color"). Not confirmed there: the fold names
train2017/val2017/test2017 (only seen as list and file names such as "train2017.txt") and what "image_path" holds
exactly, so an image is looked for at "image_path" first, then at images/<fold>/<id>.jpg.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import datasets
from datasets.fingerprint import Hasher

from u2s_hf import images

PAPER_SIZES = {  # Table S1 (the paper calls Caltech101's second split "val": it is what the classifier is tested on)
    "caltech101": {"train": 2000, "test": 980},
    "indoor67": {"train": 3991, "test": 1317},
}
# Hub copies, NOT CHECKED FROM HERE (no Hub access on this machine): what `load` uses when no --data is given.
HUB_IDS = {
    "caltech101": "flwrlabs/caltech101",  # its card, seen in a stored copy: Parquet, image, 101-class label, 8,677 rows
    "indoor67": None,  # no copy with the class names found (Voxel51/IndoorSceneRecognition is in FiftyOne's format)
    "coco": None,  # none found with train2014's images and captions together
    "vispr": None,  # none found
}
BACKGROUND = "BACKGROUND_Google"
COCO_SPLITS = {"train": "train2014", "test": "val2014"}  # split: the folder and the annotation file's year
VISPR_FOLDS = {"train": "train2017", "validation": "val2017", "test": "test2017"}
# The column each dataset carries beside `image`, and the names a Hub copy may give it.
TARGETS = {
    "caltech101": ("label", ()),
    "indoor67": ("label", ()),
    "coco": ("captions", ("sentences", "caption")),
    "vispr": ("labels", ("attributes",)),
}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# Datasets built from files are cached under a fingerprint of the files and of this source: an edit here or a
# changed file misses the cache (datasets would otherwise hash the generator by its name only).
SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
STRINGS = datasets.List(datasets.Value("string"))


class Loaded(NamedTuple):
    dataset: datasets.DatasetDict
    notes: list[str]  # what the loader did that a reader of the results should know (samples, left-out files)


def load(name: str, data: str | None = None, seed: int = 0) -> Loaded:
    """Dataset `name` from `data`: a folder holding the extracted archive, a Hub id, or None for `HUB_IDS[name]`.
    The notes are printed as well as returned."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(LOADERS)}")
    data = data or HUB_IDS[name]
    if data is None:
        raise ValueError(f"no Hub copy of {name} is known: give the folder its archive was extracted into")
    if Path(data).is_dir():
        loaded = LOADERS[name](data, seed) if name in PAPER_SIZES else LOADERS[name](data)
    elif Path(data).exists() or not HUB_ID.fullmatch(str(data)):
        raise FileNotFoundError(f"{data}: not a folder (nor a Hub id)")
    else:
        loaded = from_hub(name, str(data), seed)
    for note in loaded.notes:
        print(f"{name}: {note}", file=sys.stderr)
    return loaded


def caltech101(root: str | os.PathLike, seed: int = 0) -> Loaded:
    """Caltech101 from `root`/101_ObjectCategories/<class>/*.jpg: 101 classes, the paper's sizes as a sample."""
    folder = _need(Path(root) / "101_ObjectCategories", "the folder 101_ObjectCategories.tar.gz extracts to")
    notes = []
    if (folder / BACKGROUND).is_dir():
        dropped = len(_jpgs(folder / BACKGROUND))
        notes.append(f"left out {BACKGROUND} ({dropped} images): clutter, not one of the 101 object classes")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name != BACKGROUND)
    files = [(path, label) for label, name in enumerate(classes) for path in _jpgs(folder / name)]
    if not files:
        raise ValueError(f"no .jpg images in {folder}/<class>/")
    chosen, note = paper_split("caltech101", {("train", "test"): files}, seed)
    return Loaded(_labelled(chosen, classes), [*notes, note])


def indoor67(root: str | os.PathLike, seed: int = 0) -> Loaded:
    """MIT Indoor67 from `root`/Images/<class>/*.jpg and the official lists TrainImages.txt / TestImages.txt
    (lines such as "kitchen/int474.jpg"): the paper's sizes as samples of the two lists."""
    root = Path(root)
    folder = _need(root / "Images", "the folder indoorCVPR_09.tar extracts to")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    ids = {name: label for label, name in enumerate(classes)}
    pools, missing = {}, 0
    for split, listing in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        files = []
        for line in _need(root / listing, "the official list of the split").read_text("utf-8").splitlines():
            if not line.strip():
                continue
            name, file = _class_and_file(line.strip(), root / listing)
            path = folder / name / file
            if name in ids and path.is_file():
                files.append((path, ids[name]))
            else:
                missing += 1
        if not files:
            raise ValueError(f"none of the images in {root / listing} is in {folder}")
        pools[(split,)] = files
    chosen, note = paper_split("indoor67", pools, seed)
    notes = [note] + ([f"left out {missing} listed images that are not in {folder}"] if missing else [])
    return Loaded(_labelled(chosen, classes), notes)


def coco(root: str | os.PathLike) -> Loaded:
    """COCO 2014 captions: train2014/ and val2014/ with annotations/captions_{train,val}2014.json (COCO's JSON:
    "images" [{id, file_name}], "annotations" [{image_id, caption}]). Official splits, whole."""
    root = Path(root)
    features = datasets.Features({"image": datasets.Image(), "captions": STRINGS})
    splits, notes = {}, []
    for split, year in COCO_SPLITS.items():
        annotation = _need(root / "annotations" / f"captions_{year}.json", "COCO's 2014 caption annotations")
        folder = _need(root / year, f"the folder {year}.zip extracts to")
        pictures, captions = _coco_captions(annotation)
        files = [(folder / _plain_name(file, annotation), {"captions": captions[id_]}) for id_, file in pictures]
        present = [(path, columns) for path, columns in files if path.is_file()]
        if not present:
            raise ValueError(f"none of the {len(files)} images in {annotation} is in {folder}")
        if len(present) < len(files):
            notes.append(f"{split}: left out {len(files) - len(present)} images of {annotation.name} not in {folder}")
        splits[split] = _build(split, present, features)
    notes.append("official splits, whole: train = train2014, test = val2014 (COCO 2014 has no public test captions)")
    return Loaded(datasets.DatasetDict(splits), notes)


def vispr(root: str | os.PathLike) -> Loaded:
    """VISPR: annotations/<fold>/*.json (each with "labels", VISPR's attribute ids) and their images; one split per
    fold found (train2017, val2017, test2017). Official splits, whole."""
    root = Path(root)
    annotations = _need(root / "annotations", "VISPR's per-image JSON annotations, in one folder per fold")
    features = datasets.Features({"image": datasets.Image(), "labels": STRINGS})
    splits, notes, missing = {}, [], 0
    for split, fold in VISPR_FOLDS.items():
        files = []
        for path in sorted((annotations / fold).glob("*.json")):
            labels, image_path = _vispr_annotation(path)
            image = _vispr_image(root, fold, path.stem, image_path)
            if image.is_file():
                files.append((image, {"labels": labels}))
            else:
                missing += 1
        if files:
            splits[split] = _build(split, files, features)
        else:
            notes.append(f"no images for annotations/{fold}: no {split} split")
    if not splits:
        raise ValueError(f"no annotated images in {annotations}/{{{','.join(VISPR_FOLDS.values())}}}")
    if missing:
        notes.append(f"left out {missing} annotated images that are not files")
    notes.append("official splits, whole")
    return Loaded(datasets.DatasetDict(splits), notes)


def from_hub(name: str, hub_id: str, seed: int = 0) -> Loaded:
    """A Hub copy of dataset `name` (every split), cast to the same columns as the archive's (`conform`)."""
    loaded = conform(name, datasets.load_dataset(hub_id), seed)
    return Loaded(loaded.dataset, [f"from the Hub copy {hub_id}", *loaded.notes])


def conform(name: str, loaded: datasets.DatasetDict, seed: int = 0) -> Loaded:
    """`loaded` with only the columns the archive loader writes: its first Image column as `image` (with the
    files' bytes in the cells), and its ClassLabel (`label`, else the first one), captions or attribute list (by
    the names in `TARGETS`) under our name; Caltech101 and Indoor67 then get the paper's splits (Indoor67 from
    train and test when the copy has both, else like Caltech101 from all rows pooled)."""
    target, aliases = TARGETS[name]
    splits = {split: _conformed(ds, name, target, aliases) for split, ds in loaded.items()}
    if name not in PAPER_SIZES:
        return Loaded(datasets.DatasetDict(splits), [])
    if name == "indoor67" and {"train", "test"} <= splits.keys():
        pools = {("train",): splits["train"], ("test",): splits["test"]}
    else:
        pools = {("train", "test"): datasets.concatenate_datasets(list(splits.values()))}
    chosen, note = paper_split(name, {key: list(enumerate(ds["label"])) for key, ds in pools.items()}, seed)
    resplit = {split: ds.select([i for i, _ in chosen[split]]) for key, ds in pools.items() for split in key}
    return Loaded(datasets.DatasetDict(resplit), [note])


def paper_split(name: str, pools: dict[tuple[str, ...], list], seed: int) -> tuple[dict[str, list], str]:
    """The paper's splits of `name`, drawn from `pools` (key: the splits drawn from the pool; value: (item, class
    id) pairs) as a class-stratified sample of the paper's sizes; and a note saying so.

    Where a pool holds fewer items than its splits want, every split is scaled down by the same factor, the
    largest every pool allows, so the splits keep the paper's proportions."""
    wanted = PAPER_SIZES[name]
    # Exact fractions: in floats 7 / 2980 * 2980 floors to 6.
    factor = min(
        [Fraction(1)] + [Fraction(len(items), sum(wanted[split] for split in key)) for key, items in pools.items()]
    )
    sizes = {split: math.floor(wanted[split] * factor) for key in pools for split in key}
    chosen = {}
    for key, items in pools.items():
        picked = stratified_sample([label for _, label in items], {split: sizes[split] for split in key}, seed)
        chosen.update({split: [items[i] for i in positions] for split, positions in picked.items()})
    drawn = " and ".join(f"{len(items)} images ({'+'.join(key)})" for key, items in pools.items())
    note = f"a seeded (seed {seed}), class-stratified sample of {_sizes(sizes)} from {drawn}" + (
        f": the paper's {_sizes(wanted)} (Table S1)"
        if factor == 1
        else f", the paper's {_sizes(wanted)} (Table S1) scaled by {float(factor):.3g} because there are fewer images"
    )
    return chosen, note


def stratified_sample(labels: Sequence[int], sizes: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Disjoint samples of the positions of `labels`, `sizes[split]` of them per split, in increasing order.

    First every split takes one image of each class while it has room and the class has images left, so that every
    class is in every split when that is possible; then each split takes the rest of its size in proportion to
    the images each class still has (largest remainders, ties in a seeded order of the classes). Which images a
    class gives is a seeded shuffle: the same seed gives the same sample."""
    if sum(sizes.values()) > len(labels):
        raise ValueError(f"{sum(sizes.values())} images asked for, {len(labels)} there")
    rng = random.Random(seed)
    members = defaultdict(list)
    for position, label in enumerate(labels):
        members[label].append(position)
    classes = sorted(members)
    for label in classes:
        rng.shuffle(members[label])
    rng.shuffle(classes)
    left = {label: len(members[label]) for label in classes}
    counts = {split: dict.fromkeys(classes, 0) for split in sizes}
    for split, size in sizes.items():
        for label in [c for c in classes if left[c]][:size]:
            counts[split][label], left[label] = 1, left[label] - 1
    for split, size in sizes.items():
        budget, pool = size - sum(counts[split].values()), sum(left.values())
        if not budget:
            continue
        # Exact integer shares of the budget: floors, then one more for the largest remainders (there are enough
        # non-zero remainders, and a class with one never gets more than it has left).
        share = {label: divmod(budget * left[label], pool) for label in classes}
        extra = sorted(classes, key=lambda label: -share[label][1])[: budget - sum(q for q, _ in share.values())]
        for label in classes:
            taken = share[label][0] + (label in extra)
            counts[split][label] += taken
            left[label] -= taken
    samples, used = {}, dict.fromkeys(classes, 0)
    for split in sizes:
        picked = []
        for label in classes:
            picked += members[label][used[label] : used[label] + counts[split][label]]
            used[label] += counts[split][label]
        samples[split] = sorted(picked)
    return samples


def _labelled(chosen: dict[str, list[tuple[Path, int]]], classes: list[str]) -> datasets.DatasetDict:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    return datasets.DatasetDict(
        {
            split: _build(split, [(path, {"label": label}) for path, label in files], features)
            for split, files in chosen.items()
        }
    )


def _build(split: str, files: list[tuple[Path, dict]], features: datasets.Features) -> datasets.Dataset:
    """One split, written to the cache as it is read: (image file, its other columns) per row."""
    stats = [(str(path), path.stat().st_size, path.stat().st_mtime_ns, columns) for path, columns in files]
    fingerprint = Hasher.hash((SOURCE, split, features.to_dict(), stats))
    return datasets.Dataset.from_generator(
        _rows, features=features, gen_kwargs={"files": files}, fingerprint=fingerprint, split=split
    )


def _rows(files):
    for path, columns in files:
        yield {"image": _image_cell(path), **columns}


def _image_cell(path: Path) -> dict | None:
    """The file's bytes as an Image cell, with no path; None (the pipeline's error row) when it cannot be read."""
    try:
        return {"bytes": images.read_file(path), "path": None}
    except images.ImageError:
        return None


def _conformed(ds: datasets.Dataset, name: str, target: str, aliases: tuple[str, ...]) -> datasets.Dataset:
    image = next((column for column, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if image is None:
        raise ValueError(f"no Image column for {name} in {', '.join(ds.column_names)}")
    if target == "label":
        labels = [c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
        source = "label" if "label" in labels else next(iter(labels), None)
    else:
        source = next((c for c in (target, *aliases) if c in ds.column_names), None)
    if source is None:
        wanted = "ClassLabel column" if target == "label" else f"column named {' or '.join((target, *aliases))}"
        raise ValueError(f"no {wanted} for {name} in {', '.join(ds.column_names)}")
    ds = ds.select_columns([image, source]).rename_columns({image: "image", source: target})
    if target != "label" and not isinstance(ds.features[target], datasets.List):
        ds = ds.map(lambda values: {target: [[v] for v in values]}, input_columns=target, batched=True)
    ds = ds.cast_column("image", datasets.Image(decode=False)).map(_bytes_only, input_columns="image", batched=True)
    return ds.cast(datasets.Features({"image": datasets.Image(), target: ds.features[target]}))


def _bytes_only(cells: list[dict | None]) -> dict:
    """Image cells as the archive loaders write them: bytes, no path. A copy stored as files (an imagefolder repo)
    has path-only cells, and the pipeline reads no path: the file is read here."""
    out = []
    for cell in cells:
        if cell and cell["bytes"] is not None:
            out.append({"bytes": cell["bytes"], "path": None})
        elif cell and cell["path"]:
            out.append(_image_cell(Path(cell["path"])))
        else:
            out.append(None)
    return {"image": out}


def _coco_captions(annotation: Path) -> tuple[list[tuple[int, str]], dict[int, list[str]]]:
    """(image id, file name) per image, and the captions of each image id, from a COCO captions file."""
    data = _read_json(annotation)
    try:
        pictures = [(picture["id"], picture["file_name"]) for picture in data["images"]]
        captions = defaultdict(list)
        for caption in data["annotations"]:
            captions[caption["image_id"]].append(str(caption["caption"]).strip())
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{annotation}: not a COCO captions file (images[{{id, file_name}}], annotations"
            f"[{{image_id, caption}}]): {exc!r}"
        ) from None
    return pictures, captions


def _vispr_annotation(path: Path) -> tuple[list[str], str | None]:
    anno = _read_json(path)
    labels = anno.get("labels") if isinstance(anno, dict) else None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f'{path}: no "labels" list of attribute ids')
    return labels, anno.get("image_path")


def _vispr_image(root: Path, fold: str, stem: str, image_path) -> Path:
    """The annotation's own "image_path" (relative to `root`) when it names a file inside `root`, else the
    authors' layout images/<fold>/<annotation name>.jpg."""
    if isinstance(image_path, str) and image_path:
        path = root / image_path
        inside = os.path.commonpath([os.path.realpath(root), os.path.realpath(path)]) == os.path.realpath(root)
        if inside and path.is_file():
            return path
    return root / "images" / fold / f"{stem}.jpg"


def _class_and_file(line: str, listing: Path) -> tuple[str, str]:
    """("kitchen", "int474.jpg") from "kitchen/int474.jpg"; a line naming anything else is refused."""
    name, _, file = line.partition("/")
    return _plain_name(name, listing), _plain_name(file, listing)


def _plain_name(name: str, listing: Path) -> str:
    """`name` when it is a file name that stays in its folder: what a list or annotation file may point at."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{listing}: {name!r} is not a plain file name")
    return name


def _read_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


def _jpgs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: expected {what}")
    return path


def _sizes(sizes: dict[str, int]) -> str:
    return " / ".join(f"{size} {split}" for split, size in sizes.items())


LOADERS = {"caltech101": caltech101, "indoor67": indoor67, "coco": coco, "vispr": vispr}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=LOADERS)
    parser.add_argument("--data", help="the folder the official archive was extracted into, or a Hub id")
    parser.add_argument("--out", required=True, type=Path, help="save_to_disk folder (new, or empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the class-stratified samples")
    args = parser.parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        sys.exit(f"loaders: not overwriting {args.out}: choose a new or empty folder")
    try:
        loaded = load(args.dataset, args.data, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"loaders: {exc}")
    loaded.dataset.save_to_disk(str(args.out))
    print(f"wrote {_sizes({split: len(ds) for split, ds in loaded.dataset.items()})} rows to {args.out}")


if __name__ == "__main__":
    main()
