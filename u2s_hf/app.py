"""`u2s app`: a local Gradio page that anonymises uploaded images, or a few rows of a dataset, and shows each result.

The page never anonymises anything itself: each press of "Anonymize" writes the rows into a temporary folder as a
`save_to_disk` dataset and hands them to `u2s anonymize` (the CLI's own function, passed in by `cli.py`, which this
module must not import), then reads the release it wrote. So what the page shows is what the command writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from . import images, pipeline, report, sources
from .config import EditConfig, InspectConfig
from .release_folder import ReleaseError
from .stages.read import ReadImages

# The settings the page offers, with the defaults it shows; only those changed from them reach `--set`, so a preset
# whose stages do not have one (the paper's VLM flags without detectors) still runs at its defaults.
DEFAULTS = {
    "method": EditConfig.method,
    "faces": InspectConfig.faces,
    "text": InspectConfig.text,
    "face_threshold": InspectConfig.face_threshold,
    "text_threshold": InspectConfig.text_threshold,
}
METHODS = ("pixelate", "blur", "fill", "inpaint")
MAX_ROWS = 64  # one page of results; more belongs on the command line
PANEL = 512  # longer side of the detections panel
VERIFIED = {True: ", verified", False: ", not verified"}  # None: Verify did not look at the row
# What `u2s anonymize` raises for a run it refuses (cli.main reports the same ones).
RUN_ERRORS = (sources.SourceError, ReleaseError, ValueError, TypeError, OSError, RuntimeError)
UNDECODED = datasets.Image(decode=False)  # cells as stored: {bytes, path}


@dataclasses.dataclass
class Result:
    """One row as the page shows it: the original, the released image, where the detectors found something."""

    name: str
    before: np.ndarray | None
    after: np.ndarray | None
    found: Image.Image | None
    status: str
    reason: str | None


def launch(preset: str, host: str, port: int, anonymize: Callable[[list[str]], int]) -> None:
    """Serve the page on host:port until interrupted or terminated. `anonymize(argv)` runs `u2s anonymize argv`."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds, so the folder below is removed on `kill` too
    with tempfile.TemporaryDirectory(prefix="u2s-app-") as root:
        # Gradio keeps uploads and the images it shows in this folder (read when it is imported, or the page built);
        # the folder goes with the app, and files older than 15 minutes go before that.
        os.environ["GRADIO_TEMP_DIR"] = root
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check: nothing leaves
        page(preset, anonymize, Path(root)).launch(
            server_name=host,
            server_port=port,
            share=False,
            show_error=True,
            max_file_size=images.MAX_FILE_BYTES,  # the largest file the CLI reads
            ssr_mode=False,  # no Node server
            mcp_server=False,
        )


def page(preset: str, anonymize: Callable[[list[str]], int], root: Path):
    """The Gradio Blocks of the page; each run works in a folder of its own inside `root`."""
    try:
        import gradio as gr
    except ImportError as exc:  # an optional extra: only `u2s app` needs it
        raise ImportError("u2s app needs gradio: pip install 'u2s_hf[app]'") from exc

    with gr.Blocks(title="u2s: anonymise images", analytics_enabled=False, delete_cache=(300, 900)) as blocks:
        gr.Markdown(
            "# u2s: anonymise images\nDrop images (or name a dataset and rows), press **Anonymize**: they go through "
            "`u2s anonymize` on this machine. Nothing is sent anywhere: the files stay in a temporary folder, "
            "deleted after 15 minutes or when the app stops."
        )
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath")
                with gr.Accordion("Or rows of a dataset", open=False):
                    src = gr.Textbox(label="Dataset: an image folder, save_to_disk folder, .parquet file or Hub id")
                    split = gr.Textbox(label="Split (empty: the first)")
                    with gr.Row():
                        start = gr.Number(0, precision=0, minimum=0, label="From row")
                        stop = gr.Number(8, precision=0, minimum=1, label="To row (not included)")
            with gr.Column():
                chosen = gr.Dropdown(sorted(pipeline.PRESETS), value=preset, label="Preset")
                method = gr.Dropdown(list(METHODS), value=DEFAULTS["method"], label="Redaction method")
                with gr.Row():
                    faces = gr.Checkbox(DEFAULTS["faces"], label="Faces")
                    text = gr.Checkbox(DEFAULTS["text"], label="Text")
                face_threshold = gr.Slider(0.05, 0.95, DEFAULTS["face_threshold"], step=0.05, label="Face threshold")
                text_threshold = gr.Slider(0.05, 0.95, DEFAULTS["text_threshold"], step=0.05, label="Text threshold")
        button = gr.Button("Anonymize", variant="primary")
        summary = gr.Markdown(elem_id="u2s-summary")
        downloads = gr.File(label="Downloads: the anonymised images and the release folder", file_count="multiple")
        results = gr.State([])

        @gr.render(inputs=results)
        def show(rows: list[Result]):
            for row in rows:
                with gr.Row(elem_classes="u2s-result"):
                    if row.before is not None:
                        gr.ImageSlider((row.before, row.after), format="png", label=f"{row.name}: before / after")
                    if row.found is not None:
                        gr.Image(
                            row.found,
                            format="png",
                            label="Detections (drawn on grey)",
                            buttons=["download", "fullscreen"],
                        )
                    gr.Markdown(f"**{row.name}**: {row.status}" + (f": {row.reason}" if row.reason else ""))

        def run(files, src, split, start, stop, chosen, method, faces, text, face_threshold, text_threshold):
            settings = dict(
                method=method, faces=faces, text=text, face_threshold=face_threshold, text_threshold=text_threshold
            )
            # A generator: Gradio copies the downloads to its cache before it asks for more, and only then is the
            # run's folder deleted.
            with tempfile.TemporaryDirectory(prefix="run-", dir=root) as work:
                try:
                    rows, line, files_out = anonymize_rows(
                        Path(work), anonymize, files, src, split, start, stop, chosen, settings
                    )
                except RUN_ERRORS as exc:
                    yield [], f"**Could not run:** {exc}", None
                    return
                yield rows, line, files_out

        button.click(
            run,
            inputs=[files, src, split, start, stop, chosen, method, faces, text, face_threshold, text_threshold],
            outputs=[results, summary, downloads],
        )
    return blocks


def anonymize_rows(work: Path, anonymize: Callable[[list[str]], int], files, src, split, start, stop, preset, settings):
    """Run `u2s anonymize` on the uploaded `files`, else rows [start, stop) of `src`, inside `work`: the rows as the
    page shows them, the run's summary line, and the files to download."""
    if files:
        rows = datasets.Dataset.from_dict(
            {"image": [{"bytes": images.read_file(f), "path": None} for f in files]},
            features=datasets.Features({"image": datasets.Image()}),
        )
        names, name = [Path(f).name for f in files], "uploads"
    elif src and src.strip():
        rows, first = dataset_rows(src.strip(), split.strip() or None, int(start or 0), int(stop or 0))
        names, name = [f"row {first + i}" for i in range(len(rows))], src.strip()
    else:
        raise ValueError("drop one or more images first, or name a dataset")
    column = sources.image_column_of(rows, None)
    rows.save_to_disk(str(work / "input"))
    argv = [str(work / "input"), "--out", str(work / "release"), "--preset", preset, "--name", name]
    for key, value in settings.items():
        if value != DEFAULTS[key]:
            argv += ["--set", f"{key}={json.dumps(value)}"]
    anonymize(argv)
    release = datasets.load_from_disk(str(work / "release"))  # one row per input row, in order
    cells = rows.cast_column(column, UNDECODED)[column]
    shown = [_result(n, cell, row) for n, cell, row in zip(names, cells, release, strict=True)]
    summary = json.loads((work / "release" / "report.json").read_text())
    return shown, report.summary_line(summary, "the release"), _downloads(work, release, names)


def dataset_rows(src: str, split: str | None, start: int, stop: int) -> tuple[datasets.Dataset, int]:
    """Rows [start, stop) of `src` (its first split unless `split` names one) with their image bytes in the cells,
    read as `u2s anonymize` reads them: a path-only cell only from the image folder the user named, else the row is
    an error row. A Hub dataset or a .parquet file is streamed: only these rows are read. Also the first row's index.
    """
    if not 0 <= start < stop or stop - start > MAX_ROWS:
        raise ValueError(f"choose rows from >= 0 to a larger number, at most {MAX_ROWS} rows")
    path = Path(src)
    streamed = path.suffix == ".parquet" or (not path.exists() and bool(sources.HUB_ID.match(src)))
    source = sources.load(src, split, streaming=streamed)
    data = source.data
    if not isinstance(data, sources.DATASETS):
        data = data[next(iter(data))]
    column = sources.image_column_of(data, None)
    data = data.cast_column(column, UNDECODED)
    if streamed:
        data = datasets.Dataset.from_list(list(data.skip(start).take(stop - start)), features=data.features)
    else:
        data = data.select(range(min(start, len(data)), min(stop, len(data))))
    if len(data) == 0:
        raise ValueError(f"{src} has no rows from {start} to {stop}")
    # The CLI's own first stage, so that save_to_disk, which reads the file of any path-only cell, finds none. In
    # memory: a cache file would be written beside the user's dataset.
    read = ReadImages(image_column=column, image_root=str(source.image_root) if source.image_root else None)
    data = data.map(read, batched=True, keep_in_memory=True)
    # A cell it could not read is {bytes: None, path: None}, which save_to_disk cannot write (datasets 5.2 fails on
    # it); an empty cell says the same, and the row's error is already in u2s_error.
    return data.map(_empty_unread, fn_kwargs={"column": column}, batched=True, keep_in_memory=True), start


def _empty_unread(batch: dict, column: str) -> dict:
    return {column: [cell if cell and cell["bytes"] else None for cell in batch[column]]}


def _result(name: str, cell: dict, row: dict) -> Result:
    try:
        before = images.decode(cell)
    except images.ImageError:
        before = None  # the release row says why
    after = row.get("safe_image")
    found = None if before is None else detections_panel(before.shape[1::-1], row.get("detections") or [])
    return Result(
        name=name,
        before=before,
        after=None if after is None else np.asarray(after.convert("RGB")),
        found=found,
        status=row["u2s_status"] + VERIFIED.get(row.get("u2s_verified"), ""),
        reason=row.get("u2s_error"),
    )


def detections_panel(size: tuple[int, int], detections: list[dict]) -> Image.Image:
    """The detections as boxes on grey, as the release's contact sheet draws them (never original pixels)."""
    return report.detections_on_grey(size, detections, min(1.0, PANEL / max(size)), scores=True)


def _downloads(work: Path, release: datasets.Dataset, names: list[str]) -> list[str]:
    """The released images as stored (PNG, no metadata) and the release folder as a zip."""
    out = work / "downloads"
    out.mkdir()
    files = []
    for i, (name, cell) in enumerate(
        zip(names, release.cast_column("safe_image", UNDECODED)["safe_image"], strict=True)
    ):
        if cell and cell.get("bytes"):
            path = out / f"{i:03d}-{Path(name).stem.replace(' ', '-')}-safe.png"
            path.write_bytes(cell["bytes"])
            files.append(str(path))
    files.append(shutil.make_archive(str(out / "u2s-release"), "zip", work / "release"))
    return files
