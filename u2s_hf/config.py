"""Stage configurations (small frozen dataclasses) and the named presets built from them."""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import asdict, dataclass, fields
from urllib.parse import urlsplit, urlunsplit

STATUSES = ("kept_safe", "edited", "redacted", "dropped", "error")
# The paper's demographic groups for `Instruct(demographics="uniform")`.
GROUPS = (
    "White",
    "Black",
    "East Asian",
    "South Asian",
    "Southeast Asian",
    "Middle Eastern or North African",
    "Indigenous or Pacific Islander",
    "Hispanic or Latino",
)


def freeze_criteria(criteria):
    """Criteria in a hashable form: None, a tuple of names, or a tuple of (name, description) pairs."""
    if criteria is None or isinstance(criteria, tuple):
        return criteria
    if isinstance(criteria, str):
        return (criteria,)
    if isinstance(criteria, dict):
        return tuple((str(k), str(v)) for k, v in criteria.items())
    return tuple(criteria)


# Caps on pixelation, measured against identity (ArcFace as in tests/test_identity.py, a match is cosine >= 0.35;
# notes/offline-models.md has the same for dlib). Face regions (grown by 0.25) pixelated to 8 cells across their
# longer side matched no original face on any test photo (highest cosine 0.23), while at 12 and 16 cells the
# crowd photo's small faces matched again (0.57 and 0.66): so regions get at most 8. Whole images obscured with 16
# cells left no detectable face even when the image is one face (25 face crops of those photos): at most 16.
MAX_CELLS = 8
MAX_WHOLE_IMAGE_CELLS = 16


def _positive(v):
    return v > 0


# Allowed values of numeric settings, by field name (None, where a field allows it, is always allowed).
RANGES = {
    "face_threshold": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "text_threshold": (lambda v: 0 < v <= 1, "in (0, 1]"),
    **dict.fromkeys(
        (
            "face_max_side",
            "text_max_side",
            "image_max_side",
            "max_new_tokens",
            "merge_max_new_tokens",
            "resolution",
            "batch_size",
            "steps",
            "max_pixels",
            "timeout",
            "concurrency",
            "threads",
        ),
        (_positive, "> 0"),
    ),
    "retries": (lambda v: v >= 0, ">= 0"),
    "margin": (lambda v: v >= 0, ">= 0"),
    "cells": (lambda v: 1 <= v <= MAX_CELLS, f"between 1 and {MAX_CELLS} (more cells keep faces recognisable)"),
    "whole_image_cells": (
        lambda v: 1 <= v <= MAX_WHOLE_IMAGE_CELLS,
        f"between 1 and {MAX_WHOLE_IMAGE_CELLS} (more cells keep faces recognisable)",
    ),
}
_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "None"}


@functools.cache
def _field_types(config_class) -> dict:
    """{field: the types its annotation allows}; None for fields that check themselves (object, tuple)."""
    hints = typing.get_type_hints(config_class)
    kinds = {}
    for f in fields(config_class):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        kinds[f.name] = allowed if all(k in _KINDS for k in allowed) else None
    return kinds


def _is(kind, value) -> bool:
    """Whether `value` is of the annotated `kind`: a bool is not an int, an int is a float, NaN/inf are not."""
    if kind is type(None):
        return value is None
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


class Settings:
    """Base of every config: each field is checked against its annotation and its range (RANGES) when the config
    is made, then the config's own `validate()` runs. A setting that cannot be used is refused, never ignored."""

    def __post_init__(self):
        for name, kinds in _field_types(type(self)).items():
            value = getattr(self, name)
            if kinds is not None and not any(_is(kind, value) for kind in kinds):
                raise TypeError(f"{name} must be {' or '.join(_KINDS[k] for k in kinds)}, not {value!r}")
            if name in RANGES and value is not None and not RANGES[name][0](value):
                raise ValueError(f"{name} must be {RANGES[name][1]}, not {value!r}")
        self.validate()

    def validate(self):
        """The config's own checks (settings that depend on each other)."""

    def refuse_changed(self, names, owner: str, here: str, defaults: dict | None = None):
        """Refuse any of `names` changed from its default (or `defaults[name]`): it is `owner`'s, unused `here`."""
        defaults = {**{f.name: f.default for f in fields(self)}, **(defaults or {})}
        for name in names:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{name} is {owner}; {here} does not use it (leave it at {defaults[name]!r})")


@dataclass(frozen=True)
class ModelSettings(Settings):
    """Where a Stage-1 language model runs.

    backend "vlm" / "llm": transformers in this process, `model` a Hub id or a local folder (+ `revision`), batched
    `batch_size` rows at a time; dtype "auto" is bfloat16 on CUDA, float32 on CPU. backend "server": an
    OpenAI-compatible endpoint at `base_url` serving `model` (an API key, if any, comes from OPENAI_API_KEY and is
    never part of a config or a cache key; credentials in `base_url` itself are never printed or written). `timeout`
    bounds each server request as a whole, retries and backoff included; `retries` retries connection errors, 429
    and 5xx within that time; an answer body over 4 MiB is refused. Images are shrunk to `image_max_side` before
    the model sees them. `base_url`, `concurrency`, `timeout` and `retries` are settings of backend "server": with
    another backend they are refused unless left at their defaults.
    """

    backend: str = "server"
    model: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    batch_size: int = 8
    trust_remote_code: bool = False
    base_url: str | None = None
    concurrency: int = 16
    timeout: float = 120.0
    retries: int = 3
    image_max_side: int = 1024

    def _check_model(self, stage: str, local: str):
        if self.backend not in (local, "server"):
            raise ValueError(f"{stage} backend {self.backend!r} is unknown; use {local!r} or 'server'")
        if not self.model:
            raise ValueError(f"{stage} needs model=... (a Hub id or a local folder)")
        if self.backend == "server" and not self.base_url:
            raise ValueError(f"{stage}(backend='server') needs base_url=...")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError("dtype must be auto, bfloat16, float16 or float32")
        if self.backend != "server":
            self.refuse_changed(SERVER_SETTINGS, "a setting of backend 'server'", f"backend {self.backend!r}")


SERVER_SETTINGS = ("base_url", "concurrency", "timeout", "retries")
MODEL_SETTINGS = (
    "model",
    "revision",
    "dtype",
    "batch_size",
    "trust_remote_code",
    "image_max_side",
    "criteria",
    "max_new_tokens",
    "debug_column",
)
DETECTOR_SETTINGS = ("faces", "text", "face_threshold", "text_threshold", "face_max_side", "text_max_side")


@dataclass(frozen=True)
class InspectConfig(ModelSettings):
    """Flag rows that carry privacy risks.

    backend "detectors": real face (CenterFace) and text (RapidOCR) detectors, offline on a CPU. A row is flagged
    when a face scores at least `face_threshold`, or a text line with at least two letters/digits is read with a
    confidence of at least `text_threshold`.
    backend "vlm" (transformers) or "server": a vision-language model answers PRIVACY_FLAG: TRUE/FALSE against
    `criteria` (None: the nine categories; a list of category names; or {name: description}); any answer other than
    exactly one `PRIVACY_FLAG: FALSE` statement counts as TRUE.
    Settings of the other backends are refused unless left at their defaults; so are `base_url`, `concurrency`,
    `timeout` and `retries` except with backend "server".
    """

    backend: str = "detectors"
    criteria: object = None
    max_new_tokens: int = 16
    debug_column: str | None = None  # also write the model's raw answer here
    faces: bool = True
    text: bool = True
    face_threshold: float = 0.3  # recall first: 0.5 misses small crowd faces that ArcFace still matches
    text_threshold: float = 0.8
    face_max_side: int = 1536  # detector input limit; faces in larger images are found on a downscaled copy
    text_max_side: int = 960
    image_column: str = "image"
    output_column: str = "privacy_flag"
    detections_column: str = "detections"
    max_pixels: int | None = None  # None: Pillow's current limit (images.decode)
    threads: int | None = None  # None: all cores in the main process, one per num_proc worker

    def validate(self):
        object.__setattr__(self, "criteria", freeze_criteria(self.criteria))
        if self.backend != "detectors":
            self._check_model("Inspect", "vlm")
            self.refuse_changed(DETECTOR_SETTINGS, "a setting of backend 'detectors'", f"backend {self.backend!r}")
            return
        self.refuse_changed(MODEL_SETTINGS, "a setting of backend 'vlm'/'server'", "backend 'detectors'")
        self.refuse_changed(SERVER_SETTINGS, "a setting of backend 'server'", "backend 'detectors'")
        if not (self.faces or self.text):
            raise ValueError("Inspect(backend='detectors') needs faces=True or text=True")


@dataclass(frozen=True)
class CaptionConfig(ModelSettings):
    """Privacy review, private and public captions for flagged rows (unflagged rows cost nothing)."""

    backend: str = "vlm"
    criteria: object = None
    max_new_tokens: int = 400
    image_column: str = "image"
    flag_column: str = "privacy_flag"

    def validate(self):
        object.__setattr__(self, "criteria", freeze_criteria(self.criteria))
        if self.max_new_tokens < 300:
            raise ValueError("Caption needs max_new_tokens >= 300: three sections of ~50 words each")
        self._check_model("Caption", "vlm")


@dataclass(frozen=True)
class InstructConfig(ModelSettings):
    """An identity-neutral edit instruction from the public caption only, and its merge with that caption.

    demographics: None, "uniform" (one of the paper's eight groups per row, drawn from `seed` and the row key), or
    your own list of groups. class_column: the merged caption must still describe that class (class_names maps
    integer labels to names). key_column: a stable row id for the demographic draw (default: the public caption).
    """

    backend: str = "llm"
    merge: bool = True
    class_column: str | None = None
    class_names: tuple | None = None
    demographics: object = None
    seed: int = 0
    key_column: str | None = None
    max_new_tokens: int = 120
    merge_max_new_tokens: int = 100

    def validate(self):
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.demographics is not None and self.demographics != "uniform":
            groups = (self.demographics,) if isinstance(self.demographics, str) else tuple(self.demographics)
            if not groups:
                raise ValueError('demographics must be None, "uniform" or a non-empty list of groups')
            object.__setattr__(self, "demographics", groups)
        self._check_model("Instruct", "llm")

    @property
    def groups(self) -> tuple | None:
        return GROUPS if self.demographics == "uniform" else self.demographics


PRIORS = ("c_priv", "c_pub", "c_edit", "c_llm", "class")
EDITORS = {"redact": (None, None), "instruct-pix2pix": (100, 0), "flowedit": (50, 42)}  # editor: (steps, seed)
IP2P_SETTINGS = ("prior", "guidance_scale", "image_guidance_scale", "safe_attention")
FLOWEDIT_SETTINGS = (
    "source_prior",
    "target_prior",
    "source_guidance",
    "target_guidance",
    "n_min",
    "n_max",
    "n_avg",
    "text_encoder_3",
)
DIFFUSION_SETTINGS = (
    "model",
    "revision",
    "class_column",
    "class_names",
    "steps",
    "seed",
    "key_column",
    "dtype",
    "cpu_offload",
    "batch_size",
    "resolution",
    *IP2P_SETTINGS,
    *FLOWEDIT_SETTINGS,
)


@dataclass(frozen=True)
class EditConfig(Settings):
    """Rewrite flagged rows.

    editor "redact": obscure each detected region (grown by `margin` of its size on every side) with `method`.
    editor "instruct-pix2pix": edit the image by the text in the `prior` column (c_priv, c_pub, c_edit, c_llm, or
    "class": "A realistic image of <class>."). editor "flowedit": FlowEdit on SD3 from `source_prior` to
    `target_prior` (text_encoder_3=False loads SD3 without T5). Both fit the image inside `resolution` by its longest
    side and resize the result back; each row has its own seed, drawn from `seed` and a stable row key
    (`key_column`, else the image's pixels), so results do not depend on batching. steps/seed default to the
    paper's: 100/0 for InstructPix2Pix, 50/42 for FlowEdit. A row the editor cannot handle is redacted instead.
    Flagged rows with no region to redact are obscured whole (`unlocated="obscure"`) or dropped ("drop"), and so are
    rows whose regions are unusable (malformed, empty, outside the image) or that redaction left unchanged.
    `cells` is at most MAX_CELLS (8) and `whole_image_cells` at most MAX_WHOLE_IMAGE_CELLS (16). Settings of
    another editor are refused unless left at their defaults (steps/seed: that editor's defaults).
    """

    editor: str = "redact"
    method: str = "pixelate"  # pixelate | blur | fill | inpaint
    margin: float = 0.25
    cells: int = 8  # pixelate: cells across a region's longer side, 1..MAX_CELLS (8 removes identity; see above)
    whole_image_cells: int = 16  # pixelate cells across the longer side when a whole image is obscured (<= 16)
    unlocated: str = "obscure"
    model: str | None = None
    revision: str | None = None
    prior: str = "c_edit"
    class_column: str | None = None
    class_names: tuple | None = None
    steps: int | None = None
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5
    source_prior: str = "c_priv"
    target_prior: str = "c_llm"
    source_guidance: float = 3.5
    target_guidance: float = 13.5
    n_min: int = 0
    n_max: int = 33
    n_avg: int = 1
    text_encoder_3: bool = True
    resolution: int = 512
    seed: int | None = None
    key_column: str | None = None
    safe_attention: bool = False
    dtype: str = "auto"  # float16 on CUDA, float32 on CPU
    cpu_offload: bool = False
    batch_size: int = 4
    image_column: str = "image"
    output_column: str = "safe_image"
    flag_column: str = "privacy_flag"
    detections_column: str = "detections"
    max_pixels: int | None = None
    threads: int | None = None

    def validate(self):
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.editor not in EDITORS:
            raise ValueError(f"Edit editor {self.editor!r} is unknown; use one of {', '.join(EDITORS)}")
        steps, seed = EDITORS[self.editor]
        object.__setattr__(self, "steps", steps if self.steps is None else self.steps)
        object.__setattr__(self, "seed", seed if self.seed is None else self.seed)
        if self.method not in ("pixelate", "blur", "fill", "inpaint"):
            raise ValueError(f"unknown redaction method {self.method!r}; use pixelate, blur, fill or inpaint")
        if self.unlocated not in ("obscure", "drop"):
            raise ValueError("unlocated must be 'obscure' or 'drop'")
        defaults = {"steps": steps, "seed": seed}
        if self.editor == "redact":
            self.refuse_changed(
                DIFFUSION_SETTINGS,
                "a diffusion setting (editor 'instruct-pix2pix'/'flowedit')",
                "editor 'redact'",
                defaults,
            )
            return
        if self.editor == "flowedit":
            self.refuse_changed(IP2P_SETTINGS, "an instruct-pix2pix setting", "editor 'flowedit'")
        else:
            self.refuse_changed(FLOWEDIT_SETTINGS, "a flowedit setting", "editor 'instruct-pix2pix'")
        if not self.model:
            raise ValueError(f"Edit(editor={self.editor!r}) needs model=... (a Hub id or a local folder)")
        priors = (self.prior,) if self.editor == "instruct-pix2pix" else (self.source_prior, self.target_prior)
        if any(p not in PRIORS for p in priors):
            raise ValueError(f"priors must be among {', '.join(PRIORS)}")
        if "class" in priors and not self.class_column:
            raise ValueError("a 'class' prior needs class_column=...")
        if self.editor == "flowedit" and not (0 <= self.n_min <= self.n_max <= self.steps and self.n_avg >= 1):
            raise ValueError("FlowEdit needs 0 <= n_min <= n_max <= steps and n_avg >= 1")
        if self.resolution < 8:
            raise ValueError("resolution must be >= 8")


# The paper's judge (InternVL3.5-8B) in transformers' native format.
JUDGE = "OpenGVLab/InternVL3_5-8B-HF"


@dataclass(frozen=True)
class JudgeConfig(ModelSettings):
    """The vision-language model the metrics ask: VLMScore, text reading and apparent demographic groups."""

    backend: str = "vlm"
    model: str | None = JUDGE

    def validate(self):
        self._check_model("Judge", "vlm")

    @classmethod
    def named(cls, model: str, base_url: str | None = None) -> JudgeConfig:
        """The judge `model`, loaded in this process, or served at `base_url` (an OpenAI-compatible server)."""
        return cls(backend="server", model=model, base_url=base_url) if base_url else cls(model=model)


# The paper's Stage-1 models. InternVL3-8B-hf is the InternVL family in transformers' native format (no
# trust_remote_code); the paper used InternVL2.5-8B, which only exists as remote code. Revisions are not pinned:
# pinning needs the full commit hash, which could not be read from here (see the README).
VLM = "OpenGVLab/InternVL3-8B-hf"
LLM = "Qwen/Qwen3-4B-Instruct-2507"
# InstructPix2Pix fine-tuned on MagicBrush (the checkpoint of the MagicBrush paper, epoch 168), in the diffusers
# format of a community port; the official osunlp release is an original-format .ckpt only.
MAGICBRUSH = "vinesmsuic/magicbrush-paper"
SD3 = "stabilityai/stable-diffusion-3-medium-diffusers"

# name -> {stage attribute: config}; the order is the order the stages run in.
PRESETS: dict[str, dict[str, object]] = {
    "lite": {"inspect": InspectConfig(), "edit": EditConfig()},
    "paper": {
        "inspect": InspectConfig(backend="vlm", model=VLM),
        "caption": CaptionConfig(model=VLM),
        "instruct": InstructConfig(model=LLM),
        "edit": EditConfig(editor="flowedit", model=SD3, source_prior="c_priv", target_prior="c_llm"),
    },
    "paper-ip2p": {
        "inspect": InspectConfig(backend="vlm", model=VLM),
        "caption": CaptionConfig(model=VLM),
        "instruct": InstructConfig(model=LLM),
        "edit": EditConfig(editor="instruct-pix2pix", model=MAGICBRUSH, prior="c_edit"),
    },
}


def field_names(config_class) -> set[str]:
    return {f.name for f in fields(config_class)}


@dataclass(frozen=True)
class ReadConfig(Settings):
    """Read every image's bytes into the dataset once, before the other stages (see `stages.read`).

    `image_root`: the folder that image cells holding only a file path may be read from (an image folder);
    None: such cells are never read, and their rows are errors.
    """

    image_column: str = "image"
    image_root: str | None = None


def public_settings(config) -> dict:
    """The settings as a dict fit to print or write: a `base_url` loses any user:password@ and query (an API key
    there must never reach a log, a report or a card)."""
    settings = asdict(config)
    if settings.get("base_url"):
        settings["base_url"] = public_url(settings["base_url"])
    return settings


def public_url(url: str) -> str:
    """`url` without credentials: no user info, no query, no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:  # not a valid port: keep the host only
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
