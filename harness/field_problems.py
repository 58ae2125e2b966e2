"""Pydantic validation errors as the lines a user reads: the place (`backends.lora.r`), the bad
value, what is wrong and how to fix it (with a did-you-mean for unknown keys). Shared by the
suite reader and the general-set reader.
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ValidationError

from harness import registry
from harness.errors import shown


def _place(loc) -> str:
    return ".".join(str(part) for part in loc)


# What to do, by pydantic error type (the message says what is wrong).
_PYDANTIC_FIXES = {
    "int_parsing": "write a whole number", "int_type": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number, e.g. 0.001 or 1e-3", "float_type": "write a number, e.g. 0.001 or 1e-3",
    "bool_parsing": "write true or false", "bool_type": "write true or false",
    "string_type": "write text (quote it)", "list_type": "write a list, e.g. [a, b]",
    "dict_type": "write a mapping, e.g. {key: value}", "model_type": "write a mapping of its keys",
    "model_attributes_type": "write a mapping of its keys",
    "string_pattern_mismatch": "use letters, digits, '_', '-' and '.', starting with a letter or digit",
    "literal_error": "use one of those values", "too_short": "add at least one", "too_long": "remove some",
    "greater_than": "change the value", "greater_than_equal": "change the value",
    "less_than": "change the value", "less_than_equal": "change the value",
    "finite_number": "write a finite number",
}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "is-instance", "literal"}


def _unwrap(annotation) -> tuple[type[BaseModel] | None, int]:
    """The pydantic model inside an annotation (through Optional, list, dict) and how many
    container levels (list indices, dict keys) sit between the field and that model."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, dict, tuple, set, frozenset) and args:
        model, levels = _unwrap(args[-1])
        return model, levels + 1
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            model, levels = _unwrap(arg)
            if model is not None:
                return model, levels
    return None, 0


def _model_at(root: type[BaseModel], loc) -> type[BaseModel] | None:
    """The pydantic model that holds the keys at `loc` (a path of field names, indices and keys)."""
    model, skip = root, 0
    for part in loc:
        if skip:
            skip -= 1
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model, skip = _unwrap(model.model_fields[part].annotation)
    return None if skip else model


def pydantic_problems(error: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """One `place: problem (got value); fix` line per place, from pydantic's errors against `root`."""
    items = error.errors()
    # A union field reports once per member, tagged (target_modules.list[str], margin.float): one place.
    parents = [tuple(i["loc"][:-1]) for i in items if i["loc"] and isinstance(i["loc"][-1], str)]
    by_place: dict[str, list[dict]] = {}
    for item in items:
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        if loc and isinstance(loc[-1], str) and loc[-1] in _TYPE_TAGS and parents.count(tuple(item["loc"][:-1])) > 1:
            loc = loc[:-1]
        by_place.setdefault(_place(loc), []).append({**item, "loc": loc})
    problems = []
    for place, items in by_place.items():
        first = items[0]
        full = prefix + place
        if first["type"] == "extra_forbidden":
            parent = _model_at(root, first["loc"][:-1])
            known = list(parent.model_fields) if parent else []
            known = [k for k in known if k != "path"]
            hint = registry.did_you_mean(str(first["loc"][-1]), known) if known else ""
            listing = f" (keys here: {', '.join(known)})" if known else ""
            problems.append(f"{full}: unknown key{hint}; remove it or check its spelling{listing}")
            continue
        if first["type"] == "missing":
            parent = _model_at(root, first["loc"][:-1])
            field = parent.model_fields.get(str(first["loc"][-1])) if parent else None
            about = f" ({field.description})" if field is not None and field.description else ""
            problems.append(f"{full}: Field required; add it{about}")
            continue
        message = " or ".join(dict.fromkeys(i["msg"] for i in items))
        fix = _PYDANTIC_FIXES.get(first["type"])
        problems.append(f"{full}: {message} (got {shown(first.get('input'))})" + (f"; {fix}" if fix else ""))
    return problems
