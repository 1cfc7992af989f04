"""What every stage shares: config-only pickling, typed output, batch helpers.

A stage instance is the map function. It holds only its frozen config, so hashing it for the `datasets` cache, or
sending it to num_proc workers, costs nothing and never touches model weights (models live in runtime's cache).
"""

from __future__ import annotations

import dataclasses
import numbers

import datasets
import pyarrow as pa
from datasets.features.features import encode_nested_example

from .. import answers, images, runtime
from ..answers import parse_reply
from ..config import STATUSES, public_settings
from ..editors import redact

# What happened to a row (`u2s_status`; None: nothing yet) and why (`u2s_error`), written by every stage.
KEPT_SAFE, EDITED, REDACTED, DROPPED, ERROR = STATUSES
OUTCOME_FEATURES = {"u2s_status": datasets.Value("string"), "u2s_error": datasets.Value("string")}
REASON_LIMIT = 200  # the longest `u2s_error`; `shorten` is the one place that cuts a reason
OBSCURED = "whole image obscured"  # the end of the reason of a row whose whole image was obscured
DETECTIONS = datasets.List(
    {
        "label": datasets.Value("string"),
        "score": datasets.Value("float32"),
        "box": datasets.List(datasets.Value("float32")),
    }
)


class Stage:
    config_class: type
    name: str

    def __init__(self, **settings):
        self.config = self.config_class(**settings)

    def __getstate__(self):
        # The code version rides along so a cached map is invalidated by a new release, not only by new settings.
        return {"config": self.config, "code": runtime.code_version()}

    def __setstate__(self, state):
        self.config = state["config"]

    def __eq__(self, other):
        return type(other) is type(self) and other.config == self.config

    def __hash__(self):
        return hash((type(self), self.config))

    def __repr__(self):
        shown = public_settings(self.config)
        changed = {
            f.name: shown[f.name] for f in dataclasses.fields(self.config) if getattr(self.config, f.name) != f.default
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def features(self) -> datasets.Features:
        """The columns this stage writes, with their types."""
        raise NotImplementedError

    def undecoded(self) -> tuple[str, ...]:
        """Image columns this stage wants as stored bytes rather than decoded (anonymize casts them for its map)."""
        return ()

    def typed(self, columns: dict) -> dict:
        """Output columns that carry their Arrow type (see `TypedColumn`).

        Images stay PIL objects so `datasets` types the column as Image and stores PNG; only a batch without a
        single image falls back to typed nulls.
        """
        features = self.features()
        out = {}
        for name, feature in features.items():
            values = columns[name]
            if isinstance(feature, datasets.Image) and any(v is not None for v in values):
                out[name] = values
            else:
                out[name] = TypedColumn(
                    [None if v is None else encode_nested_example(feature, v) for v in values],
                    features.arrow_schema.field(name).type,
                )
        return out


class TypedColumn(list):
    """A list that tells pyarrow its type.

    `datasets` fixes a new column's type from the first batch it writes: a first batch of all-None statuses or
    empty detection lists would make the column null-typed, and the first real value would then fail the map.
    `map` accepts lists, and pyarrow honours `__arrow_array__`, so the declared type survives.
    """

    def __init__(self, values, arrow_type: pa.DataType):
        super().__init__(values)
        self.arrow_type = arrow_type

    def __arrow_array__(self, type=None):
        return pa.array(list(self), type=type or self.arrow_type)


def column(batch, name: str, n: int, default=None) -> list:
    """A column of the batch, or `default` repeated when the dataset does not have it."""
    return list(batch[name]) if name in batch else [default] * n


def require(batch, name: str, stage: str) -> list:
    if name not in batch:
        raise KeyError(
            f"{stage}: column {name!r} not found (columns: {sorted(batch)}); "
            f"pass image_column=... if the images are elsewhere"
        )
    return list(batch[name])


class Outcome:
    """The fail-closed bookkeeping of one batch: each row's `u2s_status` and `u2s_error`, kept in one place.

    Built from the batch's incoming u2s_status/u2s_error (None where the dataset has none). An earlier error always
    stays: a row that failed in an earlier stage is still an error row, and any new reason is written after the
    earlier one. `fresh=True` (a stage that decides every row anew, like Inspect) clears every other earlier status
    and reason. Every reason goes through `shorten`, so no stage cuts reasons by hand.
    """

    def __init__(self, batch, n: int, fresh: bool = False):
        self.statuses = column(batch, "u2s_status", n)
        self.errors = column(batch, "u2s_error", n)
        for i, status in enumerate(self.statuses):
            if status == ERROR:
                self.errors[i] = self.errors[i] or ERROR  # an error row always says why, if only "error"
            elif fresh:
                self.statuses[i] = self.errors[i] = None

    def failed(self, i: int) -> bool:
        return self.statuses[i] == ERROR

    def fail(self, i: int, reason: str):
        """Row i is an error row, with `reason` after any earlier one."""
        self._set(i, ERROR, reason)

    def done(self, i: int, status: str, reason: str | None = None):
        """Row i leaves as `status` (EDITED, REDACTED or DROPPED; `reason` after any earlier one), or KEPT_SAFE,
        which clears the reason: a row kept as it was has nothing to explain."""
        if status not in STATUSES or status == ERROR:
            raise ValueError(f"not a final status: {status!r} (use fail() for errors)")
        if status == KEPT_SAFE:
            self.statuses[i], self.errors[i] = status, None
        else:
            self._set(i, status, reason)

    def note(self, i: int, reason: str):
        """A reason on row i that does not change its status (e.g. an answer that was counted as flagged)."""
        self.errors[i] = shorten(join_errors(self.errors[i], reason))

    def decode(self, i: int, value, max_pixels: int | None, max_side: int | None = None):
        """Row i's pixels (shrunk to `max_side` if given), or None with the row failed with the decoder's reason.

        A row that had already failed keeps its earlier reason alone: it explains why there is no image (e.g. the
        file was not read)."""
        try:
            rgb = images.decode(value, max_pixels)
        except images.ImageError as exc:
            if not self.failed(i):
                self.fail(i, str(exc))
            return None
        return images.resize_to_max_side(rgb, max_side)[0] if max_side else rgb

    def columns(self) -> dict:
        """{"u2s_status": [...], "u2s_error": [...]}, for the stage's output."""
        return {"u2s_status": self.statuses, "u2s_error": self.errors}

    def _set(self, i, status, reason):
        self.statuses[i], self.errors[i] = status, shorten(join_errors(self.errors[i], reason))


def obscure_whole(outcome: Outcome, i: int, rgb, cells: int, reason: str | None):
    """Row i's whole image pixelated to `cells` across its longer side (status redacted, `reason` then "whole
    image obscured"), as a clean image; None with the row dropped when even that fails or leaves the pixels as they
    were. Edit's last resort for a flagged row, and Verify's for an output that still leaks."""
    try:
        obscured = images.clean(redact.obscure(rgb, cells))
    except Exception as exc:
        outcome.done(i, DROPPED, f"{reason}; obscuring failed too ({type(exc).__name__}: {exc}): dropped")
        return None
    outcome.done(i, REDACTED, f"{reason}: {OBSCURED}")
    return obscured


def shorten(reason: str | None, limit: int = REASON_LIMIT) -> str | None:
    """`reason` in at most `limit` characters: a longer one keeps its start (what failed first) and its end (what
    was done about it), with "..." between."""
    if reason is None or len(reason) <= limit:
        return reason
    head = (limit - 3) * 2 // 3
    return f"{reason[:head]}...{reason[head + 3 - limit :]}"


def read_replies(rows, replies, parse, outcome: Outcome) -> dict:
    """{row: parse(reply)}; a failed request or an unusable answer turns its row into an error row instead."""
    parsed = {}
    for i, reply in zip(rows, replies, strict=True):
        try:
            parsed[i] = parse_reply(reply, parse)
        except answers.AnswerError as exc:
            outcome.fail(i, str(exc))
    return parsed


class LabelError(ValueError):
    """A row's class label that names no class; the row fails alone."""


def class_name(value, names, column_name):
    """A class label as text: integer labels need their names (e.g. ds.features[column].names).

    LabelError when the label names no class: None, a negative integer (-1 is datasets' missing label), an integer
    past the last name, an empty string, or any other type (a bool, a float).
    """
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if names is None:
            raise ValueError(
                f"class column {column_name!r} holds integers: pass class_names=... "
                f"(e.g. ds.features[{column_name!r}].names)"
            )
        if 0 <= value < len(names):
            return names[value]
        raise LabelError(f"class label {value} in {column_name!r} is not one of the {len(names)} classes")
    raise LabelError(f"class label {value!r} in {column_name!r} names no class")


def join_errors(first: str | None, second: str | None) -> str | None:
    """Both reasons, when a row collects more than one."""
    if first and second:
        return f"{first}; {second}"
    return first or second
