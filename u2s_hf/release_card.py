"""What goes into a release folder (dataset + report + contact sheet + dataset card draft), and its card.

`release_folder.ReleaseFolder` checks, locks and moves the folder into place; publishing it is not done here."""

from __future__ import annotations

import collections
import html
import json
import re
from pathlib import Path

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
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


def write_beside(ds, out_dir: str | Path, summary: dict) -> Path:
    """Write report.json, contact_sheet.png and the README.md card beside `ds`, the release rows already in
    `out_dir` (a folder of a `release_folder.ReleaseFolder`, which checks, locks and moves it into place)."""
    out = Path(out_dir)
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


# What the `lite` preset does not look for (the README's "What `lite` does not cover").
LITE_NOT_COVERED = (
    "The `lite` preset finds faces and readable text only. It does not find licence plates without readable "
    "characters, tattoos, bodies and skin, homes and addresses shown as scenes, screens showing pictures, uniforms, "
    "flags, or any other identity cue from the Unsafe2Safe paper's nine criteria; those need the vision-language "
    "inspection of the `paper` preset. Detectors miss some faces (very small, occluded or strongly turned), and "
    "redaction removes context along with identity."
)
VERIFIED = "u2s_verified"
VERIFIED_TEXT = "the second check (Verify): True passed, False did not pass, empty when the row was not looked at"
# Verify's summary keys in report.json ("verify"), in the order the card shows them.
VERIFY_LABELS = {
    "looked_at": "rows looked at",
    "passed": "passed",
    "re_edited": "edited again",
    "obscured": "obscured whole",
    "dropped": "dropped",
    "not_verified": "not verified",
    "identity_not_checked": "rows whose identity was not checked",
}
_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def hub_card(
    ds: datasets.DatasetDict,
    summary: dict | None,
    repo_id: str,
    data_dir: str = "data",
    license: str | None = None,
    gated: bool = False,
    download_size: int | None = None,
    kept: tuple[str, ...] = (),
) -> str:
    """The README.md of a release published on the Hub (`u2s publish`): huggingface_hub's dataset card template,
    its YAML holding the `configs` (one `data_dir/<split>-*` pattern per split, as `push_to_hub` writes them),
    `dataset_info`, `pretty_name`, tags, size, the licence if given and, for a gated repo, the access prompt; its
    sections filled from the data (status counts per split, Verify's column) and from `summary` (report.json: preset,
    models and revisions, Verify's summary). `kept` names columns of file names or paths kept on purpose (said in
    the card). `summary` is None when a Dataset is published from Python: the card
    then says that it cannot name the models or settings. Text from the data, the report or the user goes through
    `card_text`."""
    first = next(iter(ds.values()))
    summary = summary or {}
    source = summary.get("source") or repo_id.rsplit("/", 1)[-1]
    preset = summary.get("preset")
    rows = sum(len(part) for part in ds.values())
    data = DatasetCardData(
        pretty_name=_one_line(f"{source} (anonymised)"),
        tags=["anonymized", "privacy", "u2s_hf"],
        license=license,
        size_categories=[next((label for limit, label in _SIZES if rows < limit), "n>1M")],
    )
    if gated:
        data.extra_gated_prompt = gate_prompt(preset)
        data.extra_gated_fields = {"I will not try to identify anyone in this dataset": "checkbox"}
    _metadata(ds, data, data_dir, download_size)
    card = DatasetCard.from_template(
        data,
        pretty_name=card_text(f"{source} (anonymised)"),
        license=card_text(license) if license else None,
        dataset_summary=_summary_text(card_text(source), preset, summary),
        dataset_description=_description(summary, repo_id),
        dataset_structure=_structure(ds, first),
        direct_use="Work on images in which people and readable text must not be identifiable: training and "
        "evaluating vision models, sharing examples. Check the statuses below for what each row went through.",
        out_of_scope_use="Any attempt to identify the people in the images or to recover what was removed.",
        data_collection_and_processing_section=_processing(summary),
        personal_and_sensitive_information=_sensitive(summary, kept),
        bias_risks_limitations=_limits(ds, preset, summary),
        bias_recommendations="Review `contact_sheet.png` and a sample of rows before you use or share the data. "
        "Report a face, name or other identity cue that was missed to whoever published this dataset, so that the "
        "row can be removed.",
        more_information=_versions(summary),
    )
    return str(card)


def gate_prompt(preset: str | None) -> str:
    """What a gated release's access form says about the data."""
    made = f"u2s_hf (preset {_one_line(preset)})" if preset else "u2s_hf"
    return (
        f"This dataset holds images anonymised automatically with {made}: people, readable text and other identity "
        "cues that were found were edited, redacted or obscured, but automatic detection misses some. Request "
        "access only if you agree not to try to identify anyone in it and to report anything that should have "
        "been removed."
    )


def _metadata(ds, data, data_dir, download_size) -> None:
    """The `configs` and `dataset_info` YAML of the card, as `datasets.push_to_hub` writes them."""
    files = [{"split": split, "path": f"{data_dir}/{split}-*"} for split in ds]
    MetadataConfigs({"default": {"data_files": files}}).to_dataset_card_data(data)
    splits = SplitDict()
    for split, part in ds.items():
        splits.add(SplitInfo(name=split, num_bytes=arrow_size(part), num_examples=len(part)))
    first = next(iter(ds.values()))
    size = sum(info.num_bytes for info in splits.values())
    info = DatasetInfo(features=first.features, splits=splits, download_size=download_size, dataset_size=size)
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)


def arrow_size(part) -> int:
    """The split's Arrow size, as `Dataset.push_to_hub` estimates it (images are embedded bytes already)."""
    total = part.data.nbytes
    return total * len(part) // len(part.data) if part._indices is not None and len(part.data) else total


def _summary_text(name, preset, summary) -> str:
    how = f" (the Unsafe2Safe method, preset {_code(preset)})" if preset else ""
    return (
        f"An anonymised release of {name}, made with u2s_hf{how}: every image was re-encoded without metadata, and "
        "images in which people or readable text were found were edited, redacted or obscured before release. "
        "The original images are not part of it."
    )


def _description(summary, repo_id) -> str:
    lines = [
        f"Load it with {_code(repo_id, call='datasets.load_dataset')}: each split is the Parquet files "
        "`data/<split>-*.parquet`, the images embedded as PNG bytes."
    ]
    if summary:
        lines += [
            "",
            "Published with `u2s publish` from a u2s release folder. Beside the data: `report.json` (every setting, "
            "the models and their versions, counts and timings of the run) and, when rows were flagged, "
            "`contact_sheet.png` (flagged rows: what the detectors located, drawn on grey, beside the image that "
            "was written).",
        ]
    else:
        lines += [
            "",
            "Published with `u2s_hf.publish` from a dataset in Python: no `report.json` or contact sheet came with "
            "it, so this card says only what the data's own columns say (statuses, flags, Verify's column) and "
            "cannot name the preset, settings or models that made it.",
        ]
    return "\n".join(lines)


def _structure(ds, first) -> str:
    described = {**COLUMNS, VERIFIED: VERIFIED_TEXT}
    lines = [f"- `{column}`: {text}" for column, text in described.items() if column in first.column_names]
    others = [card_text(c) for c in first.column_names if c not in described]
    if others:
        lines.append("- from the source, unchanged: " + ", ".join(others))
    return "\n".join([*lines, "", *_table(ds)])


def _table(ds) -> list[str]:
    """Rows, flags, statuses and Verify's answers per split, counted from the data published."""
    counts = {split: _counts(part) for split, part in ds.items()}
    statuses = sorted({s for c in counts.values() for s in c["status"]})
    verified = any(c["verified"] is not None for c in counts.values())
    head = ["split", "rows", "flagged", *statuses] + (["verified", "not passed", "not looked at"] if verified else [])
    lines = ["| " + " | ".join(card_text(h) for h in head) + " |", "|---" * len(head) + "|"]
    for split, c in counts.items():
        cells = [card_text(split), c["rows"], "–" if c["flagged"] is None else c["flagged"]]
        cells += [c["status"].get(s, 0) for s in statuses]
        if verified:
            v = c["verified"] or {}
            cells += [v.get(True, 0), v.get(False, 0), v.get(None, 0)]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def _counts(part) -> dict:
    names = part.column_names
    return {
        "rows": len(part),
        "flagged": sum(bool(f) for f in part["privacy_flag"]) if "privacy_flag" in names else None,
        "status": collections.Counter(part["u2s_status"]),
        "verified": collections.Counter(part[VERIFIED]) if VERIFIED in names else None,
    }


def _processing(summary) -> str:
    if not summary:
        return "Not recorded: this release was published without its `report.json`."
    stages = ", ".join(card_text(name) for name in summary.get("stages", {}))
    lines = [
        f"u2s_hf preset {_code(summary.get('preset'))}, stages: {stages or 'none recorded'}. Every "
        "setting is in `report.json`.",
        "",
        "Models:",
        "",
    ]
    for kind, model in summary.get("models", {}).items():
        parts = [f"- {card_text(kind)}: {card_text(model.get('model'))}"]
        if model.get("revision"):
            parts.append(f"revision {card_text(model['revision'])}")
        for key in ("package", "runtime", "file", "sha256"):
            if model.get(key):
                parts.append(f"{key} {card_text(model[key])}")
        lines.append(", ".join(parts))
    if not summary.get("models"):
        lines.append("- none recorded")
    skipped = summary.get("skipped_files")
    if skipped:
        lines += ["", f"{card_text(skipped)} files of the source could not be read as images and are not included."]
    return "\n".join(lines)


def _sensitive(summary, kept) -> str:
    columns = (
        "Columns that held file names or paths were left out"
        if not kept
        else "Columns that held file names or paths were left out, except "
        + ", ".join(_code(c) for c in kept)
        + ", kept on purpose by the publisher"
    )
    lines = [
        "The original images are not part of this dataset, and every image was re-encoded without metadata (EXIF, "
        f"GPS, XMP, ICC and text chunks). {columns}; no image carries a file path. Rows flagged as risky were "
        "edited, or redacted where faces or readable text were located, or obscured whole; rows marked `dropped` "
        "or `error` carry no image. The counts per split are under Dataset Structure.",
    ]
    failed = sum(c.get("model_failed", 0) for c in summary.get("counts", {}).values()) if summary else 0
    if failed:
        lines += [
            "",
            f"For {failed} rows a model request failed; they were treated as flagged and redacted or "
            "obscured without the model's answer (see `u2s_error`).",
        ]
    verify = summary.get("verify") if summary else None
    lines += ["", *(_verify(verify) if isinstance(verify, dict) else [])]
    return "\n".join(lines).rstrip()


def _verify(verify: dict) -> list[str]:
    """Verify's summary from report.json: whatever keys it has, the known ones first."""
    identity = verify.get("identity_model")
    if identity:
        how = f"identity checked with {card_text(identity)}."
    elif verify.get("identity_not_checked"):
        how = "identity not checked."
    else:  # only diffusion-edited rows need an identity model; redacted rows are checked for any face or text
        how = "no row needed an identity check (no identity model was set)."
    lines = ["A second check (Verify) looked at the written images: " + how, ""]
    keys = [k for k in VERIFY_LABELS if k in verify] + [k for k in verify if k not in VERIFY_LABELS]
    for key in keys:
        if key != "identity_model":
            lines.append(f"- {card_text(VERIFY_LABELS.get(key, key))}: {_value(verify[key])}")
    return lines


def _code(value, call: str | None = None) -> str:
    """`value` as inline code when it is a plain name (letters, digits, `_.-/`), else as escaped text: backslash
    escapes do not work inside a code span. `call` shows it as the argument of that function."""
    text = str(value)
    if _NAME.fullmatch(text):
        return f'`{call}("{text}")`' if call else f"`{text}`"
    return f"{call}({card_text(text)})" if call else card_text(text)


def _value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{card_text(k)} {_value(v)}" for k, v in value.items()) or "–"
    return card_text(value)


def _limits(ds, preset, summary) -> str:
    lines = []
    if preset == "lite":
        lines.append(LITE_NOT_COVERED)
    elif preset:
        lines.append(
            "Inspection and editing are automatic: a vision-language model judges what is private and a diffusion "
            "editor or redaction changes it. Models miss cues, and an edited image may keep identity cues or "
            "change more than it should."
        )
    else:
        lines.append("How these images were anonymised is not recorded here (no report.json came with them).")
    first = next(iter(ds.values()))
    if VERIFIED not in first.column_names:
        lines += ["", "Verify did not run on this release: no second check looked at the written images."]
    else:
        failed = sum(sum(v is False for v in part[VERIFIED]) for part in ds.values())
        if failed:
            lines += ["", f"{failed} rows did not pass Verify and were published anyway (`u2s_verified` False)."]
    verify = summary.get("verify") if summary else None
    if isinstance(verify, dict) and not verify.get("identity_model") and verify.get("identity_not_checked"):
        lines += [
            "",
            f"Verify did not check identity on {verify['identity_not_checked']} edited rows: no identity model "
            "compared their faces with the originals.",
        ]
    lines += ["", "Treat this dataset as reduced-risk, not risk-free."]
    return "\n".join(lines)


def _versions(summary) -> str:
    versions = summary.get("versions") if summary else None
    if not versions:
        return "Made with u2s_hf."
    return "Made with " + ", ".join(f"{card_text(k)} {card_text(v)}" for k, v in versions.items() if v) + "."
