"""Schema checks, with jsonschema's errors turned into sentences located at their line.

Valid files take the fast path (a compiled validator); only a file with schema errors pays for
jsonschema's detailed errors.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any

from mlops_ci.manifest.problem import Problem, dotted, pointer
from mlops_ci.manifest.safe_yaml import locate, scalar_text
from mlops_ci.resources import load_schema

_JSON_TYPES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}

# Friendly explanations for the patterns of the schema, by the last field name.
_PATTERN_HINTS = {
    "name": (
        "must be lowercase letters, digits and '-', starting with a letter, not ending with '-' "
        "(at most 63)"
    ),
    "version": "must be a semantic version such as 1.4.0",
    "sha256": "must be 64 lowercase hexadecimal digits (the file's SHA-256)",
    "path": "must be a relative path inside the repository",
    "code_commit": "must be a git commit SHA (7 to 40 lowercase hex digits)",
    "refresh_by": "must be a date written YYYY-MM-DD",
    "trusted_types": "must be a fully qualified class name (package.module.Class)",
    "reviewed_at": (
        "must be a full commit SHA: 40 lowercase hex digits, as `git rev-parse origin/main` "
        "prints it (a branch or tag name moves, a short SHA is ambiguous)"
    ),
}

_Explained = tuple[list[str | int], bool, str]  # (field path, point at the key, sentence)


def schema_problems(data: Any, root_node: Any, path: str, schema_name: str) -> list[Problem]:
    """Every schema error of `data` as a Problem at its line; [] when the document is valid."""
    try:
        fast_validator(schema_name)(data)
        return []
    except Exception as exc:  # any failure of the fast path means: explain in detail
        fast_error = exc
    problems = []
    for error in detailed_validator(schema_name).iter_errors(data):
        for parts, at_key, message in explain(error, lambda p: scalar_text(root_node, p)):
            line, col = locate(root_node, parts, key=at_key)
            problems.append(Problem(path, line, col, pointer(parts), message))
    if not problems:
        # The two validators disagree: the file is refused all the same (fail closed), in the
        # fast validator's words.
        problems.append(Problem(path, None, None, "", f"the schema refuses it: {fast_error}"))
    return sorted(set(problems), key=lambda p: (p.line or 0, p.column or 0, p.message))


@cache
def fast_validator(schema_name: str) -> Callable[[Any], Any]:
    """The compiled check every file goes through (it only says valid or not)."""
    import fastjsonschema

    # The schemas keep to keywords whose meaning is the same in draft-07, which fastjsonschema
    # compiles; a test holds the two validators to the same verdict on the whole corpus.
    # A deep copy: fastjsonschema rewrites the `$ref`s of the schema it is given in place.
    schema = load_schema(schema_name)
    draft7 = {**copy.deepcopy(schema), "$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(draft7, use_formats=False)


@cache
def detailed_validator(schema_name: str) -> Any:
    """The jsonschema validator that explains: imported and built only when a file fails."""
    import jsonschema

    # JSON Schema's patterns are ECMA-262's, where `$` is the end of the string; Python's `$`
    # also matches before a final newline, so jsonschema's own `pattern` let "iris\n" through
    # as a name (and the file through as valid: the fast path failed and found nothing to
    # explain). `$` is read as `\Z` here, as fastjsonschema reads it.
    validator = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
    )
    return validator(load_schema(schema_name))


_DOLLAR = re.compile(r"(?<!\\)\$")  # an unescaped `$`, as fastjsonschema finds it


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _ecma(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _ecma(pattern: str) -> re.Pattern[str]:
    return re.compile(_DOLLAR.sub(r"\\Z", pattern))


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    """` (did you mean 'x'?)` for a close match among `options`, else ''."""
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def type_name(value: Any) -> str:
    """What a person calls the type of a YAML value: a string, a number, true/false, …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def explain(error: Any, source: Callable[[list[str | int]], str | None]) -> list[_Explained]:
    """(path, point-at-key, message) for one jsonschema error; several for additionalProperties.

    `source` gives a scalar's text as written, which beats the parsed value in hints.
    """
    path = list(error.absolute_path)
    at = f"{dotted(path)}: " if path else ""
    v = error.validator
    explainer = _EXPLAINERS.get(v)
    if explainer is not None:
        found = explainer(path, at, error, source)
        if found is not None:
            return found
    return [(path, False, f"{at}{error.message}")]


_Source = Callable[[list[str | int]], str | None]


def _additional(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    allowed = list(error.schema.get("properties", {}))
    inst = error.instance
    extras = [k for k in inst if k not in allowed] if isinstance(inst, dict) else []
    out: list[_Explained] = []
    for k in extras:
        hint = did_you_mean(k, allowed) or f"; allowed here: {', '.join(allowed)}"
        out.append(([*path, k], True, f"{at}unknown field '{k}'{hint}"))
    return out


def _required(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    inst = error.instance
    missing = [k for k in error.validator_value if isinstance(inst, dict) and k not in inst]
    return [(path, True, f"{at}missing required field '{k}'") for k in missing]


def _enum(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    options = ", ".join(str(o) for o in error.validator_value)
    hint = did_you_mean(error.instance, error.validator_value)
    return [(path, False, f"{at}{_show(error.instance)} is not one of {options}{hint}")]


def _const(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    return [
        (path, False, f"{at}must be {_show(error.validator_value)}, not {_show(error.instance)}")
    ]


def _type(path: list[str | int], at: str, error: Any, source: _Source) -> list[_Explained]:
    inst, wanted = error.instance, error.validator_value
    wanted = wanted if isinstance(wanted, list) else [wanted]
    names = " or ".join(_JSON_TYPES.get(str(w), str(w)) for w in wanted)
    hint = ""
    if "string" in wanted and isinstance(inst, int | float) and not isinstance(inst, bool):
        hint = f' (quote it: "{source(path) or inst}")'
    return [(path, False, f"{at}must be {names}, not {type_name(inst)}{hint}")]


def _pattern(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    last = next((p for p in reversed(path) if isinstance(p, str)), "")
    if path and path[-2:-1] == ["owners"]:
        text = "must be a GitHub user (@alice) or team (@org/team)"
    else:
        text = _PATTERN_HINTS.get(last, f"does not match the pattern {error.validator_value}")
    return [(path, False, f"{at}{_show(error.instance)} {text}")]


def _any_of(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained] | None:
    if not isinstance(error.instance, dict):
        return None
    needed = [r for alt in error.validator_value for r in alt.get("required", [])]
    return [(path, False, f"{at}needs at least one of {', '.join(needed)}")] if needed else None


def _size(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    n = error.validator_value
    texts = {
        "minItems": f"needs at least {n} item{'s' if n != 1 else ''}",
        "maxItems": f"allows at most {n} items",
        "uniqueItems": "has duplicate items",
        "minProperties": "must not be empty",
        "minLength": "must not be empty" if n == 1 else f"needs at least {n} characters",
        "maxLength": f"allows at most {n} characters",
    }
    return [(path, False, f"{at}{texts[error.validator]}")]


def _bound(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained]:
    n = error.validator_value
    texts = {
        "minimum": f"must be at least {n}",
        "maximum": f"must be at most {n}",
        "exclusiveMinimum": f"must be greater than {n}",
        "exclusiveMaximum": f"must be less than {n}",
    }
    return [(path, False, f"{at}{_show(error.instance)} {texts[error.validator]}")]


def _not(path: list[str | int], at: str, error: Any, _: _Source) -> list[_Explained] | None:
    # a schema says why a value is refused in its "$comment" (e.g. forbidden trusted types)
    reason = error.schema.get("$comment") if isinstance(error.schema, dict) else None
    return [(path, False, f"{at}{_show(error.instance)} {reason}")] if reason else None


_Explainer = Callable[[list[str | int], str, Any, _Source], list[_Explained] | None]
_EXPLAINERS: dict[str, _Explainer] = {
    "additionalProperties": _additional,
    "required": _required,
    "enum": _enum,
    "const": _const,
    "type": _type,
    "pattern": _pattern,
    "anyOf": _any_of,
    "not": _not,
    **dict.fromkeys(
        ("minItems", "maxItems", "uniqueItems", "minProperties", "minLength", "maxLength"), _size
    ),
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"), _bound),
}
