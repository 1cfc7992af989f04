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

from .. import answers, runtime
from ..backends.chat import parse_reply
from ..config import public_settings

STATUS = datasets.Value("string")
ERROR = datasets.Value("string")
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


def read_replies(rows, replies, parse, statuses, errors) -> dict:
    """{row: parse(reply)}; a failed request or an unusable answer turns its row into an error row instead."""
    parsed = {}
    for i, reply in zip(rows, replies, strict=True):
        try:
            parsed[i] = parse_reply(reply, parse)
        except answers.AnswerError as exc:
            statuses[i], errors[i] = "error", join_errors(errors[i], str(exc))
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
