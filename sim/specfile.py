"""Spec files: YAML read strictly, validated with one-line errors.

Fleet specs and scenario files share this: a duplicate key, invalid YAML or
a field that fails validation becomes one SpecError line that names the
file, the field path, the value given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from sim.errors import SpecError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML file holds; anything else is a SpecError."""
    return _read_yaml(path)


def validate(model: type[M], data: Any, path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {describe(exc, model)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it as invalid YAML
        if key in seen:
            line = key_node.start_mark.line + 1
            raise SpecError(f"line {line}: key {key!r} appears twice in one mapping")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping
)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: byte {exc.start} "
                        f"is {exc.object[exc.start]:#04x}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        # Errors without a mark (a control character, say) span lines.
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise SpecError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys, got "
                        f"{type(data).__name__}")
    return data


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first validation error as `field.path: problem (got value)`."""
    error = exc.errors()[0]
    loc = error["loc"]
    path = _format_loc(loc)
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(model, loc[:-1]))
        return f"{path}: unknown key (allowed: {allowed})"
    if kind == "missing":
        return f"{path}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    ctx = error.get("ctx", {})
    if kind == "string_pattern_mismatch":
        message = f"must match {ctx['pattern']}"
    elif kind == "greater_than_equal":
        message = f"must be at least {ctx['ge']}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx['le']}"
    if kind in ("string_type", "literal_error") and isinstance(given, (int, float)):
        # YAML 1.1 reads an unquoted NO as false and 4:00:00 as 14400.
        message += f"; YAML read it as {type(given).__name__}, so quote it"
    where = f"{path}: " if path else ""
    if isinstance(given, (dict, list)):
        return f"{where}{message}"
    return f"{where}{message} (got {_short(given)})"


def _format_loc(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not _is_union_tag(item):
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


def _is_union_tag(item: str) -> bool:
    """Whether a location step names a union member, not a key of the spec."""
    # Spec keys are lower case; a capitalised step is a model of a union.
    return item in ("int", "str") or item[:1].isupper() or item.startswith(
        ("function-", "literal["))


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for item in loc:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(str(item))
        if field is None:
            break
        inner = _model_in(field.annotation)
        if inner is None:
            break
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
