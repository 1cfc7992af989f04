"""Stage configurations (small frozen dataclasses) and the named presets built from them."""
from __future__ import annotations

from dataclasses import dataclass, fields

STATUSES = ("kept_safe", "edited", "redacted", "dropped", "error")


@dataclass(frozen=True)
class InspectConfig:
    """Flag rows that carry privacy risks.

    backend "detectors": real face (CenterFace) and text (RapidOCR) detectors, offline on a CPU. A row is flagged
    when a face scores at least `face_threshold`, or a text line with at least two letters/digits is read with a
    confidence of at least `text_threshold`.
    """

    backend: str = "detectors"
    faces: bool = True
    text: bool = True
    face_threshold: float = 0.3  # recall first: 0.5 misses small crowd faces that ArcFace still matches
    text_threshold: float = 0.8
    face_max_side: int = 1536  # detector input limit; faces in larger images are found on a downscaled copy
    text_max_side: int = 960
    image_column: str = "image"
    output_column: str = "privacy_flag"
    detections_column: str = "detections"
    max_pixels: int | None = None  # None: images.MAX_PIXELS
    threads: int | None = None  # None: all cores in the main process, one per num_proc worker

    def __post_init__(self):
        if self.backend != "detectors":
            raise ValueError(f"Inspect backend {self.backend!r} is not available; use 'detectors'")
        if not (self.faces or self.text):
            raise ValueError("Inspect(backend='detectors') needs faces=True or text=True")
        for name in ("face_threshold", "text_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")


@dataclass(frozen=True)
class EditConfig:
    """Rewrite flagged rows.

    editor "redact": obscure each detected region (grown by `margin` of its size on every side) with `method`;
    flagged rows with no region to act on are obscured whole (`unlocated="obscure"`) or dropped ("drop").
    """

    editor: str = "redact"
    method: str = "pixelate"  # pixelate | blur | fill | inpaint
    margin: float = 0.25
    cells: int = 8  # pixelate: cells across a region's longer side (8 removes identity; see notes)
    whole_image_cells: int = 16  # pixelate cells across the longer side when a whole image is obscured
    unlocated: str = "obscure"
    image_column: str = "image"
    output_column: str = "safe_image"
    flag_column: str = "privacy_flag"
    detections_column: str = "detections"
    max_pixels: int | None = None
    threads: int | None = None

    def __post_init__(self):
        if self.editor != "redact":
            raise ValueError(f"Edit editor {self.editor!r} is not available; use 'redact'")
        if self.method not in ("pixelate", "blur", "fill", "inpaint"):
            raise ValueError(f"unknown redaction method {self.method!r}; use pixelate, blur, fill or inpaint")
        if self.unlocated not in ("obscure", "drop"):
            raise ValueError("unlocated must be 'obscure' or 'drop'")
        if self.margin < 0 or self.cells < 1 or self.whole_image_cells < 1:
            raise ValueError("margin must be >= 0 and cells >= 1")


# name -> {stage attribute: config}; the order is the order the stages run in.
PRESETS: dict[str, dict[str, object]] = {
    "lite": {"inspect": InspectConfig(), "edit": EditConfig()},
}


def field_names(config_class) -> set[str]:
    return {f.name for f in fields(config_class)}
