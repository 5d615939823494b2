"""The sweep form: which training fields vary (lists or ranges), and the sweep's own settings.

A numeric field takes a comma list (every value for a grid, choices for random search) or a
low/high range (random search or TPE); a choice field takes ticked options; a switch can try both.
"""

from __future__ import annotations

from typing import Any

from webui.paramforms import FieldSpec, field_specs, fmt, parse_form, train_specs
from worker.sweep import SWEEPABLE, SweepParams

# What the form offers to vary, in order (the CLI can sweep any SWEEPABLE field).
ROWS = (
    "learning_rate",
    "batch_size",
    "epochs",
    "image_size",
    "arch",
    "lr_schedule",
    "warmup_epochs",
    "weight_decay",
    "aug_flip",
    "aug_rotation",
    "aug_brightness",
    "aug_contrast",
    "aug_saturation",
    "aug_hue",
)
# strategy: grid, random or tpe (Optuna's TPE proposes each trial from the results so far); pruner and
# its warm-up stop unpromising trials early; their help text is the SweepParams field descriptions.
SETTINGS = (
    "strategy",
    "samples",
    "seed",
    "objective",
    "pruner",
    "pruning_warmup_epochs",
    "max_concurrent",
    "promote_best",
)
PREFIX = "sweep."


def row_specs() -> list[FieldSpec]:
    """The training fields a sweep may vary, as drawn in the form."""
    specs = train_specs()
    return [specs[n] for n in ROWS if n in SWEEPABLE and n in specs]


def setting_specs() -> dict[str, FieldSpec]:
    """The sweep's own settings (strategy, samples, seed, concurrency, promotion)."""
    return field_specs(SweepParams, list(SETTINGS), prefix=PREFIX)


def _number(spec: FieldSpec, text: str) -> Any:
    """A typed number when it parses (so MLflow logs 0.001, not '0.001'); else the text, for the model to refuse."""
    try:
        return int(text) if spec.integer else float(text)
    except ValueError:
        return text


def parse(form) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the sweep's grid/ranges/settings, the inputs as typed) from the submitted form."""
    grid: dict[str, list[Any]] = {}
    ranges: dict[str, dict[str, Any]] = {}
    typed: dict[str, Any] = {}
    for spec in row_specs():
        key = f"grid.{spec.name}"
        if spec.kind == "select":
            chosen = [c for c in form.getlist(key) if c]
            typed[key] = chosen
            if chosen:
                grid[spec.name] = chosen
        elif spec.kind == "checkbox":
            typed[key] = form.get(key) == "both"
            if typed[key]:
                grid[spec.name] = [True, False]
        else:
            text = (form.get(key) or "").strip()
            typed[key] = text
            if text:
                grid[spec.name] = [_number(spec, part.strip()) for part in text.split(",") if part.strip()] or [text]
            low, high = (
                (form.get(f"range.{spec.name}.low") or "").strip(),
                (form.get(f"range.{spec.name}.high") or "").strip(),
            )
            log = form.get(f"range.{spec.name}.log") in ("on", "true", "1")
            typed.update(
                {f"range.{spec.name}.low": low, f"range.{spec.name}.high": high, f"range.{spec.name}.log": log}
            )
            if low or high:
                ranges[spec.name] = {"low": low or None, "high": high or None, "log": log}
    settings, typed_settings = parse_form(setting_specs(), form)
    typed.update({PREFIX + k: v for k, v in typed_settings.items()})
    return {**settings, "grid": grid, "ranges": ranges}, typed


def initial() -> dict[str, Any]:
    """The sweep inputs before anything is typed: a small learning-rate grid to start from."""
    typed: dict[str, Any] = {
        f"grid.{s.name}": ([] if s.kind == "select" else False if s.kind == "checkbox" else "") for s in row_specs()
    }
    typed["grid.learning_rate"] = "1e-4, 3e-4"
    for name, spec in setting_specs().items():
        typed[PREFIX + name] = spec.default if spec.kind == "checkbox" else fmt(spec.default)
    return typed


def error_key(field: str) -> str:
    """The form input an error from SweepParams names: grid.X / ranges.X -> the row of X, settings -> sweep.X."""
    head, _, rest = field.partition(".")
    if head in ("grid", "ranges") and rest:
        return "row." + rest.split(".")[0]
    if head in SETTINGS:
        return PREFIX + head
    return field
