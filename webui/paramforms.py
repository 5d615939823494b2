"""Form fields generated from the pydantic parameter models, and their errors mapped back to fields.

The models in mlcore/params.py (and worker/sweep.py) hold every default, bound and help text;
this module only decides how each type is drawn. Validation is the models' own: the form sends
what was typed and shows the model's message next to the field it names.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mlcore.params import PRESETS, TrainParams

# Sections of the training form, in order; a field added to TrainParams later lands in "Other".
TRAIN_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("Model", ("arch", "pretrained", "image_size")),
    (
        "Optimisation",
        (
            "epochs",
            "batch_size",
            "learning_rate",
            "lr_schedule",
            "warmup_epochs",
            "weight_decay",
            "early_stopping_patience",
        ),
    ),
    ("Augmentation", ("aug_flip", "aug_rotation", "aug_brightness", "aug_contrast", "aug_saturation", "aug_hue")),
    ("Validation split", ("split", "val_fraction", "seed", "threshold_metric", "cv_folds", "cv_fold")),
    ("Runtime", ("device", "precision", "compile", "eval_batch_size")),
    ("Tracking", ("experiment_name", "registered_model_name")),
]
# Chosen from a list the server builds (see datasets.py), never typed.
NOT_IN_FORM = {"data_dir"}
# The model also accepts a local weights file; a browser user may not name server paths.
WEB_CHOICES = {"pretrained": ("imagenet", "none")}
ABBREVIATIONS = {"lr": "LR", "aug": "augment:", "val": "validation"}
SUGGESTIONS = {"device": ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps")}


@dataclass
class FieldSpec:
    """How one parameter is drawn: input kind, choices, bounds, default and help."""

    name: str  # the parameter's name in the model
    input_name: str  # the form input's name (prefixed for sweep settings)
    label: str
    kind: Literal["select", "checkbox", "number", "text"]
    help: str
    default: Any
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    integer: bool = False
    optional: bool = False
    max_length: int | None = None
    suggestions: tuple[str, ...] = ()

    @property
    def step(self) -> str:
        """The number input's step: whole numbers for integers, anything for floats."""
        return "1" if self.integer else "any"

    @property
    def bounds(self) -> str:
        """The allowed range in words, e.g. '1 to 1000' or '> 0 to 1'."""
        if self.minimum is None and self.maximum is None:
            return ""
        low = "" if self.minimum is None else (f"> {fmt(self.minimum)}" if self.exclusive_min else fmt(self.minimum))
        high = "" if self.maximum is None else fmt(self.maximum)
        return f"{low} to {high}" if low and high else (f"at least {low}" if low else f"at most {high}")

    @property
    def default_text(self) -> str:
        """The default as shown in the help line."""
        if self.default is None:
            return "off"
        if self.kind == "checkbox":
            return "on" if self.default else "off"
        return fmt(self.default)


def fmt(value: Any) -> str:
    """A number as people write it (1e-05 stays 1e-05, 20.0 becomes 20)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label(name: str) -> str:
    """A field's name as a label: `lr_schedule` -> 'LR schedule'."""
    words = [ABBREVIATIONS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional) for `X | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def field_specs(model: type[BaseModel], names: list[str] | None = None, prefix: str = "") -> dict[str, FieldSpec]:
    """FieldSpecs for the model's fields (all but NOT_IN_FORM, or `names`), keyed by parameter name."""
    out = {}
    for name, info in model.model_fields.items():
        if (names is not None and name not in names) or (names is None and name in NOT_IN_FORM):
            continue
        annotation, optional = _unwrap(info.annotation)
        default = None if info.default is PydanticUndefined else info.default
        spec = FieldSpec(
            name=name,
            input_name=prefix + name,
            label=label(name),
            kind="text",
            help=info.description or "",
            default=default,
            optional=optional,
            suggestions=SUGGESTIONS.get(name, ()),
        )
        if name in WEB_CHOICES:
            spec.kind, spec.choices = "select", WEB_CHOICES[name]
        elif typing.get_origin(annotation) is Literal:
            spec.kind, spec.choices = "select", tuple(str(a) for a in typing.get_args(annotation))
        elif annotation is bool:
            spec.kind = "checkbox"
        elif annotation in (int, float):
            spec.kind, spec.integer = "number", annotation is int
        for meta in info.metadata:
            if isinstance(meta, Ge):
                spec.minimum = meta.ge
            elif isinstance(meta, Gt):
                spec.minimum, spec.exclusive_min = meta.gt, True
            elif isinstance(meta, Le):
                spec.maximum = meta.le
            elif isinstance(meta, Lt):
                spec.maximum = meta.lt
            elif isinstance(meta, MaxLen):
                spec.max_length = meta.max_length
        out[name] = spec
    return out


def train_specs() -> dict[str, FieldSpec]:
    """Every TrainParams field the form shows."""
    return field_specs(TrainParams)


def grouped(specs: dict[str, FieldSpec], groups=TRAIN_GROUPS) -> list[tuple[str, list[FieldSpec]]]:
    """Specs in their form sections; fields no section names go to 'Other'."""
    placed = {n for _, names in groups for n in names}
    out = [(title, [specs[n] for n in names if n in specs]) for title, names in groups]
    rest = [s for n, s in specs.items() if n not in placed]
    if rest:
        out.append(("Other", rest))
    return [(title, fields) for title, fields in out if fields]


def initial_values(
    specs: dict[str, FieldSpec], preset: str | None = None, overrides: dict | None = None
) -> dict[str, str]:
    """What the inputs show first: defaults, then the preset, then e.g. a job being run again."""
    values = {n: s.default for n, s in specs.items()}
    values.update({k: v for k, v in PRESETS.get(preset or "", {}).items() if k in specs})
    values.update({k: v for k, v in (overrides or {}).items() if k in specs})
    return {n: ("" if v is None else v if isinstance(v, bool) else fmt(v)) for n, v in values.items()}


def parse_form(specs: dict[str, FieldSpec], form) -> tuple[dict[str, Any], dict[str, str]]:
    """(values for the model, the strings as typed) from a submitted form; the model does the checking."""
    values: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.kind == "checkbox":
            values[name] = form.get(spec.input_name) in ("on", "true", "1", "yes")
            typed[name] = values[name]
            continue
        raw = form.get(spec.input_name)
        if raw is None:
            continue  # not sent at all: the model's default applies
        raw = raw.strip()
        typed[name] = raw
        values[name] = None if (raw == "" and spec.optional) else raw
    return values, typed


def field_errors(
    errors: list[dict], known: set[str], aliases: dict[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """({input: message} for errors naming a known field, [other messages]) from ParamsError.errors."""
    by_field: dict[str, str] = {}
    general: list[str] = []
    for err in errors:
        field = err.get("field", "")
        key = (aliases or {}).get(field, field)
        head = key.split(".")[0]
        if key in known:
            by_field.setdefault(key, err["message"])
        elif head in known:
            by_field.setdefault(head, err["message"])
        else:
            general.append(f"{field}: {err['message']}" if field and field != "params" else err["message"])
    return by_field, general
