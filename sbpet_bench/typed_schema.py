"""JSON Schema (draft 2020-12) from TypedDicts, and a checker for the subset of it that they produce.

Declaring a JSON document as TypedDicts keeps its shape next to the Python that
writes it; the schema generated from them is what other languages read. The
checker lets sbpet validate without a JSON Schema library at run time, and
says which field is wrong in words (tests hold it to the ``jsonschema`` library).
Fields may carry a description: ``Annotated[float, "seconds"]``.
"""

from __future__ import annotations

import json
import math
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of one annotation; TypedDicts go into ``defs`` by class name and are referred to."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        inner = type_schema(args[0], defs)
        descriptions = [a for a in args[1:] if isinstance(a, str)]
        return {**inner, "description": descriptions[0]} if descriptions else inner
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is Union or isinstance(tp, types.UnionType):
        return {"anyOf": [type_schema(a, defs) for a in args]}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1], defs)}
    if _is_typeddict(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: a type may refer to itself
            defs[name] = object_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def object_schema(tp: type, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of a TypedDict: its docstring, its fields, and which of them are required."""
    hints = get_type_hints(tp, include_extras=True)
    out: dict[str, Any] = {"type": "object"}
    if tp.__doc__:
        out["description"] = " ".join(tp.__doc__.split())
    out["properties"] = {name: type_schema(hint, defs) for name, hint in hints.items()}
    required = [name for name in hints if name in tp.__required_keys__]
    if required:
        out["required"] = required
    return out  # further properties are allowed: new optional fields do not break older readers


_JSON_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def check(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str, problems: list[str], limit: int) -> None:
    """Append to ``problems`` what is wrong with ``value`` (``where`` names it), checking the keywords that
    :func:`type_schema` emits plus ``pattern``: $ref (into ``root``'s $defs), type, enum, pattern, anyOf,
    properties, required, additionalProperties, items. Non-finite floats are errors: JSON has none."""
    if len(problems) >= limit:
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: {value} is not JSON (write null for an undefined number)")
        return
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        if not any(not _problems(value, s, root, where) for s in schema["anyOf"]):
            kinds = " or ".join(s.get("type", s.get("$ref", "?").rsplit("/", 1)[-1]) for s in schema["anyOf"])
            problems.append(f"{where}: expected {kinds}, got {_show(value)}")
        return
    expected = schema.get("type")
    if expected is not None and not _JSON_TYPES[expected](value):
        problems.append(f"{where}: expected {expected}, got {_show(value)}")
        return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: expected one of {schema['enum']}, got {_show(value)}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}: required field {name!r} is missing")
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = props.get(name, extra)
            if sub is False:
                problems.append(f"{where}: unexpected field {name!r}")
            elif isinstance(sub, dict):
                check(item, sub, root, f"{where}.{name}", problems, limit)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check(item, schema["items"], root, f"{where}[{i}]", problems, limit)


def _problems(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> list[str]:
    out: list[str] = []
    check(value, schema, root, where, out, 1)
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
