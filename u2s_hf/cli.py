"""The `u2s` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path

import datasets

from . import evaluation, evaluation_report, pipeline, release_card, report, shards, sources, training_config
from .judge_config import PAPER_JUDGE, JudgeConfig
from .publish import MAX_SHARD_SIZE, check_options, publish
from .release_folder import ReleaseError, ReleaseFolder


def build_parser() -> argparse.ArgumentParser:
    """The `u2s` command's parser."""
    parser = argparse.ArgumentParser(prog="u2s", description="Privacy-safe image datasets (Unsafe2Safe).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("anonymize", help="anonymise a dataset into a release folder")
    run.add_argument("src", help="a folder of images, a save_to_disk folder, a .parquet file, or a Hub id org/name")
    run.add_argument("--out", required=True, help="release folder to write (dataset, report.json, card, sheet)")
    run.add_argument(
        "--preset", default=pipeline.DEFAULT_PRESET, choices=sorted(pipeline.PRESETS), help="default: %(default)s"
    )
    run.add_argument("--split", help="only this split (default: every split)")
    run.add_argument("--image-column", help="column with the images (default: the first Image column)")
    run.add_argument("--num-proc", type=_positive, help="worker processes for datasets.map")
    run.add_argument("--batch-size", type=_positive, default=pipeline.MAP_BATCH_SIZE, help="default: %(default)s")
    run.add_argument("--limit", type=_positive, help="only the first K rows of each split")
    run.add_argument(
        "--shard-size",
        type=_positive,
        default=shards.SHARD_SIZE,
        metavar="N",
        help="work on N rows at a time and keep each finished shard: a rerun with the same arguments after a crash "
        "or kill resumes from the first unfinished one (default: %(default)s)",
    )
    run.add_argument(
        "--streaming",
        action="store_true",
        help="read a Parquet or Hub source as it is worked on, without downloading or loading it whole first",
    )
    run.add_argument(
        "--engine",
        choices=("datasets", "ray"),
        default="datasets",
        help="ray: run the stages as Ray Data actors, on this machine or a cluster (pip install 'u2s_hf[ray]'; "
        "default: %(default)s)",
    )
    run.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster (default: RAY_ADDRESS, else a local one)")
    run.add_argument("--concurrency", type=_positive, metavar="N", help="--engine ray: actors per stage")
    run.add_argument(
        "--num-gpus", type=float, default=0, metavar="G", help="--engine ray: GPUs per actor of a model stage"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[STAGE.]KEY=VALUE",
        type=parse_setting,
        help="change a preset setting (repeatable): STAGE.KEY=VALUE sets one stage (--set edit.method=blur, --set "
        "caption.model=ID); KEY=VALUE sets the one stage that has KEY, or every stage for settings that mean the "
        f"same in each ({', '.join(_shared_settings())}); VALUE is read as JSON when it can be "
        "(--set text=false, --set face_threshold=0.4)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier u2s release")
    run.add_argument("--name", help="the dataset's name in report.json and the card (default: the source's base name)")
    _add_keep_column(run, f"keep a column that is left out by default ({', '.join(pipeline.PATH_COLUMNS)}; repeatable)")
    run.add_argument("--push-to-hub", metavar="NAME", help="then publish --out as the Hub dataset NAME (u2s publish)")
    _add_publish_options(run)
    _add_publish(commands)
    _add_evaluate(commands)
    _add_train(commands)
    _add_app(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        commands = {"anonymize": _anonymize, "publish": _publish, "evaluate": _evaluate, "train": _train, "app": _app}
        return commands[args.command](args)
    except (sources.SourceError, ReleaseError, ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"u2s: error: {exc}", file=sys.stderr)
        return 2


def _anonymize(args) -> int:
    overrides = preset_overrides(args.set)
    pipeline.preset(args.preset, **overrides)  # refuse bad settings before anything is read or written
    _check_publish_options(args)
    _check_engine_options(args)
    src = Path(args.src)
    folder = ReleaseFolder(args.out, protect=[src] if src.exists() else [], overwrite=args.overwrite)
    with folder:  # locked: a second run into the same --out stops here
        source = sources.load(args.src, args.split, args.name, streaming=args.streaming)
        for name in source.skipped:
            print(f"u2s: skipped {name!r}: not an image that datasets loads (not in the release)", file=sys.stderr)
        ds = source.data
        image_column = sources.image_column_of(ds, args.image_column)
        if args.limit:
            ds = _limit(ds, args.limit)
        chosen = pipeline.preset(args.preset, image_column=image_column, **overrides)
        if args.engine == "ray":
            summary, work = _write_with_ray(ds, chosen, folder, source, image_column, args), None
        else:
            summary, work = _write_in_shards(ds, chosen, folder, source, image_column, args)
        out = folder.commit()
    if work is not None:
        work.remove()
    print(report.summary_line(summary, str(out)))
    return _publish(args, release=out, repo_id=args.push_to_hub) if args.push_to_hub else 0


def _write_in_shards(ds, chosen, folder: ReleaseFolder, source, image_column: str, args):
    """The release written into `folder.tmp` by the datasets engine, shard by shard: its report, and the work folder
    to remove once the release is in place."""
    options = dict(
        image_column=image_column,
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        image_root=str(source.image_root) if source.image_root else False,
        keep_columns=tuple(args.keep_columns),
    )
    safe, timings, work = _run_in_shards(ds, chosen, folder, args.shard_size, options)
    summary = report.build(safe, chosen, timings, source=source.name, skipped_files=len(source.skipped))
    release_card.write_beside(safe, folder.tmp, summary)
    return summary, work


def _write_with_ray(ds, chosen, folder: ReleaseFolder, source, image_column: str, args) -> dict:
    """The release written into `folder.tmp` by Ray Data actors: its report."""
    from . import ray as ray_engine  # ray is an optional extra

    return ray_engine.write_release(
        ds,
        folder.tmp,
        chosen,
        source=source,
        image_column=image_column,
        batch_size=args.batch_size,
        keep_columns=tuple(args.keep_columns),
        concurrency=args.concurrency,
        num_gpus=args.num_gpus,
        address=args.ray_address,
    )


def _check_engine_options(args) -> None:
    """Options that belong to one engine are refused with the other, before the run."""
    if args.engine == "ray":
        for name, unset in (("num_proc", None), ("streaming", False), ("shard_size", shards.SHARD_SIZE)):
            if getattr(args, name) != unset:
                raise ValueError(f"--{name.replace('_', '-')} is an option of --engine datasets, not of --engine ray")
        return
    for name, unset in (("ray_address", None), ("concurrency", None), ("num_gpus", 0)):
        if getattr(args, name) != unset:
            raise ValueError(f"--{name.replace('_', '-')} is an option of --engine ray")


def _run_in_shards(ds, chosen, folder: ReleaseFolder, shard_size: int, options: dict):
    """The release rows of every split, worked on shard by shard (see `shards`) and assembled in `folder.tmp`; the
    seconds per stage (per split for a DatasetDict, as `pipeline.run` gives them) and the work folder to remove once
    the release is in place."""
    several = isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict))
    splits = dict(ds) if several else {"all": ds}
    seen = [getattr(rows, "_fingerprint", None) for rows in splits.values()]  # None: a stream (digests suffice)
    work = shards.WorkFolder(folder.out, shards.settings_key(chosen, seen, shard_size, options))
    progress = shards.Progress()
    parts, timings = {}, {}
    for split, rows in splits.items():
        done, timings[split] = shards.run(rows, chosen, work, split, shard_size, progress, **options)
        parts[split] = shards.assemble(done, folder.tmp / split if several else folder.tmp)
    if several:
        shards.write_splits(folder.tmp, parts)
    if progress.kept:
        print(f"u2s: {progress.line()}", file=sys.stderr)
    if several:
        return datasets.DatasetDict(parts), timings, work
    return parts["all"], timings["all"], work


def _add_keep_column(parser, help: str) -> None:
    parser.add_argument("--keep-column", action="append", default=[], metavar="C", dest="keep_columns", help=help)


def _add_publish(commands) -> None:
    run = commands.add_parser("publish", help="publish a release folder on the Hugging Face Hub, behind a gate")
    run.add_argument("release", metavar="DST", help="a release folder written by u2s anonymize")
    run.add_argument("--repo-id", required=True, metavar="NAME", help="the dataset repo, e.g. org/name")
    _add_keep_column(run, "publish column C although it holds file names, paths or raw bytes (repeatable)")
    _add_publish_options(run)


# Options of `u2s publish` that `u2s anonymize --push-to-hub` takes too, with the value that means "not given".
PUBLISH_OPTIONS = {
    "public": False,
    "gated": None,
    "revision": None,
    "create_pr": False,
    "commit_message": None,
    "allow_unverified": False,
    "token": None,
    "license": None,
    "max_shard_size": None,
}


def _add_publish_options(run) -> None:
    run.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    run.add_argument("--gated", choices=("auto", "manual"), help="gate access: requests approved by the Hub or by you")
    run.add_argument("--revision", metavar="BRANCH", help="commit to this branch (made from main; default: main)")
    run.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    run.add_argument("--commit-message", metavar="M")
    run.add_argument(
        "--allow-unverified", action="store_true", help="publish rows that Verify did not pass, or that it never saw"
    )
    run.add_argument("--token", metavar="T", help="Hub token (default: HF_TOKEN or the saved login)")
    run.add_argument("--license", metavar="ID", help="the licence in the card, a Hub licence id (e.g. cc-by-4.0)")
    run.add_argument("--max-shard-size", metavar="SIZE", help=f"largest Parquet shard (default: {MAX_SHARD_SIZE})")


def _check_publish_options(args) -> None:
    """`u2s anonymize`: publish options need --push-to-hub, and are checked before the run, not after it."""
    if args.push_to_hub:
        check_options(args.push_to_hub, args.gated, args.max_shard_size)
        return
    given = [name for name, unset in PUBLISH_OPTIONS.items() if getattr(args, name) != unset]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} is an option of publishing: add --push-to-hub NAME")


def _publish(args, release=None, repo_id=None) -> int:
    for name in ("httpx", "httpx2"):  # huggingface_hub's HTTP client logs a line per request at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    published = publish(
        release or args.release,
        repo_id or args.repo_id,
        private=not args.public,
        gated=args.gated,
        revision=args.revision,
        create_pr=args.create_pr,
        token=args.token,
        allow_unverified=args.allow_unverified,
        keep_columns=tuple(args.keep_columns),
        commit_message=args.commit_message,
        license=args.license,
        max_shard_size=args.max_shard_size,
    )
    print(published.line())
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
    # The judge is a JudgeConfig: two options make it.
    judge = next(f for f in dataclasses.fields(evaluation.EvaluationConfig) if f.name == "judge")
    run.add_argument("--judge", metavar="ID", help=f"{judge.metadata['help']}: its id (e.g. {PAPER_JUDGE})")
    run.add_argument("--judge-url", help="OpenAI-compatible server that serves --judge (default: load it here)")
    add_dataclass_options(run, evaluation.EvaluationConfig, skip=("judge",))


def evaluation_config(args) -> evaluation.EvaluationConfig:
    """The EvaluationConfig that parsed `u2s evaluate` arguments ask for."""
    judge = JudgeConfig.named(args.judge, args.judge_url) if args.judge else None
    return dataclass_from_args(evaluation.EvaluationConfig, args, judge=judge)


def _evaluate(args) -> int:
    evaluation_report.check_out(args.out)  # before hours of scoring, not after
    config = evaluation_config(args)
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


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="fine-tune an editor on the triplets the pipeline wrote")
    trainers = train.add_subparsers(dest="trainer", required=True)
    run = trainers.add_parser(
        "instruct-pix2pix",
        help="fine-tune an InstructPix2Pix UNet (and Safe Cross Attention) on (image, safe_image, c_edit) triplets",
        description="Fine-tune an InstructPix2Pix pipeline on Unsafe2Safe triplets (the paper's recipe by default). "
        "One process here; `accelerate launch -m u2s_hf.cli train instruct-pix2pix ...` for several GPUs.",
    )
    add_dataclass_options(run, training_config.TrainConfig)


def _train(args) -> int:
    from . import training  # torch, diffusers and accelerate only for this command

    config = dataclass_from_args(training_config.TrainConfig, args)
    out = training.train_instruct_pix2pix(config)
    print(f"u2s train: wrote {out} (load it with u2s.Edit(editor='instruct-pix2pix', model='{out}'))")
    return 0


def _add_app(commands) -> None:
    run = commands.add_parser("app", help="a web page on this machine to try anonymising a few images (Gradio)")
    run.add_argument(
        "--preset", default=pipeline.DEFAULT_PRESET, choices=sorted(pipeline.PRESETS), help="default: %(default)s"
    )
    run.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s, this machine)")
    run.add_argument("--port", type=_positive, default=7860, help="default: %(default)s")


def _app(args) -> int:
    from . import app  # gradio is an optional extra (u2s_hf[app])

    def anonymize(argv: list[str]) -> int:  # the page's runs are `u2s anonymize` runs; app.py cannot import cli.py
        return _anonymize(build_parser().parse_args(["anonymize", *argv]))

    app.launch(args.preset, args.host, args.port, anonymize)
    return 0


def add_dataclass_options(parser, config_class, skip=()) -> None:
    """One option per field of `config_class` (a dataclass), as transformers' HfArgumentParser makes them: the name
    `--field-name`, the help text and any argparse options (`choices`, `metavar`, `type`, `aliases`: more option
    strings, shown first) from the field's metadata, the type from its annotation: bool -> `--name` / `--no-name`;
    int, float, str; a tuple of str -> a comma-separated list; `X | None` -> X. Defaults stay in the dataclass: an
    option not given is not set (`dataclass_from_args` leaves that field at its default); the help shows the
    default. A field without a default is a required option."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        options = dict(f.metadata)
        names = [*options.pop("aliases", ()), f"--{f.name.replace('_', '-')}"]
        kind = _option_type(config_class, f.name, hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if "help" in options:
            options["help"] = options["help"].replace("%", "%%") + _shown_default(default)
        if required:
            options["required"] = True
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = options.get("type", kind)
            if "choices" not in options:
                options.setdefault("metavar", "A,B,..." if kind is _comma_list else f.name.upper())
        parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, **options)


def dataclass_from_args(config_class, args, **values):
    """`config_class` made from the options `add_dataclass_options` added that were given, and `values`."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}
    return config_class(**{**given, **values})


def _shown_default(default) -> str:
    if default is None:
        return ""  # the help says what None means
    if isinstance(default, bool):
        return f" (default: {'yes' if default else 'no'})"
    shown = ",".join(default) if isinstance(default, tuple) else str(default)
    return f" (default: {shown.replace('%', '%%')})"


def _option_type(config_class, name, hint):
    """The argparse type of a field annotated `hint`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint, args = args[0], list(typing.get_args(args[0]))
    if hint in (bool, int, float, str):
        return hint
    if typing.get_origin(hint) is tuple and args in ([str, Ellipsis], [str]):
        return _comma_list
    raise TypeError(f"{config_class.__name__}.{name}: no command-line form for {hint}; pass skip=({name!r},)")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def preset_overrides(pairs) -> dict:
    """`--set` pairs as `pipeline.preset` keywords: KEY=VALUE flat, STAGE.KEY=VALUE in that stage's dict."""
    overrides: dict = {}
    for key, value in pairs:
        stage, dot, setting = key.partition(".")
        if not dot:
            if key in pipeline.STAGE_CLASSES:
                raise ValueError(f"--set {key}=...: {key} is a stage; set one of its settings: --set {key}.KEY=VALUE")
            overrides[key] = value
        elif stage in pipeline.STAGE_CLASSES and setting:
            overrides.setdefault(stage, {})[setting] = value
        else:
            raise ValueError(
                f"--set {key}=...: no stage {stage!r}; stages: {', '.join(pipeline.STAGE_CLASSES)} "
                "(e.g. --set edit.method=blur)"
            )
    return overrides


def _shared_settings() -> list[str]:
    """The shared settings (see `pipeline.preset`) that some stage has."""
    names = set().union(*(stage.config_class.setting_names() for stage in pipeline.STAGE_CLASSES.values()))
    return sorted(pipeline.SHARED_SETTINGS & names)


def _run_name(src: str, taken) -> str:
    name = Path(src.rstrip("/")).name or src
    return name if name not in taken else f"{name} ({len(taken) + 1})"


def _limit(ds, k):
    if hasattr(ds, "keys"):
        return type(ds)({split: _limit(part, k) for split, part in ds.items()})
    if isinstance(ds, datasets.IterableDataset):
        return ds.take(k)
    return ds.select(range(min(k, len(ds))))


def parse_setting(text: str) -> tuple[str, object]:
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
