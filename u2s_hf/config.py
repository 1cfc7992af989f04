"""Stage configurations (small frozen dataclasses); the named presets built from them live in `pipeline`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from urllib.parse import urlsplit, urlunsplit

from .editors import EDITORS
from .editors.base import EditorSettings

# The checked base and its tables live in a leaf module (editors build on it too); re-exported here.
from .settings import MAX_CELLS, MAX_WHOLE_IMAGE_CELLS, RANGES, Settings  # noqa: F401

STATUSES = ("kept_safe", "edited", "redacted", "dropped", "error")
# The paper's demographic groups for `Instruct(demographics="uniform")`.
DEMOGRAPHIC_GROUPS = (
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
DETECTOR_SETTINGS = (
    "faces",
    "text",
    "face_threshold",
    "text_threshold",
    "face_max_side",
    "text_max_side",
    "face_turns",
)
QUARTER_TURNS = (0, 90, 180, 270)


def checked_turns(turns) -> tuple:
    """`face_turns` checked and frozen: distinct angles of QUARTER_TURNS, 0 (the image as it is) among them."""
    if isinstance(turns, (str, bytes)) or not hasattr(turns, "__iter__"):
        raise TypeError(f"face_turns must be a list of angles from {QUARTER_TURNS}, not {turns!r}")
    turns = tuple(turns)
    if 0 not in turns or len(set(turns)) < len(turns) or not set(turns) <= set(QUARTER_TURNS):
        raise ValueError(f"face_turns must be distinct angles from {QUARTER_TURNS}, 0 among them, not {turns!r}")
    return turns


@dataclass(frozen=True)
class InspectConfig(ModelSettings):
    """Flag rows that carry privacy risks.

    backend "detectors": real face (CenterFace) and text (RapidOCR) detectors, offline on a CPU. A row is flagged
    when a face scores at least `face_threshold`, or a text line with at least two letters/digits is read with a
    confidence of at least `text_threshold` (read as found and, below that, turned 180 degrees too). Faces are
    looked for in the image turned by each angle of `face_turns` (degrees counterclockwise), one CenterFace pass
    each: it misses most upside-down faces and most faces of a sideways crowd, so every quarter turn is searched by
    default; `face_turns=[0]` is about 4x faster for photos known to be upright.
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
    face_turns: tuple = QUARTER_TURNS
    image_column: str = "image"
    flag_column: str = "privacy_flag"  # written here; Caption and Edit read it
    detections_column: str = "detections"
    max_pixels: int | None = None  # None: Pillow's current limit (images.decode)
    threads: int | None = None  # None: all cores in the main process, one per num_proc worker

    def validate(self):
        object.__setattr__(self, "criteria", freeze_criteria(self.criteria))
        object.__setattr__(self, "face_turns", checked_turns(self.face_turns))
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
    max_pixels: int | None = None  # None: Pillow's current limit (images.decode)

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
        return DEMOGRAPHIC_GROUPS if self.demographics == "uniform" else self.demographics


REDACT = "redact"  # Edit's own fallback, not a diffusion editor: no editor settings


@dataclass(frozen=True, init=False)
class EditConfig(Settings):
    """Rewrite flagged rows: with a diffusion editor, else by redaction.

    editor "redact" (default): obscure each detected region (grown by `margin` of its size on every side) with
    the redaction `method` (pixelate, blur, fill, inpaint). editor "instruct-pix2pix" / "flowedit" / "freeprompt"
    (editors.EDITORS): that editor's settings, given flat like the others (`Edit(editor="flowedit", model=...,
    steps=20)`) and kept as `editor_settings` (their defaults and meaning: each editor module's settings class,
    e.g. editors.instruct_pix2pix.InstructPix2PixSettings). A setting of another
    editor is refused by name whatever its value; with "redact" every editor setting is refused (one given as None
    counts as not given). A row the editor cannot handle is redacted instead.
    Flagged rows with no region to redact are obscured whole (`unlocated="obscure"`) or dropped ("drop"), and so are
    rows whose regions are unusable (malformed, empty, outside the image) or that redaction left unchanged.
    `cells` is at most MAX_CELLS (8) and `whole_image_cells` at most MAX_WHOLE_IMAGE_CELLS (16).
    """

    editor: str = REDACT
    editor_settings: EditorSettings | None = None  # None for "redact"
    method: str = "pixelate"  # the redaction method: pixelate | blur | fill | inpaint
    margin: float = 0.25
    cells: int = 8  # pixelate: cells across a region's longer side, 1..MAX_CELLS (8 removes identity; see above)
    whole_image_cells: int = 16  # pixelate cells across the longer side when a whole image is obscured (<= 16)
    unlocated: str = "obscure"
    image_column: str = "image"
    output_column: str = "safe_image"
    flag_column: str = "privacy_flag"
    detections_column: str = "detections"
    max_pixels: int | None = None
    threads: int | None = None

    def __init__(self, editor: str = REDACT, editor_settings: EditorSettings | dict | None = None, **settings):
        if not isinstance(editor, str):
            raise TypeError(f"editor must be a string, not {editor!r}")
        if editor != REDACT and editor not in EDITORS:
            raise ValueError(f"Edit editor {editor!r} is unknown; use one of {', '.join([REDACT, *EDITORS])}")
        own = {f.name: f.default for f in fields(self)}
        for name in list(settings):
            if name in own:
                own[name] = settings.pop(name)
        own["editor"], own["editor_settings"] = editor, _editor_settings(editor, editor_settings, settings)
        for name, value in own.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    @classmethod
    def setting_names(cls) -> set[str]:
        """Its own settings and every registered editor's (given flat, they go to `editor_settings`)."""
        return super().setting_names().union(*(s.setting_names() for s, _ in EDITORS.values()))

    def validate(self):
        if self.method not in ("pixelate", "blur", "fill", "inpaint"):
            raise ValueError(f"unknown redaction method {self.method!r}; use pixelate, blur, fill or inpaint")
        if self.unlocated not in ("obscure", "drop"):
            raise ValueError("unlocated must be 'obscure' or 'drop'")


@dataclass(frozen=True)
class VerifyConfig(Settings):
    """Check the anonymised output of every edited or redacted row again; re-redact what still leaks.

    The detectors, their thresholds, size limits and face turns mean what they mean in Inspect (same defaults). What
    a leak is depends on the row's `u2s_status`:
    - "redacted" (and kept rows, with `verify_kept=True`): any face, or any readable text line, in the output. Each
      detector looks around the regions where it found something in the original (Edit changed nothing else), and
      over the whole output when the row has no detections, when its output differs from the original outside
      those surroundings, or with `everywhere=True`.
    - "edited" (a diffusion editor drew new content, new people included): a face whose identity embedding matches
      a face of the original (`image_column`) with a cosine of at least `identity_threshold`, under `identity_model`
      (an insightface pack, e.g. "buffalo_l", found under `identity_root`: non-commercial research models, never
      needed otherwise); or a readable text line whose rapidfuzz token_set_ratio / 100 to a line of the original
      is at least `text_match_threshold` (0.8 forgives one misread letter in five). Without an identity model, an
      edited output with a face cannot be checked: its pixels stay, `u2s_verified` is False ("identity not
      checked").
    What leaks is pixelated with Edit's default redaction and checked again, up to `rounds` times; a row that
    still leaks is obscured whole (`unlocated="obscure"`) or dropped ("drop").
    """

    faces: bool = True
    text: bool = True
    face_threshold: float = InspectConfig.face_threshold
    text_threshold: float = InspectConfig.text_threshold
    face_max_side: int = InspectConfig.face_max_side
    text_max_side: int = InspectConfig.text_max_side
    face_turns: tuple = InspectConfig.face_turns
    identity_model: str | None = None
    identity_root: str | None = None
    identity_threshold: float = 0.35  # ArcFace: the same person scores ~0.9 even after JPEG q20, others ~0
    text_match_threshold: float = 0.8
    rounds: int = 2
    unlocated: str = "obscure"
    verify_kept: bool = False
    everywhere: bool = False
    image_column: str = "image"  # the original: edited rows are compared with it
    output_column: str = "safe_image"
    detections_column: str = "detections"
    max_pixels: int | None = None
    threads: int | None = None

    def validate(self):
        object.__setattr__(self, "face_turns", checked_turns(self.face_turns))
        if not (self.faces or self.text):
            raise ValueError("Verify needs faces=True or text=True")
        if self.unlocated not in ("obscure", "drop"):
            raise ValueError("unlocated must be 'obscure' or 'drop'")
        if self.identity_root is not None and self.identity_model is None:
            raise ValueError("identity_root is where identity_model is found: set identity_model too")


@dataclass(frozen=True)
class ScoreEditConfig(Settings):
    """How well an edit kept its scene: `s_norm = CLIP(c_pub, safe_image) / CLIP(c_pub, image)` (stages.score_edit).

    `clip_model`: an open_clip model as `scoring.clip_score` names them ("ARCH/PRETRAINED", "hf-hub:org/name",
    "local-dir:/path"); the default is the paper's ViT-L/14 (`scoring.PAPER_CLIP`, spelled out here because
    `scoring` imports this module). `caption_column` holds the public caption, `image_column` the original and
    `output_column` the edited image. `device`: None picks `cuda:{rank % n}` when torch sees GPUs, else the CPU.
    `batch_size` image/caption pairs go through CLIP at a time (memory only: the scores do not depend on it).
    """

    clip_model: str = "ViT-L-14/openai"
    caption_column: str = "c_pub"
    image_column: str = "image"
    output_column: str = "safe_image"
    device: str | None = None
    batch_size: int = 32
    max_pixels: int | None = None  # None: Pillow's current limit (images.decode)
    threads: int | None = None

    def validate(self):
        if not self.clip_model:
            raise ValueError("ScoreEdit needs clip_model=... (an open_clip model)")


def _editor_settings(editor: str, given, flat: dict) -> EditorSettings | None:
    """`editor`'s settings from `given` (its settings, or a dict as dataclasses.asdict makes) updated by `flat`;
    a setting of another editor is refused by name."""
    if isinstance(given, EditorSettings):
        if editor == REDACT or type(given) is not EDITORS[editor][0]:
            raise ValueError(f"editor_settings is a {type(given).__name__}, not the settings of editor {editor!r}")
        given = {f.name: getattr(given, f.name) for f in fields(given)}
    elif not isinstance(given, (dict, type(None))):
        raise TypeError(f"editor_settings must be an editor's settings or a dict, not {given!r}")
    settings = {**(given or {}), **flat}
    owners = {name: [e for e, (s, _) in EDITORS.items() if name in s.setting_names()] for name in settings}
    unknown = sorted(name for name, editors in owners.items() if not editors)
    if unknown:
        raise TypeError(f"Edit has no setting {', '.join(unknown)}")
    if editor == REDACT:
        for name, value in settings.items():
            if value is not None:
                raise ValueError(
                    f"{name} is a diffusion setting (editor {' / '.join(map(repr, owners[name]))}); "
                    "editor 'redact' does not use it"
                )
        return None
    for name, editors in owners.items():
        if editor not in editors:
            article = "an" if editors[0][0] in "aeiou" else "a"
            raise ValueError(f"{name} is {article} {' / '.join(editors)} setting; editor {editor!r} does not use it")
    try:
        return EDITORS[editor][0](**settings)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Edit(editor={editor!r}): {exc}") from None


def field_names(config_class) -> set[str]:
    """The settings a config class takes by name (EditConfig: also every registered editor's)."""
    if issubclass(config_class, Settings):
        return config_class.setting_names()
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
    there must never reach a log, a report or a card); an `identity_root` folder is not named."""
    settings = asdict(config)
    if settings.get("base_url"):
        settings["base_url"] = public_url(settings["base_url"])
    if settings.get("identity_root"):  # a folder on this machine: where it is is nobody else's business
        settings["identity_root"] = "(a local folder)"
    if settings.get("identity_model"):  # a pack name, or a pack folder: named by its last part
        settings["identity_model"] = settings["identity_model"].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
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
