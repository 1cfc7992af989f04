"""What goes into a release folder (dataset + report + contact sheet + dataset card draft), and its card.

`release_folder.ReleaseFolder` checks, locks and moves the folder into place; publishing it is not done here."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from . import report as run_report
from .config import STATUSES

COLUMNS = {
    "safe_image": "the anonymised image (PNG, no metadata); empty for rows that were dropped or could not be decoded",
    "privacy_flag": "True when the row was judged to carry privacy risks (uncertain rows count as flagged)",
    "detections": "what the detectors located: label, score and box [x0, y0, x1, y1]; no recognised text is stored",
    "u2s_status": "what happened to the row: " + ", ".join(STATUSES),
    "u2s_error": "a short reason when something went wrong or the whole image had to be obscured",
}


def write_release(ds, out_dir: str | Path, summary: dict) -> Path:
    """Write `ds` (release view) with `save_to_disk`, plus report.json, contact_sheet.png and a README.md card, into
    `out_dir` (a folder of a `release_folder.ReleaseFolder`, which checks, locks and moves it into place)."""
    out = Path(out_dir)
    ds.save_to_disk(str(out))
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    first = ds if isinstance(ds, datasets.Dataset) else next(iter(ds.values()))
    stages = summary.get("stages", {})
    columns = {  # the columns this run wrote, under the names its settings gave them
        "image_column": stages.get("edit", {}).get("output_column", "safe_image"),
        "flag_column": stages.get("inspect", {}).get("flag_column", "privacy_flag"),
        "detections_column": stages.get("inspect", {}).get("detections_column", "detections"),
    }
    usable = {columns["image_column"], columns["flag_column"]} <= set(first.column_names)
    sheet = run_report.contact_sheet(first, **columns) if usable else None
    if sheet is not None:
        sheet.save(out / "contact_sheet.png")
    (out / "README.md").write_text(dataset_card(summary))
    return out


def dataset_card(summary: dict) -> str:
    """A dataset card draft for the anonymised release: what was done, with what, and what it does not cover.

    Every text that comes from the user's data or settings (the source's name, split names, model ids) goes through
    `card_text`, so a folder named `<img src=x onerror=...>` or one with line breaks adds no HTML or Markdown.
    """
    source = summary.get("source") or "dataset"
    name = card_text(source)
    data = DatasetCardData(tags=["anonymized", "privacy", "u2s_hf"], pretty_name=_one_line(source))
    lines = [
        f"# {name} (anonymised)",
        "",
        f"An anonymised release of {name} made with u2s_hf (preset {card_text(summary['preset'])}).",
        "This card is a draft: review it, and the contact sheet, before publishing.",
        "",
        "## Columns",
        "",
    ]
    lines += [f"- `{column}`: {text}" for column, text in COLUMNS.items()]
    statuses = _statuses(summary)
    lines += [
        "",
        "## What was done",
        "",
        "| split | rows | flagged | " + " | ".join(statuses) + " |",
        "|---" * (3 + len(statuses)) + "|",
    ]
    for split, c in summary["counts"].items():
        lines.append(
            f"| {card_text(split)} | {c['rows']} | {c['flagged']} | "
            + " | ".join(str(c["status"].get(s, 0)) for s in statuses)
            + " |"
        )
    failed = sum(c.get("model_failed", 0) for c in summary["counts"].values())
    if failed:
        lines += [
            "",
            f"For {failed} rows a model request failed; they were treated as flagged and redacted or "
            "obscured without the model's answer (see `u2s_error`).",
        ]
    skipped = summary.get("skipped_files")
    if skipped:
        lines += ["", f"{skipped} files of the source could not be loaded as images and are not part of this release."]
    lines += ["", "Models:", ""]
    lines += [
        f"- {card_text(kind)}: {card_text(m['model'])} ({card_text(m['package'])})"
        for kind, m in summary.get("models", {}).items()
    ]
    lines += [
        "",
        "## Personal and Sensitive Information",
        "",
        "The original images are not part of this release, and every image was re-encoded without metadata "
        "(EXIF, GPS, XMP, ICC and text chunks). Columns that held file names or paths were left out.",
        "Rows flagged as risky were redacted where detectors located faces or readable text; flagged rows "
        "with nothing located were obscured whole; rows that could not be decoded carry no image.",
    ]
    if summary["preset"] == "lite":
        lines += [
            "",
            "The `lite` preset detects faces and readable text only. It does not look for licence plates "
            "without readable characters, tattoos, bodies, homes, screens showing images, or other "
            "identity cues, and detectors miss some faces (very small, occluded or strongly turned). "
            "Treat this release as reduced-risk, not risk-free.",
        ]
    return str(DatasetCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines) + "\n"))


# Characters that start Markdown syntax (links, images, emphasis, code, headings, tables, HTML).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def card_text(value) -> str:
    """Text from outside (a folder name, a column value) made inert in Markdown: one line, HTML special characters
    escaped, Markdown punctuation backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", _one_line(value))


def _one_line(value) -> str:
    """One line of printable text with HTML's special characters escaped."""
    printable = "".join(c if c.isprintable() else " " for c in str(value))
    return html.escape(" ".join(printable.split()), quote=False)


def _statuses(summary):
    return sorted({s for c in summary["counts"].values() for s in c["status"]})
