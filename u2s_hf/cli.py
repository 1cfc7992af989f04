"""The `u2s` command."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import hub, pipeline, report, sources
from .config import PRESETS


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
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=_setting,
                     help="change a preset setting, e.g. --set method=blur --set text=false (repeatable)")
    run.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _anonymize(args)
    except (sources.SourceError, hub.ReleaseError, ValueError, TypeError, OSError) as exc:
        print(f"u2s: error: {exc}", file=sys.stderr)
        return 2


def _anonymize(args) -> int:
    ds = sources.open_source(args.src, args.split)
    image_column = sources.image_column_of(ds, args.image_column)
    if args.limit:
        ds = _limit(ds, args.limit)
    overrides = dict(args.set)
    chosen = pipeline.preset(args.preset, image_column=image_column, **overrides)
    safe, timings = pipeline.run(ds, chosen, image_column=image_column, num_proc=args.num_proc,
                                 batch_size=args.batch_size)
    summary = report.build(safe, chosen, timings, source=args.src)
    out = hub.write_release(safe, args.out, summary, overwrite=args.overwrite)
    print(report.summary_line(summary, str(out)))
    return 0


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
