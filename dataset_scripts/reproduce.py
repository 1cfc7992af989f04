"""The paper's experiments end to end on one of its datasets: load, anonymise (Stage 1, Stage 2, Verify), evaluate,
and write `DIR/tables.md` with the paper's published numbers beside ours and the differences.

    python dataset_scripts/reproduce.py --dataset caltech101 --data PATH_OR_HUB_ID --preset paper --out DIR
        [--metrics GROUPS] [--limit N] [--compare DP2_DIR ...] [--set KEY=VALUE ...] [--epochs E]

What it runs, all through the `u2s` command's own functions (nothing here anonymises or scores by itself):
`loaders.load` -> `DIR/original` (save_to_disk) -> `u2s anonymize` -> `DIR/anonymized` (a release; rerun the
script with the same arguments after a crash and it resumes from the release's shards) -> `u2s evaluate` with the
metric groups the paper reports for the dataset -> `DIR/evaluation/` -> `DIR/tables.md`. For VISPR the paper
reports the Stage-1 check instead: the release's `privacy_flag` against VISPR's labels (an image is private unless
its only label is `a0_safe`), recall first. The paper's numbers are always printed, whatever the preset: the
difference column is ours minus the paper's "U2S FE LLM" row (the `paper` preset's method); with `lite` it says
how far redaction is from it. What could not be measured is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from u2s_hf import cli

import loaders

# The metric groups the paper reports for each dataset (Tables 2-4; VISPR: the Stage-1 check, section 5.1).
GROUPS = {
    "caltech101": ("quality", "cheating", "privacy", "utility"),
    "indoor67": ("quality", "cheating", "privacy", "utility"),
    "coco": ("privacy", "utility"),
    "vispr": (),
}
# The utility task each dataset is measured with, where it is not classification (Table 4: captioning on COCO).
UTILITY_TASKS = {"coco": "captioning"}
# The paper's published numbers: {dataset: {row: {metric: value}}}. Accuracy in percent, as printed there.
PAPER = {
    "caltech101": {
        "raw": {"accuracy": 94.277, "face_similarity": 1.0, "text_similarity": 1.0, "race_entropy": 0.4384},
        "U2S FE c_pub": {
            "accuracy": 94.487,
            "face_similarity": 0.4881,
            "text_similarity": 0.5395,
            "race_entropy": 0.6409,
        },
        "U2S FE LLM": {
            "accuracy": 92.884,
            "face_similarity": 0.3428,
            "text_similarity": 0.4881,
            "race_entropy": 0.8751,
            "clip_score": 0.2865,
            "ssim": 0.8551,
            "lpips": 0.1168,
        },
        "DeepPrivacy2": {
            "accuracy": 94.601,
            "face_similarity": 0.3921,
            "text_similarity": 0.9569,
            "race_entropy": 0.7315,
            "ssim": 0.9817,
        },
        "FaceAnonSimple": {
            "accuracy": 94.849,
            "face_similarity": 0.4586,
            "text_similarity": 0.9355,
            "race_entropy": 0.6091,
        },
    },
    "indoor67": {
        "raw": {"accuracy": 83.881, "face_similarity": 1.0, "text_similarity": 1.0, "race_entropy": 0.7443},
        "U2S FE c_pub": {
            "accuracy": 80.746,
            "face_similarity": 0.2883,
            "text_similarity": 0.2896,
            "race_entropy": 0.7208,
        },
        "U2S FE LLM": {
            "accuracy": 80.746,
            "face_similarity": 0.2294,
            "text_similarity": 0.2119,
            "race_entropy": 0.7643,
            "clip_score": 0.3251,
            "ssim": 0.6484,
            "lpips": 0.2896,
        },
        "DeepPrivacy2": {
            "accuracy": 84.030,
            "face_similarity": 0.3547,
            "text_similarity": 0.8653,
            "race_entropy": 0.7547,
            "ssim": 0.9608,
        },
        "FaceAnonSimple": {
            "accuracy": 84.030,
            "face_similarity": 0.5045,
            "text_similarity": 0.7701,
            "race_entropy": 0.7407,
        },
    },
    "coco": {
        "raw": {"bleu4": 0.436, "cider": 1.413},
        "U2S FE LLM": {"bleu4": 0.423, "cider": 1.363, "face_similarity": 0.1975, "text_similarity": 0.1276},
    },
    "vispr": {
        "U2S FE LLM": {
            "recall": 0.975,
            "precision": 0.793,
            "f1": 0.874,
            "face_recall": 0.850,
            "face_precision": 0.927,
            "face_f1": 0.887,
        },
    },
}
ROW = "U2S FE LLM"  # the paper's row the difference column is taken against
TITLES = {
    "accuracy": "Acc (%)",
    "face_similarity": "FaceSim ↓",
    "text_similarity": "TextSim ↓",
    "race_entropy": "RaceEnt ↑",
    "clip_score": "CLIP ↑",
    "ssim": "SSIM ↓",
    "lpips": "LPIPS ↑",
    "bleu4": "BLEU-4 ↑",
    "cider": "CIDEr ↑",
    "recall": "Recall ↑",
    "precision": "Precision ↑",
    "f1": "F1 ↑",
    "face_recall": "Face recall ↑",
    "face_precision": "Face precision ↑",
    "face_f1": "Face F1 ↑",
}
SAFE_LABEL = "a0_safe"
FACE_LABELS = ("a9_face_complete", "a10_face_partial")  # VISPR's Face group (a9, a10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(GROUPS))
    parser.add_argument("--data", required=True, help="the extracted archive's folder, or a Hub id")
    parser.add_argument("--preset", default="paper", choices=("paper", "paper-ip2p", "lite"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--metrics", help="comma-separated metric groups (default: the paper's for the dataset)")
    parser.add_argument("--limit", type=int, help="only the first N rows of each split")
    parser.add_argument("--compare", nargs="+", default=[], metavar="DIR", help="other anonymised releases")
    parser.add_argument("--set", action="append", default=[], metavar="[STAGE.]KEY=VALUE", help="as u2s anonymize")
    parser.add_argument("--epochs", type=int, help="utility training epochs (default: the paper's)")
    args, evaluate_options = parser.parse_known_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    original = out / "original"
    if not (original / "dataset_dict.json").is_file():
        loaders.load(args.dataset, args.data).dataset.save_to_disk(str(original))  # the loader prints its notes
    anonymized = out / "anonymized"
    if not anonymized.is_dir():
        command = ["anonymize", str(original), "--out", str(anonymized), "--preset", args.preset]
        command += [option for setting in args.set for option in ("--set", setting)]
        command += ["--limit", str(args.limit)] if args.limit else []
        if cli.main(command) != 0:
            return 1
    groups = args.metrics.split(",") if args.metrics else list(GROUPS[args.dataset])
    results, missing = {}, {}
    if groups:
        evaluation = out / "evaluation"
        command = ["evaluate", "--original", str(original), "--anonymized", str(anonymized), "--out", str(evaluation)]
        command += ["--compare", *args.compare] if args.compare else []
        command += ["--metrics", ",".join(groups), *(["--epochs", str(args.epochs)] if args.epochs else [])]
        command += ["--utility-task", UTILITY_TASKS[args.dataset]] if args.dataset in UTILITY_TASKS else []
        if cli.main([*command, *evaluate_options]) != 0:
            return 1
        results = json.loads((evaluation / "report.json").read_text())
    if args.dataset == "vispr":
        results["anonymized"] = {**results.get("anonymized", {}), **stage1_check(anonymized)}
    for run in results.values():
        missing.update({f"{metric}": why for metric, why in run.get("skipped", {}).items()})
    (out / "tables.md").write_text(tables(args.dataset, args.preset, results, missing))
    print((out / "tables.md").read_text(), end="")
    return 0


def stage1_check(release: Path) -> dict:
    """Stage 1's flag against VISPR's labels, pooled over the release's splits: recall, precision and F1 for every
    private image (any label but a0_safe) and for the Face group."""
    loaded = datasets.load_from_disk(str(release))
    parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    flags, labels = [], []
    for part in parts:
        flags += part["privacy_flag"]
        labels += part["labels"]
    private = [set(row) != {SAFE_LABEL} for row in labels]
    scores = _detection_scores(flags, private)
    # The Face group as a binary task of its own, as we read the paper: images with a face label against safe ones
    # (images private for other reasons are left out: a flag on them is neither right nor wrong about faces).
    face = [
        (flag, bool(set(row) & set(FACE_LABELS)))
        for flag, row, is_private in zip(flags, labels, private, strict=True)
        if set(row) & set(FACE_LABELS) or not is_private
    ]
    face_scores = _detection_scores([flag for flag, _ in face], [is_face for _, is_face in face])
    return {**scores, **{f"face_{name}": value for name, value in face_scores.items()}}


def _detection_scores(flags: list, truth: list) -> dict:
    """Recall, precision and F1 of `flags` (predicted private) against `truth`; None where undefined."""
    hits = sum(1 for f, t in zip(flags, truth, strict=True) if f and t)
    recall = hits / sum(truth) if any(truth) else None
    precision = hits / sum(bool(f) for f in flags) if any(flags) else None
    f1 = 2 * recall * precision / (recall + precision) if recall and precision else None
    return {"recall": recall, "precision": precision, "f1": f1}


def tables(dataset: str, preset: str, results: dict, missing: dict) -> str:
    """The paper's table for `dataset`: its published rows, ours, and ours minus its U2S FE LLM row."""
    paper = PAPER[dataset]
    metrics = [m for m in TITLES if any(m in row for row in paper.values()) or any(m in r for r in results.values())]
    head = ["run", *(TITLES[m] for m in metrics)]
    lines = [f"# {dataset}: the paper's numbers and ours (preset {preset})", ""]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, row in paper.items():
        lines.append("| " + " | ".join([f"paper: {name}", *(_cell(row.get(m)) for m in metrics)]) + " |")
    for name, result in results.items():
        ours = {m: _ours(m, result.get(m)) for m in metrics}
        lines.append("| " + " | ".join([f"ours: {name}", *(_cell(ours[m]) for m in metrics)]) + " |")
        differences = [_difference(ours[m], paper.get(ROW, {}).get(m)) for m in metrics]
        lines.append("| " + " | ".join([f"ours − paper {ROW}", *differences]) + " |")
    if missing:
        lines += ["", "Not measured:", ""] + [f"- {metric}: {why}" for metric, why in sorted(missing.items())]
    return "\n".join(lines) + "\n"


def _ours(metric: str, value):
    """Our value in the paper's unit (accuracy: percent)."""
    return value * 100 if metric == "accuracy" and value is not None else value


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _difference(ours, paper) -> str:
    return "–" if ours is None or paper is None else f"{ours - paper:+.4f}"


if __name__ == "__main__":
    sys.exit(main())
