"""Build the paper's editor-training set: (original, instruction, edited image) triplets, filtered by s_norm.

The input went through Stage 1 and kept its original images: a `save_to_disk` folder, a `.parquet` file or a Hub id
holding `image`, `privacy_flag`, `c_pub`, `c_edit` and `c_llm` (the Stage-1 maps Inspect, Caption and Instruct,
or `u2s.anonymize(ds, "paper", keep_original=True)`). Each flagged row is edited by the FreePrompt editor on Stable
Diffusion 1.5 from its merged caption `c_llm` (`--editor`, `--model`, `--prompt` choose others), scored with
`u2s.ScoreEdit` (s_norm = CLIP(c_pub, edited) / CLIP(c_pub, original)), and kept when s_norm > `--min-snorm` (the
paper's 0.7: it kept 47,623 of 51,401 COCO train2014 images). Rows the editor did not edit (no prompt, an earlier
error, an editor failure: Edit redacts those instead) are dropped, and so are rows without a score. OUT receives
`image`, `safe_image`, `c_edit`, `c_pub` and `s_norm` (`save_to_disk`); the kept and dropped counts are printed.

    python dataset_scripts/make_triplets.py STAGE1 OUT [--split train] [--min-snorm 0.7] [--set steps=50 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets

import u2s_hf as u2s
from u2s_hf import sources
from u2s_hf.cli import parse_setting
from u2s_hf.scoring import PAPER_CLIP
from u2s_hf.stages.score_edit import PAPER_MIN_SNORM, SNORM

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the paper's FreePrompt runs on Stable Diffusion 1.5
NEEDED = ("image", "privacy_flag", "c_pub", "c_edit", "c_llm")
COLUMNS = ("image", "safe_image", "c_edit", "c_pub", SNORM)


def make_triplets(
    ds: datasets.Dataset,
    editor: str = "freeprompt",
    model: str = SD15,
    prompt: str = "c_llm",
    clip_model: str = PAPER_CLIP,
    min_snorm: float = PAPER_MIN_SNORM,
    map_batch_size: int = 8,
    num_proc: int | None = None,
    **editor_settings,
) -> tuple[datasets.Dataset, dict]:
    """(the kept triplets, counts: rows, flagged, not_edited, not_scored, low, kept)."""
    missing = [name for name in NEEDED if name not in ds.column_names]
    if missing:
        raise ValueError(f"no column {', '.join(missing)} (columns: {', '.join(ds.column_names)}): run Stage 1 first")
    # Settings are checked before anything runs: a wrong editor or setting stops here.
    edit = u2s.Edit(editor=editor, model=model, prompt=prompt, **editor_settings)
    score = u2s.ScoreEdit(clip_model=clip_model)
    maps = dict(batched=True, batch_size=map_batch_size, num_proc=num_proc)
    ds = ds.cast_column("image", datasets.Image(decode=False))  # a corrupt file is an error row, not a crash
    # A missing flag counts as flagged (the pipeline's rule); such a row without prompts is dropped below.
    flagged = ds.filter(lambda flags: [f is not False for f in flags], input_columns="privacy_flag", **maps)
    edited = flagged.map(edit, with_rank=True, desc="edit", **maps)
    edited = edited.filter(lambda statuses: [s == "edited" for s in statuses], input_columns="u2s_status", **maps)
    scored = edited.map(score, with_rank=True, desc="s_norm", **maps)
    values = scored[SNORM]
    kept = scored.filter(lambda s: [v is not None and v > min_snorm for v in s], input_columns=SNORM, **maps)
    counts = {
        "rows": len(ds),
        "flagged": len(flagged),
        "not_edited": len(flagged) - len(edited),
        "not_scored": sum(v is None for v in values),
        "low": sum(v is not None and v <= min_snorm for v in values),
        "kept": len(kept),
    }
    return kept.select_columns(list(COLUMNS)).cast_column("image", datasets.Image()), counts


def report(counts: dict, min_snorm: float) -> str:
    c = counts
    return (
        f"kept {c['kept']:,} of {c['flagged']:,} flagged images (s_norm > {min_snorm}); "
        f"dropped {c['flagged'] - c['kept']:,}: {c['not_edited']:,} not edited, {c['not_scored']:,} not scored, "
        f"{c['low']:,} with s_norm <= {min_snorm}; {c['rows'] - c['flagged']:,} unflagged rows left out"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the Stage-1 dataset: a save_to_disk folder, a .parquet file or a Hub id")
    parser.add_argument("out", type=Path, help="folder to save the triplets to (must not exist, or be empty)")
    parser.add_argument("--split", help="the split to use, when SRC has several")
    parser.add_argument("--editor", default="freeprompt", help="the Edit editor (default: %(default)s)")
    parser.add_argument("--model", default=SD15, help="the editor's model (default: %(default)s)")
    parser.add_argument("--prompt", default="c_llm", help="the column the editor's prompt comes from (default: c_llm)")
    parser.add_argument("--clip-model", default=PAPER_CLIP, help="the open_clip model of s_norm (default: %(default)s)")
    parser.add_argument("--min-snorm", type=float, default=PAPER_MIN_SNORM, help="keep s_norm above this (0.7)")
    parser.add_argument("--batch-size", type=int, default=8, dest="map_batch_size", help="rows per map batch (8)")
    parser.add_argument("--num-proc", type=int, help="worker processes (one per GPU)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=parse_setting,
        metavar="KEY=VALUE",
        help="an editor setting (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.out.exists() and not (args.out.is_dir() and not any(args.out.iterdir())):
        sys.exit(f"make_triplets: not overwriting {args.out}: choose a new folder")
    try:
        ds = sources.open_source(args.src, args.split)
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1:
                raise ValueError(f"{args.src} has the splits {', '.join(ds)}: choose one with --split")
            ds = next(iter(ds.values()))
        triplets, counts = make_triplets(
            ds,
            editor=args.editor,
            model=args.model,
            prompt=args.prompt,
            clip_model=args.clip_model,
            min_snorm=args.min_snorm,
            map_batch_size=args.map_batch_size,
            num_proc=args.num_proc,
            **dict(args.set),
        )
    except (sources.SourceError, ValueError, TypeError) as exc:
        sys.exit(f"make_triplets: {exc}")
    triplets.save_to_disk(str(args.out))
    print(report(counts, args.min_snorm))
    print(f"wrote {len(triplets):,} triplets to {args.out}")


if __name__ == "__main__":
    main()
