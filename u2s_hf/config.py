"""Stage configurations (small frozen dataclasses) and the named presets built from them."""
from __future__ import annotations

from dataclasses import dataclass, fields

STATUSES = ("kept_safe", "edited", "redacted", "dropped", "error")
# The paper's demographic groups for `Instruct(demographics="uniform")`.
GROUPS = ("White", "Black", "East Asian", "South Asian", "Southeast Asian", "Middle Eastern or North African",
          "Indigenous or Pacific Islander", "Hispanic or Latino")


def freeze_criteria(criteria):
    """Criteria in a hashable form: None, a tuple of names, or a tuple of (name, description) pairs."""
    if criteria is None or isinstance(criteria, tuple):
        return criteria
    if isinstance(criteria, str):
        return (criteria,)
    if isinstance(criteria, dict):
        return tuple((str(k), str(v)) for k, v in criteria.items())
    return tuple(criteria)


@dataclass(frozen=True)
class ModelSettings:
    """Where a Stage-1 language model runs.

    backend "vlm" / "llm": transformers in this process, `model` a Hub id or a local folder (+ `revision`), batched
    `batch_size` rows at a time; dtype "auto" is bfloat16 on CUDA, float32 on CPU. backend "server": an
    OpenAI-compatible endpoint at `base_url` serving `model` (an API key, if any, comes from OPENAI_API_KEY and is
    never part of a config or a cache key). Images are shrunk to `image_max_side` before the model sees them.
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
        if self.concurrency < 1 or self.timeout <= 0 or self.retries < 0 or self.batch_size < 1:
            raise ValueError("concurrency and batch_size must be >= 1, timeout > 0 and retries >= 0")


@dataclass(frozen=True)
class InspectConfig(ModelSettings):
    """Flag rows that carry privacy risks.

    backend "detectors": real face (CenterFace) and text (RapidOCR) detectors, offline on a CPU. A row is flagged
    when a face scores at least `face_threshold`, or a text line with at least two letters/digits is read with a
    confidence of at least `text_threshold`.
    backend "vlm" (transformers) or "server": a vision-language model answers PRIVACY_FLAG: TRUE/FALSE against
    `criteria` (None: the nine categories; a list of category names; or {name: description}); an unreadable answer
    counts as TRUE.
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
    max_pixels: int | None = None  # None: images.MAX_PIXELS
    threads: int | None = None  # None: all cores in the main process, one per num_proc worker

    def __post_init__(self):
        object.__setattr__(self, "criteria", freeze_criteria(self.criteria))
        if self.backend != "detectors":
            self._check_model("Inspect", "vlm")
            return
        if not (self.faces or self.text):
            raise ValueError("Inspect(backend='detectors') needs faces=True or text=True")
        for name in ("face_threshold", "text_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")


@dataclass(frozen=True)
class CaptionConfig(ModelSettings):
    """Privacy review, private and public captions for flagged rows (unflagged rows cost nothing)."""

    backend: str = "vlm"
    criteria: object = None
    max_new_tokens: int = 400
    image_column: str = "image"
    flag_column: str = "privacy_flag"

    def __post_init__(self):
        object.__setattr__(self, "criteria", freeze_criteria(self.criteria))
        self._check_model("Caption", "vlm")
        if self.max_new_tokens < 300:
            raise ValueError("Caption needs max_new_tokens >= 300: three sections of ~50 words each")


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

    def __post_init__(self):
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


@dataclass(frozen=True)
class EditConfig:
    """Rewrite flagged rows.

    editor "redact": obscure each detected region (grown by `margin` of its size on every side) with `method`.
    editor "instruct-pix2pix": edit the image by the text in the `prior` column (c_priv, c_pub, c_edit, c_llm, or
    "class": "A realistic image of <class>."). editor "flowedit": FlowEdit on SD3 from `source_prior` to
    `target_prior` (text_encoder_3=False loads SD3 without T5). Both fit the image inside `resolution` by its longest
    side and resize the result back; each row has its own seed, drawn from `seed` and a stable row key
    (`key_column`, else the image's pixels), so results do not depend on batching. steps/seed default to the
    paper's: 100/0 for InstructPix2Pix, 50/42 for FlowEdit. A row the editor cannot handle is redacted instead.
    Flagged rows with no region to redact are obscured whole (`unlocated="obscure"`) or dropped ("drop").
    """

    editor: str = "redact"
    method: str = "pixelate"  # pixelate | blur | fill | inpaint
    margin: float = 0.25
    cells: int = 8  # pixelate: cells across a region's longer side (8 removes identity; see notes)
    whole_image_cells: int = 16  # pixelate cells across the longer side when a whole image is obscured
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

    def __post_init__(self):
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
        if self.margin < 0 or self.cells < 1 or self.whole_image_cells < 1:
            raise ValueError("margin must be >= 0 and cells >= 1")
        if self.editor == "redact":
            return
        if not self.model:
            raise ValueError(f"Edit(editor={self.editor!r}) needs model=... (a Hub id or a local folder)")
        priors = (self.prior,) if self.editor == "instruct-pix2pix" else (self.source_prior, self.target_prior)
        if any(p not in PRIORS for p in priors):
            raise ValueError(f"priors must be among {', '.join(PRIORS)}")
        if "class" in priors and not self.class_column:
            raise ValueError("a 'class' prior needs class_column=...")
        if self.editor == "flowedit" and not (0 <= self.n_min <= self.n_max <= self.steps and self.n_avg >= 1):
            raise ValueError("FlowEdit needs 0 <= n_min <= n_max <= steps and n_avg >= 1")
        if self.safe_attention and self.editor != "instruct-pix2pix":
            raise ValueError("safe_attention applies to the instruct-pix2pix editor (a UNet)")
        if self.steps < 1 or self.resolution < 8 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1, resolution >= 8")



# The paper's judge (InternVL3.5-8B) in transformers' native format.
JUDGE = "OpenGVLab/InternVL3_5-8B-HF"


@dataclass(frozen=True)
class JudgeConfig(ModelSettings):
    """The vision-language model the metrics ask: VLMScore, text reading and apparent demographic groups."""

    backend: str = "vlm"
    model: str | None = JUDGE

    def __post_init__(self):
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
    "paper": {"inspect": InspectConfig(backend="vlm", model=VLM), "caption": CaptionConfig(model=VLM),
              "instruct": InstructConfig(model=LLM),
              "edit": EditConfig(editor="flowedit", model=SD3, source_prior="c_priv", target_prior="c_llm")},
    "paper-ip2p": {"inspect": InspectConfig(backend="vlm", model=VLM), "caption": CaptionConfig(model=VLM),
                   "instruct": InstructConfig(model=LLM),
                   "edit": EditConfig(editor="instruct-pix2pix", model=MAGICBRUSH, prior="c_edit")},
}


def field_names(config_class) -> set[str]:
    return {f.name for f in fields(config_class)}
