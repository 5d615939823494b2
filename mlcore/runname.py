"""Run names from what a run is: `r18 64px lr1e-3`, a sweep child after what varies (`#3 lr1e-3 bs16`).

The rule (README, "Run names"): a training run is named by its architecture, image size and learning
rate, then the batch size, epochs and fold count where they differ from the defaults. A sweep child is
named by its index and the fields its sweep varies, in the sweep's order; the sweep by its strategy, what
it varies and its number of runs (`grid lr×bs (4)`). A name the user gives always wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlcore.errors import ParamsError
from mlcore.params import TrainParams

MAX_NAME = 100  # characters of a name a user gives (MLflow keeps 250; the UI's tables keep them readable)
ARCH_SHORT = {"resnet18": "r18", "resnet34": "r34", "resnet50": "r50"}
# field -> (abbreviation, where it goes): "pre" lr1e-3, "post" 64px, "value" the value alone (r18, cosine)
SHORT = {
    "arch": ("arch", "value"),
    "image_size": ("px", "post"),
    "learning_rate": ("lr", "pre"),
    "batch_size": ("bs", "pre"),
    "epochs": ("ep", "post"),
    "cv_folds": ("cv", "pre"),
    "weight_decay": ("wd", "pre"),
    "warmup_epochs": ("warmup", "pre"),
    "lr_schedule": ("sched", "value"),
    "early_stopping_patience": ("patience", "pre"),
    "val_fraction": ("val", "pre"),
    "seed": ("seed", "pre"),
    "aug_rotation": ("rot", "pre"),
    "aug_brightness": ("bright", "pre"),
    "aug_contrast": ("contrast", "pre"),
    "aug_saturation": ("sat", "pre"),
    "aug_hue": ("hue", "pre"),
    "aug_flip": ("flip", "pre"),
}
ALWAYS = ("arch", "image_size", "learning_rate")  # a run's name; then the fields below where not the default
WHEN_CHANGED = {k: TrainParams.model_fields[k].default for k in ("batch_size", "epochs")}


def number(value: float | int, sci: bool = False) -> str:
    """A short number: 64, 0.2, 1e-3, 3.2e-4 (scientific below 0.01, or always with `sci`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and not sci:
        return str(int(value))
    if value and (sci or abs(value) < 0.01):
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"


def part(field: str, value: Any) -> str:
    """One field of a name: lr1e-3, bs16, 64px, r18, cosine, noflip; a field without a short form: field=value."""
    abbrev, where = SHORT.get(field, (field, "eq"))
    if isinstance(value, bool):
        return abbrev if value else f"no{abbrev}"
    if value is None:
        return f"no{abbrev}"
    if where == "value":
        return ARCH_SHORT.get(value, str(value)) if field == "arch" else str(value)
    text = number(value, sci=field == "learning_rate")
    return {"pre": f"{abbrev}{text}", "post": f"{text}{abbrev}"}.get(where, f"{field}={text}")


def run_label(params: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """A run's name from its parameters; with `keys`, from those fields only (a sweep child: what varies)."""
    if keys is None:
        keys = [
            *ALWAYS,
            *(k for k, default in WHEN_CHANGED.items() if params.get(k, default) != default),
            *(["cv_folds"] if params.get("cv_folds") else []),
        ]
    return " ".join(part(k, params.get(k)) for k in keys)


def child_label(index: int, params: Mapping[str, Any], varied: Iterable[str]) -> str:
    """A sweep child's name: its number (from 1) and the values its sweep varies, e.g. `#3 lr1e-3 bs16`."""
    return f"#{index + 1} {run_label(params, varied)}".strip()


def sweep_label(strategy: str, varied: Iterable[str], size: int) -> str:
    """A sweep's name: strategy, the fields it varies and its number of runs, e.g. `grid lr×bs (4)`."""
    fields = "×".join(SHORT.get(k, (k, ""))[0] for k in varied)
    return f"{strategy} {fields} ({size})"


def rerun_label(name: str, index: int) -> str:
    """A re-run child's name: the original's name (or its number) marked as a re-run."""
    name = name or f"#{index + 1}"
    return name if name.endswith(" (re-run)") else f"{name} (re-run)"


def clean_name(value: Any) -> str | None:
    """A name a user gave: None when empty; ValueError unless at most MAX_NAME printable characters."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"use at most {MAX_NAME} printable characters")
    return value.strip() or None


def given_name(value: Any) -> str | None:
    """`clean_name` for an entrance: ParamsError naming `name`."""
    try:
        return clean_name(value)
    except ValueError as exc:
        raise ParamsError("name", str(exc)) from None
