"""The release folder (dataset + report + contact sheet + dataset card draft) and its card."""
from __future__ import annotations

import json
import shutil
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


class ReleaseError(ValueError):
    """The release folder cannot be written where asked."""


def write_release(ds, out_dir: str | Path, summary: dict, overwrite: bool = False) -> Path:
    """Write `ds` (release view) with `save_to_disk`, plus report.json, contact_sheet.png and a README.md card."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ReleaseError(f"{out} exists and is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    ds.save_to_disk(str(out))
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    first = ds if isinstance(ds, datasets.Dataset) else next(iter(ds.values()))
    sheet = run_report.contact_sheet(first) if "safe_image" in first.column_names else None
    if sheet is not None:
        sheet.save(out / "contact_sheet.png")
    (out / "README.md").write_text(dataset_card(summary))
    return out


def dataset_card(summary: dict) -> str:
    """A dataset card draft for the anonymised release: what was done, with what, and what it does not cover."""
    data = DatasetCardData(tags=["anonymized", "privacy", "u2s_hf"], pretty_name=_name(summary.get("source")))
    lines = [f"# {_name(summary.get('source'))} (anonymised)", "",
             f"An anonymised release of `{summary.get('source')}` made with u2s_hf (preset `{summary['preset']}`).",
             "This card is a draft: review it, and the contact sheet, before publishing.", "",
             "## Columns", ""]
    lines += [f"- `{name}`: {text}" for name, text in COLUMNS.items()]
    lines += ["", "## What was done", "", "| split | rows | flagged | " + " | ".join(_statuses(summary)) + " |",
              "|---" * (3 + len(_statuses(summary))) + "|"]
    for split, c in summary["counts"].items():
        lines.append(f"| {split} | {c['rows']} | {c['flagged']} | "
                     + " | ".join(str(c["status"].get(s, 0)) for s in _statuses(summary)) + " |")
    lines += ["", "Models:", ""]
    lines += [f"- {kind}: {m['model']} ({m['package']})" for kind, m in summary.get("models", {}).items()]
    lines += ["", "## Personal and Sensitive Information", "",
              "The original images are not part of this release, and every image was re-encoded without metadata "
              "(EXIF, GPS, XMP, ICC and text chunks).",
              "Rows flagged as risky were redacted where detectors located faces or readable text; flagged rows "
              "with nothing located were obscured whole; rows that could not be decoded carry no image."]
    if summary["preset"] == "lite":
        lines += ["", "The `lite` preset detects faces and readable text only. It does not look for licence plates "
                      "without readable characters, tattoos, bodies, homes, screens showing images, or other "
                      "identity cues, and detectors miss some faces (very small, occluded or strongly turned). "
                      "Treat this release as reduced-risk, not risk-free."]
    return str(DatasetCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines) + "\n"))


def _statuses(summary):
    return sorted({s for c in summary["counts"].values() for s in c["status"]})


def _name(source) -> str:
    return Path(str(source or "dataset").rstrip("/")).name or "dataset"
