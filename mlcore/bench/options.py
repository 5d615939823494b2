"""Command-line options declared once, on a dataclass's fields: `--field-name`, type, default, help and choices."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def option(default: Any = None, help: str = "", *, choices: tuple | None = None) -> Any:
    """A dataclass field whose metadata carries its command-line help and choices."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _value_type(hint: Any) -> tuple[type, bool]:
    """(type of one value, whether it takes several) of an annotation: X | None -> X, tuple[X, ...] -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def _default_note(field: dataclasses.Field, defaults: dict[str, dict]) -> str:
    """The default as the help states it: the field's own, or one per context when it is left None."""
    if field.default is not None:
        return f"default {_text(field.default)}"
    shown = {context: _text(values[field.name]) for context, values in defaults.items() if field.name in values}
    if not shown:
        return ""
    if len(set(shown.values())) == 1:
        return f"default {next(iter(shown.values()))}"
    return "default: " + ", ".join(f"{context} {value}" for context, value in shown.items())


def add_options(parser: argparse.ArgumentParser, cls: type, *, defaults: dict[str, dict] | None = None) -> None:
    """One option per field of the dataclass `cls`, the help stating the `defaults` per context of fields left None."""
    # The option's default is the field's (None included), so an option not given reaches the code unset.
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, several = _value_type(hints[field.name])
        note = _default_note(field, defaults or {})
        text = field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"default": field.default, "help": f"{text} ({note})" if note else text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if several:
                kwargs["nargs"] = "+"
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]
        parser.add_argument("--" + field.name.replace("_", "-"), **kwargs)
