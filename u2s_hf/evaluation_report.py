"""What `u2s evaluate` writes: report.json, a Markdown table in the paper's layout and a privacy-utility plot."""

from __future__ import annotations

import json
from pathlib import Path

# (result key, column title); the arrow says which way is better.
COLUMNS = (
    ("accuracy", "Acc ↑"),
    ("bleu4", "BLEU-4 ↑"),
    ("cider", "CIDEr ↑"),
    ("vqa_accuracy", "VQA acc ↑"),
    ("face_similarity", "FaceSim ↓"),
    ("face_retention", "Face kept ↓"),
    ("text_similarity", "TextSim ↓"),
    ("race_entropy", "RaceEnt ↑"),
    ("vlm_score", "VLMScore ↑"),
    ("clip_score", "CLIP ↑"),
    ("ssim", "SSIM ↓"),
    ("lpips", "LPIPS ↑"),
)
PRIVACY = (("face_similarity", "FaceSim", "o"), ("text_similarity", "TextSim", "s"))
UTILITY = (
    ("accuracy", "top-1 accuracy (original test split)"),
    ("cider", "CIDEr (original test captions)"),
    ("vqa_accuracy", "VQA accuracy (original test questions)"),
    ("clip_score", "CLIP score (quality)"),
    ("ssim", "SSIM"),
)
FILES = ("report.json", "report.md", "tradeoff.png")
MARKER = ".u2s-evaluation"  # what `u2s evaluate` wrote may be written again; nothing else is replaced


class ReportError(ValueError):
    """The report cannot be written where asked; nothing was changed."""


def check_out(out_dir: str | Path) -> None:
    """Refuse, before any work, a folder where the report would replace files that `u2s evaluate` did not write
    (e.g. an anonymised release's own report.json, or a project's report.md)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a folder")
    taken = [name for name in FILES if (out / name).exists()]
    if taken and not (out / MARKER).is_file():
        raise ReportError(
            f"{out} already holds {', '.join(taken)} that u2s evaluate did not write: choose another --out"
        )


def write_report(results: dict[str, dict], out_dir: str | Path) -> list[Path]:
    """Write the report for runs {name: evaluate_datasets result}; the plot needs two runs or more."""
    check_out(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    written = [out / "report.json", out / "report.md"]
    written[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    written[1].write_text(markdown_table(results))
    if len(results) > 1:
        plot = tradeoff_plot(results, out / "tradeoff.png")
        if plot is not None:
            written.append(plot)
    return written


def markdown_table(results: dict[str, dict]) -> str:
    """One row per run, one column per metric that some run has; a mean shows how many items it is over
    ("0.8123 (998/1000)": scored / scored + missing)."""
    columns = [(key, title) for key, title in COLUMNS if any(r.get(key) is not None for r in results.values())]
    lines = ["| run |" + "".join(f" {title} |" for _, title in columns), "|---|" + "---|" * len(columns)]
    for name, result in results.items():
        lines.append(f"| {name} |" + "".join(f" {_cell(result, key)} |" for key, _ in columns))
    notes = sorted({f"{metric}: {why}" for r in results.values() for metric, why in r.get("skipped", {}).items()})
    return "\n".join(lines + ([""] + [f"- not measured: {note}" for note in notes] if notes else [])) + "\n"


def tradeoff_plot(results: dict[str, dict], path: Path) -> Path | None:
    """Privacy (FaceSim, TextSim; lower = safer) against utility, one point per run; None without the data."""
    x_key, x_label = next(
        ((k, label) for k, label in UTILITY if sum(r.get(k) is not None for r in results.values()) > 1), (None, None)
    )
    series = [
        (key, label, marker) for key, label, marker in PRIVACY if any(r.get(key) is not None for r in results.values())
    ]
    if x_key is None or not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4.5), dpi=120)
    for key, label, marker in series:
        points = [
            (r[x_key], r[key], name)
            for name, r in results.items()
            if r.get(x_key) is not None and r.get(key) is not None
        ]
        axes.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=label)
        for x, y, name in points:
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel(f"{x_label} →  more useful")
    axes.set_ylabel("similarity to the original ↓  safer")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path


def _cell(result: dict, key: str) -> str:
    """The value with its counts when it has them; a metric with nothing scored still shows over how many items
    ("– (0/3)")."""
    value = result.get(key)
    shown = "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    scored, missing = result.get(f"{key}_scored"), result.get(f"{key}_missing")
    if scored is None or missing is None or (value is None and not scored + missing):
        return shown
    return f"{shown} ({scored}/{scored + missing})"
