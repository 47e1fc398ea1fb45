"""JSON Schemas of the request and response bodies, and request validation.

The same schemas are the OpenAPI document's components, so what the service checks and
what it documents cannot drift apart.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from peewee import CharField, DateTimeField, Field, IntegerField

from models import User, public_fields, public_names, required_on_create, writable_fields

USERNAME_MAX = User.username.max_length
USERNAME_PATTERN = rf"^[a-z0-9][a-z0-9_.-]{{0,{USERNAME_MAX - 1}}}$"
USERNAME_PREFIX_PATTERN = rf"^[a-z0-9_.-]{{1,{USERNAME_MAX}}}$"
# Printable, no spaces, one "@" and a dot in the domain: strict enough to catch typos,
# loose enough for real addresses; delivery is the only true check.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$"
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"
# A display name may not hold what renders as nothing or reorders what follows: controls (Cc),
# format characters (Cf: bidirectional overrides such as U+202E, zero-width spaces, tags),
# line and paragraph separators (Zl, Zp). (Lone surrogates never get here: the JSON parser
# refuses them.) Two format characters
# stay: ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER, which Persian and Indic spelling and
# emoji sequences (U+1F469 U+200D U+1F4BB) need.
DISPLAY_NAME_KEEPS = {"\u200c", "\u200d"}
DISPLAY_NAME_REFUSES = ("Cc", "Cf", "Zl", "Zp")


def _refused_ranges(categories: tuple[str, ...], keep: set[str]) -> str:
    """A regex character-class body of every code point in `categories` (this Python's Unicode) but `keep`."""
    points = [p for p in range(sys.maxunicode + 1) if unicodedata.category(chr(p)) in categories and chr(p) not in keep]
    ranges: list[list[int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    # \uXXXX reads the same in Python and ECMA-262; beyond the BMP the character itself does.
    escape = lambda p: f"\\u{p:04x}" if p <= 0xFFFF else chr(p)  # noqa: E731
    return "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges)


DISPLAY_NAME_PATTERN = f"^[^{_refused_ranges(DISPLAY_NAME_REFUSES, DISPLAY_NAME_KEEPS)}]*$"
# What a client may write in each text field; any other text field takes text without control characters.
PATTERNS = {"username": USERNAME_PATTERN, "email": EMAIL_PATTERN, "full_name": DISPLAY_NAME_PATTERN}


def _json_type(field: Field) -> dict[str, Any]:
    """The JSON Schema of a column's values, as responses carry them."""
    if isinstance(field, IntegerField):  # BigAutoField too
        schema: dict[str, Any] = {"type": "integer", **({"minimum": 1} if field.primary_key else {})}
    elif isinstance(field, CharField):
        schema = {"type": "string", "maxLength": field.max_length}
    elif isinstance(field, DateTimeField):
        schema = {"type": "string", "format": "date-time"}
    else:
        raise TypeError(f"no JSON Schema for {type(field).__name__} ({field.name}); add it here")
    if field.null:
        schema["type"] = [schema["type"], "null"]
    return schema


def _input(field: Field) -> dict[str, Any]:
    """The JSON Schema of what a client may send for a writable field."""
    schema = _json_type(field)
    if isinstance(field, CharField):
        if not field.null:
            schema["minLength"] = 1
        schema["pattern"] = PATTERNS.get(field.name, NO_CONTROL_CHARACTERS)
    if field.help_text:
        schema["description"] = field.help_text
    return schema


_WRITABLE = {field.name: _input(field) for field in writable_fields(User)}
USER_CREATE: dict[str, Any] = {
    "type": "object",
    "properties": _WRITABLE,
    "required": [field.name for field in writable_fields(User) if required_on_create(field)],
    "additionalProperties": False,
}
# {} is a valid merge patch that changes nothing (RFC 7396).
USER_UPDATE: dict[str, Any] = {
    "type": "object",
    "properties": _WRITABLE,
    "additionalProperties": False,
}
USER: dict[str, Any] = {
    "type": "object",
    "properties": {field.name: _json_type(field) for field in public_fields(User)},
    "required": list(public_names(User)),
    "additionalProperties": False,
}
PROBLEM: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status"],
}

_MESSAGES: dict[str, Callable[[ValidationError], str]] = {
    "type": lambda e: "must be of type " + " or ".join(_as_list(e.validator_value)),
    "maxLength": lambda e: f"must be at most {e.validator_value} characters",
    "minLength": lambda e: f"must be at least {e.validator_value} character(s)",
    "pattern": lambda e: _PATTERN_MESSAGES.get(e.validator_value, "has characters that are not allowed"),
}
_PATTERN_MESSAGES: dict[str, str] = {
    USERNAME_PATTERN: "use lowercase letters, digits, '_', '.' or '-', starting with a letter or digit",
    EMAIL_PATTERN: "must be an email address such as name@example.org",
    NO_CONTROL_CHARACTERS: "must not contain control characters",
    DISPLAY_NAME_PATTERN: "must not contain control, invisible format or line-separator characters",
}


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _field_errors(error) -> list[dict[str, str]]:
    if error.validator == "required":
        return [{"field": name, "message": "is required"} for name in error.validator_value if name not in error.instance]
    if error.validator == "additionalProperties":
        allowed = error.schema.get("properties", {})
        return [{"field": str(name), "message": "is not a known field"} for name in error.instance if name not in allowed]
    field = ".".join(str(part) for part in error.absolute_path) or "(body)"
    message = _MESSAGES.get(error.validator, lambda e: "is not valid")(error)
    return [{"field": field, "message": message}]


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where "$" is the end of the string; Python's "$"
    # also matches before a final newline, which would let "name\n" through.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def matches(pattern: str, value: str) -> bool:
    return _compiled(pattern).search(value) is not None


def _ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not matches(pattern, instance):
        yield ValidationError(f"does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


class BodyValidator:
    def __init__(self, schema: dict[str, Any]) -> None:
        _Validator.check_schema(schema)
        self._validator = _Validator(schema)

    def errors(self, document: Any) -> list[dict[str, str]]:
        """Every problem with `document`, one entry per field, in a stable order."""
        found = [item for error in self._validator.iter_errors(document) for item in _field_errors(error)]
        return sorted(found, key=lambda item: (item["field"], item["message"]))


validate_create = BodyValidator(USER_CREATE).errors
validate_update = BodyValidator(USER_UPDATE).errors
