"""Model manifests: safe YAML with line numbers, schema and semantic checks, problems as values.

Valid files take the fast path (libyaml + a compiled validator); only a file with schema errors
pays for jsonschema's detailed errors, which are then mapped back to the line of the offending
node. Nothing here imports a machine-learning framework.
"""

from __future__ import annotations

import copy
import datetime as _dt
import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.resources import MANIFEST_SCHEMA, load_schema

MANIFEST_NAMES = ("model.yaml", "model.yml")
POLICY_PATH = ".mlops/policy.yaml"
#: Manifests are small; a larger file is a mistake or an attack.
MAX_FILE_BYTES = 1 << 20
#: Deeper than any real manifest, shallow enough that nothing recurses dangerously.
MAX_DEPTH = 64

# Artifact formats by file suffix, and the formats each framework reads.
FORMAT_BY_SUFFIX = {
    ".skops": "skops",
    ".json": "xgboost-json",
    ".ubj": "xgboost-ubj",
    ".txt": "lightgbm-text",
    ".pt2": "torch-export",
    ".pt": "torchscript",
    ".torchscript": "torchscript",
    ".onnx": "onnx",
}
FORMATS_BY_FRAMEWORK = {
    "sklearn": ("skops",),
    "xgboost": ("xgboost-json", "xgboost-ubj"),
    "lightgbm": ("lightgbm-text",),
    "pytorch": ("torch-export", "torchscript"),
    "onnx": ("onnx",),
}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".bin", ".pth"}
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
)
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2", "mape"})


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a file, located as precisely as the file allows (1-based)."""

    path: str
    line: int | None
    column: int | None
    pointer: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model's signature."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...] | None = None
    role: str | None = None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def output(self, role: str) -> TensorSpec | None:
        """The first output with this role (label, probabilities, prediction), if any."""
        return next((o for o in self.outputs if o.role == role), None)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; `data` is the document as plain JSON values."""

    path: Path
    root: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.data["metadata"]["name"])

    @property
    def version(self) -> str:
        return str(self.data["metadata"]["version"])

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(self.data["metadata"]["owners"])

    @property
    def risk(self) -> str:
        return str(self.data["metadata"]["risk"])

    @property
    def framework(self) -> str:
        return str(self.data["spec"]["framework"])

    @property
    def task(self) -> str:
        task = self.data["spec"].get("task")
        if task:
            return str(task)
        has_label = self.signature.output("label") or self.signature.output("probabilities")
        return "classification" if has_label else "regression"

    @property
    def artifact_path(self) -> Path:
        return self.resolve(self.data["spec"]["artifact"]["path"])

    @property
    def artifact_sha256(self) -> str:
        return str(self.data["spec"]["artifact"]["sha256"])

    @property
    def artifact_format(self) -> str:
        return artifact_format(self.data["spec"]["artifact"]) or "unknown"

    @property
    def signature(self) -> Signature:
        sig = self.data["spec"].get("signature") or {"inputs": [], "outputs": []}

        def spec(d: dict[str, Any]) -> TensorSpec:
            cols = d.get("columns")
            return TensorSpec(
                name=d["name"],
                dtype=d["dtype"],
                shape=tuple(d["shape"]),
                columns=tuple(cols) if cols else None,
                role=d.get("role"),
            )

        return Signature(
            inputs=tuple(spec(d) for d in sig["inputs"]),
            outputs=tuple(spec(d) for d in sig["outputs"]),
        )

    def section(self, name: str) -> dict[str, Any]:
        """A `spec` section (tests, conversion, benchmark, …) or {} when the manifest has none."""
        value = self.data["spec"].get(name)
        return value if isinstance(value, dict) else {}

    def resolve(self, relative: str) -> Path:
        """A manifest-relative path, checked to stay inside the repository."""
        resolved, problem = _resolve_inside(self.path.parent, relative, self.root)
        if problem:
            raise CheckFailed(problem, path=self.path)
        assert resolved is not None
        return resolved


# --- reading YAML safely, keeping every node's position ------------------------------------------

_TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_INT = "tag:yaml.org,2002:int"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_TAGS: dict[str, str] = {}


class _Loader(_BaseLoader):
    """The safe loader with a memo for the tags of plain scalars.

    libyaml hands every scalar back to Python's regex resolver; manifests repeat the same keys
    and values thousands of times, so the memo removes most of that cost.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_TAGS) < 100_000:
                    _PLAIN_TAGS[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


class _Invalid(Exception):
    """A problem found while reading; carries the node position."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1 if mark is not None else None
        self.column = mark.column + 1 if mark is not None else None


class _AliasFound(Exception):
    """A node reached twice: the document uses an alias."""


_ALIAS_MESSAGE = "YAML aliases (*name) are not allowed in a manifest"


def _first_alias(text: str) -> Any:
    """Mark of the first alias token; only scanned on the error path."""
    loader = _Loader(text)
    try:
        while loader.check_token():
            token = loader.get_token()
            if isinstance(token, yaml.AliasToken):
                return token.start_mark
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return None


def _decode(raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise _Invalid(f"file is {len(raw):,} bytes; manifests are limited to {MAX_FILE_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _Invalid(
            f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
            _Mark(line - 1, col - 1),
        ) from None
    return text.removeprefix("\ufeff")


@dataclass(frozen=True)
class _Mark:
    line: int
    column: int


def _compose(text: str) -> Any:
    """The YAML node tree of a single-document file; None for an empty file."""
    tab = _TAB_INDENT.search(text)
    if tab:
        line = text.count("\n", 0, tab.start()) + 1
        col = tab.end() - tab.start()
        raise _Invalid(
            "tab used for indentation; YAML allows spaces only", _Mark(line - 1, col - 1)
        )
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        if "expected a single document" in str(exc):
            reason = "more than one YAML document ('---'); a manifest is one document"
        raise _Invalid(f"YAML syntax error: {reason}", mark) from None
    except yaml.YAMLError as exc:
        raise _Invalid(f"YAML error: {exc}") from None
    except RecursionError:
        raise _Invalid(f"YAML nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


_Constructor = yaml.SafeLoader("")


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


def _scalar(node: Any) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _INT and node.value.isdigit() and (node.value[0] != "0" or node.value == "0"):
        return int(node.value)  # the common case, without the general constructor's parsing
    if tag in _SCALAR_TAGS:
        # Straight to the tag's constructor: construct_object would cache every node forever.
        try:
            value = _Constructor.yaml_constructors[tag](_Constructor, node)
        except ValueError:  # 2027-02-30 looks like a date but is none: keep the text
            return node.value
        if isinstance(value, _dt.datetime | _dt.date):
            return value.isoformat()
        return value
    raise _Invalid(f"YAML tag {_tag(tag)} is not allowed in a manifest", node.start_mark)


def _build(node: Any, seen: set[int], depth: int = 0) -> Any:
    """Plain JSON values from the node tree, refusing aliases, merges and duplicate keys."""
    if depth > MAX_DEPTH:
        raise _Invalid(f"YAML nested more than {MAX_DEPTH} levels deep", node.start_mark)
    if id(node) in seen:
        # The composer hands back the anchored node again for every alias: refusing the first
        # repeat keeps "billion laughs" documents from expanding at all.
        raise _AliasFound()
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if node.tag not in (_SEQ, _MAP):
        raise _Invalid(f"YAML tag {_tag(node.tag)} is not allowed in a manifest", node.start_mark)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, seen, depth + 1) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _Invalid(
                    "YAML merge keys (<<) are not allowed in a manifest", key_node.start_mark
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Invalid("mapping keys must be plain strings", key_node.start_mark)
            # The key's text as written: `yes:` or `1:` is the string the author meant.
            key = key_node.value
            if key in result:
                raise _Invalid(f"duplicate key '{key}'", key_node.start_mark)
            if id(key_node) in seen:
                raise _AliasFound()
            seen.add(id(key_node))
            result[key] = _build(value_node, seen, depth + 1)
        return result
    raise _Invalid("unsupported YAML node", getattr(node, "start_mark", None))


def _walk(root: Any, parts: Sequence[str | int], *, key: bool) -> tuple[Any, Any]:
    """(node at `parts` or None, mark of the deepest node reached; of its key when `key`)."""
    node, mark = root, root.start_mark
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == part), None)
            if found is None:
                return None, mark
            node, mark = found[1], (found[0].start_mark if key else found[1].start_mark)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            mark = node.start_mark
        else:
            return None, mark
    return node, mark


def locate(root: Any, parts: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the node at `parts`; of its key when `key` is set.

    Walks as far as the path exists, so a missing field points at its parent.
    """
    _, mark = _walk(root, parts, key=key)
    return mark.line + 1, mark.column + 1


# --- schema errors as sentences ------------------------------------------------------------------


def _dotted(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


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


_JSON_TYPES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _type_name(value: Any) -> str:
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


def _did_you_mean(word: Any, options: Iterable[Any]) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# Friendly explanations for the patterns of the schema, by the last field name.
_PATTERN_HINTS = {
    "name": "must be lowercase letters, digits and '-', starting with a letter (at most 63)",
    "version": "must be a semantic version such as 1.4.0",
    "sha256": "must be 64 lowercase hexadecimal digits (the file's SHA-256)",
    "path": "must be a relative path inside the repository",
    "code_commit": "must be a git commit SHA (7 to 40 lowercase hex digits)",
    "refresh_by": "must be a date written YYYY-MM-DD",
}


def _explain(
    error: Any, source: Callable[[list[str | int]], str | None]
) -> list[tuple[list[str | int], bool, str]]:
    """(path, point-at-key, message) for one jsonschema error; several for additionalProperties.

    `source` gives a scalar's text as written, which beats the parsed value in hints.
    """
    path = list(error.absolute_path)
    at = f"{_dotted(path)}: " if path else ""
    v, inst, schema_v = error.validator, error.instance, error.validator_value
    if v == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in inst if k not in allowed] if isinstance(inst, dict) else []
        return [
            (
                [*path, k],
                True,
                f"{at}unknown field '{k}'{_did_you_mean(k, allowed)}"
                + ("" if _did_you_mean(k, allowed) else f"; allowed here: {', '.join(allowed)}"),
            )
            for k in extras
        ]
    if v == "required":
        missing = [k for k in schema_v if isinstance(inst, dict) and k not in inst]
        return [(path, True, f"{at}missing required field '{k}'") for k in missing]
    if v == "enum":
        options = ", ".join(str(o) for o in schema_v)
        return [
            (
                path,
                False,
                f"{at}{_show(inst)} is not one of {options}{_did_you_mean(inst, schema_v)}",
            )
        ]
    if v == "const":
        return [(path, False, f"{at}must be {_show(schema_v)}, not {_show(inst)}")]
    if v == "type":
        wanted = schema_v if isinstance(schema_v, list) else [schema_v]
        names = " or ".join(_JSON_TYPES.get(str(w), str(w)) for w in wanted)
        hint = ""
        if "string" in wanted and isinstance(inst, int | float) and not isinstance(inst, bool):
            hint = f' (quote it: "{source(path) or inst}")'
        return [(path, False, f"{at}must be {names}, not {_type_name(inst)}{hint}")]
    if v == "pattern":
        last = next((p for p in reversed(path) if isinstance(p, str)), "")
        if path and path[-2:-1] == ["owners"]:
            text = "must be a GitHub user (@alice) or team (@org/team)"
        else:
            text = _PATTERN_HINTS.get(last, f"does not match the pattern {schema_v}")
        return [(path, False, f"{at}{_show(inst)} {text}")]
    if v == "anyOf" and isinstance(inst, dict):
        needed = [r for alt in schema_v for r in alt.get("required", [])]
        if needed:
            return [(path, False, f"{at}needs at least one of {', '.join(needed)}")]
    if v in ("minItems", "maxItems", "uniqueItems", "minProperties", "minLength", "maxLength"):
        texts = {
            "minItems": f"needs at least {schema_v} item{'s' if schema_v != 1 else ''}",
            "maxItems": f"allows at most {schema_v} items",
            "uniqueItems": "has duplicate items",
            "minProperties": "must not be empty",
            "minLength": "must not be empty"
            if schema_v == 1
            else f"needs at least {schema_v} characters",
            "maxLength": f"allows at most {schema_v} characters",
        }
        return [(path, False, f"{at}{texts[v]}")]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        texts = {
            "minimum": f"must be at least {schema_v}",
            "maximum": f"must be at most {schema_v}",
            "exclusiveMinimum": f"must be greater than {schema_v}",
            "exclusiveMaximum": f"must be less than {schema_v}",
        }
        return [(path, False, f"{at}{_show(inst)} {texts[v]}")]
    return [(path, False, f"{at}{error.message}")]


@cache
def _validators(schema_name: str) -> tuple[Callable[[Any], Any], Any]:
    """(compiled fast check, detailed jsonschema validator) for a schema of the package."""
    import fastjsonschema
    import jsonschema

    schema = load_schema(schema_name)
    detailed = jsonschema.Draft202012Validator(schema)
    # The schemas keep to keywords whose meaning is the same in draft-07, which fastjsonschema
    # compiles; a test holds the two validators to the same verdict on the whole corpus.
    # A deep copy: fastjsonschema rewrites the `$ref`s of the schema it is given in place.
    draft7 = {**copy.deepcopy(schema), "$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(draft7, use_formats=False), detailed


def _schema_problems(data: Any, root_node: Any, path: str, schema_name: str) -> list[Problem]:
    fast, detailed = _validators(schema_name)
    try:
        fast(data)
        return []
    except Exception:  # noqa: S110 - any failure of the fast path means: explain in detail
        pass

    def source(parts: list[str | int]) -> str | None:
        node, _ = _walk(root_node, parts, key=False)
        return node.value if isinstance(node, yaml.ScalarNode) else None

    problems = []
    for error in detailed.iter_errors(data):
        for parts, at_key, message in _explain(error, source):
            line, col = locate(root_node, parts, key=at_key)
            problems.append(Problem(path, line, col, _pointer(parts), message))
    return sorted(set(problems), key=lambda p: (p.line or 0, p.column or 0, p.message))


def parse_document(
    text: str | bytes, path: str, schema_name: str = MANIFEST_SCHEMA
) -> tuple[dict[str, Any] | None, list[Problem], Any]:
    """Parse YAML and check it against a schema: (document or None, problems, node tree).

    Touches no file; used for manifests read from git or the GitHub API, and for the policy.
    """
    try:
        if isinstance(text, bytes):
            text = _decode(text)
        elif len(text) > MAX_FILE_BYTES:
            raise _Invalid(
                f"file is {len(text):,} characters; manifests are limited to {MAX_FILE_BYTES:,}"
            )
        node = _compose(text)
        if node is None:
            raise _Invalid("the file is empty")
        if not isinstance(node, yaml.MappingNode):
            raise _Invalid(
                "the document must be a mapping (key: value), not a list or a single value",
                node.start_mark,
            )
        try:
            data = _build(node, set())
        except _AliasFound:
            raise _Invalid(_ALIAS_MESSAGE, _first_alias(text)) from None
    except _Invalid as exc:
        return None, [Problem(path, exc.line, exc.column, "", exc.message)], None
    return data, _schema_problems(data, node, path, schema_name), node


# --- checks against the repository ---------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@lru_cache(maxsize=4096)
def _real(folder: str) -> str:
    return os.path.realpath(folder)


def _inside(folder: str, target: str) -> bool:
    return target == folder or target.startswith(folder.rstrip(os.sep) + os.sep)


def _has_link(real_base: str, target: str) -> bool:
    """Whether a component of `target` below its common part with `real_base` is a symlink."""
    common = real_base if _inside(real_base, target) else os.path.commonpath([real_base, target])
    current = common
    for part in os.path.relpath(target, common).split(os.sep):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current):
            return True
    return False


def _resolve_inside(base: Path, relative: str, root: Path) -> tuple[Path | None, str | None]:
    """(absolute path, None) or (None, why not): relative, inside root even after symlinks."""
    if not relative or relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
        return None, f"'{relative}' must be a path relative to the manifest"
    root_real = _real(str(root))
    # The folders above are resolved once each; only what the relative path adds can be a link.
    target = os.path.normpath(os.path.join(_real(str(base)), relative))
    if not _inside(root_real, target):
        return None, f"'{relative}' points outside the repository"
    if _has_link(_real(str(base)), target):
        target = os.path.realpath(target)
        if not _inside(root_real, target):
            return None, f"'{relative}' is a symlink that points outside the repository"
    return Path(target), None


def artifact_format(artifact: dict[str, Any]) -> str | None:
    fmt = artifact.get("format")
    if fmt:
        return str(fmt)
    return FORMAT_BY_SUFFIX.get(Path(str(artifact.get("path", ""))).suffix.lower())


def _file_refs(data: dict[str, Any]) -> Iterator[tuple[list[str | int], dict[str, Any]]]:
    """(pointer parts, {path, sha256}) of every digest-pinned file a manifest names."""
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    candidates: list[tuple[list[str | int], Any]] = [
        (["spec", "artifact"], spec.get("artifact")),
        (
            ["spec", "evaluation", "data"],
            (spec.get("evaluation") or {}).get("data")
            if isinstance(spec.get("evaluation"), dict)
            else None,
        ),
    ]
    monitoring = spec.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("drift"), dict):
        candidates.append(
            (["spec", "monitoring", "drift", "reference"], monitoring["drift"].get("reference"))
        )
    for parts, ref in candidates:
        if isinstance(ref, dict) and isinstance(ref.get("path"), str):
            yield parts, ref


def referenced_paths(data: dict[str, Any]) -> list[str]:
    """The manifest-relative paths of the files a manifest pins by digest."""
    return [ref["path"] for _, ref in _file_refs(data)]


# Numbers YAML 1.1 reads as strings: an exponent without a dot in the mantissa (2e-06).
_YAML11_FLOAT_TEXT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


def _as_yaml11_float(text: str) -> str:
    mantissa, _, exponent = text.lower().partition("e")
    return f"{mantissa}.0e{exponent}"


def _semantic_problems(
    data: dict[str, Any],
    node: Any,
    manifest_path: Path,
    root: Path,
    shown: str,
    *,
    schema_ok: bool,
) -> list[Problem]:
    """Checks the schema cannot express; the consistency checks need a schema-valid document."""
    problems: list[Problem] = []

    def add(parts: list[str | int], message: str, *, key: bool = False) -> None:
        line, col = locate(node, parts, key=key)
        problems.append(Problem(shown, line, col, _pointer(parts), message))

    sha_re = re.compile(r"^[0-9a-f]{64}$")
    for parts, ref in _file_refs(data):
        at = f"{_dotted([*parts, 'path'])}: "
        resolved, why = _resolve_inside(manifest_path.parent, ref["path"], root)
        if why:
            add([*parts, "path"], f"{at}{why}")
            continue
        assert resolved is not None
        if not resolved.is_file():
            add([*parts, "path"], f"{at}file '{ref['path']}' does not exist")
            continue
        expected = ref.get("sha256")
        if isinstance(expected, str) and sha_re.match(expected):
            actual = sha256_file(resolved)
            if actual != expected:
                add(
                    [*parts, "sha256"],
                    f"{_dotted([*parts, 'sha256'])}: digest mismatch for '{ref['path']}': "
                    f"the file's sha256 is {actual} (if the file changed on purpose, "
                    "update the digest and raise metadata.version)",
                )
    if not schema_ok:
        return problems

    spec = data["spec"]
    framework = spec.get("framework")
    artifact = spec.get("artifact")
    if (
        isinstance(artifact, dict)
        and isinstance(artifact.get("path"), str)
        and framework in FORMATS_BY_FRAMEWORK
    ):
        fmt = artifact_format(artifact)
        suffix = Path(artifact["path"]).suffix.lower()
        if fmt is None:
            hint = (
                "pickle files are refused (they run code when loaded); save with skops, the "
                "framework's native format, torch.export or ONNX"
                if suffix in _PICKLE_SUFFIXES
                else "set spec.artifact.format"
            )
            add(
                ["spec", "artifact", "path"],
                f"spec.artifact.path: cannot tell the format of '{artifact['path']}': {hint}",
            )
        elif fmt not in FORMATS_BY_FRAMEWORK[framework]:
            allowed = ", ".join(FORMATS_BY_FRAMEWORK[framework])
            add(
                ["spec", "artifact"],
                f"spec.artifact: format {fmt} is not read by framework {framework} "
                f"(expected {allowed})",
            )

    signature = spec.get("signature")
    if isinstance(signature, dict):
        for side in ("inputs", "outputs"):
            seen: dict[str, int] = {}
            for i, tensor in enumerate(signature.get(side) or []):
                if isinstance(tensor, dict) and isinstance(tensor.get("name"), str):
                    if tensor["name"] in seen:
                        add(
                            ["spec", "signature", side, i, "name"],
                            f"spec.signature.{side}[{i}].name: '{tensor['name']}' "
                            f"is also {side}[{seen[tensor['name']]}]",
                        )
                    seen.setdefault(tensor["name"], i)
        roles: dict[str, int] = {}
        for i, out in enumerate(signature.get("outputs") or []):
            role = out.get("role") if isinstance(out, dict) else None
            if role in ("label", "probabilities", "prediction"):
                if role in roles:
                    add(
                        ["spec", "signature", "outputs", i, "role"],
                        f"spec.signature.outputs[{i}].role: only one output may have role {role}",
                    )
                roles.setdefault(role, i)
        output_names = {
            o.get("name") for o in signature.get("outputs") or [] if isinstance(o, dict)
        }
        tests = spec.get("tests")
        cases = tests.get("cases") if isinstance(tests, dict) else None
        for i, case in enumerate(cases or []):
            expect = case.get("expect") if isinstance(case, dict) else None
            for key in expect or {}:
                if key not in output_names and key not in roles:
                    known = sorted(str(n) for n in output_names | set(roles))
                    add(
                        ["spec", "tests", "cases", i, "expect", key],
                        f"spec.tests.cases[{i}].expect: '{key}' is neither an output nor a role "
                        f"of the signature ({', '.join(known)}){_did_you_mean(key, known)}",
                        key=True,
                    )
            for section in ("input", "expect"):
                for key, value in (case.get(section) or {}).items():
                    where = ["spec", "tests", "cases", i, section, key]
                    if isinstance(value, str) and _YAML11_FLOAT_TEXT.match(value):
                        node_at, _ = _walk(node, where, key=False)
                        if (
                            isinstance(node_at, yaml.ScalarNode) and not node_at.style
                        ):  # plain, not quoted
                            add(
                                where,
                                f"{_dotted(where)}: YAML reads {value} as text, not a number; "
                                f"write {_as_yaml11_float(value)}",
                            )

    task = spec.get("task")
    tests = spec.get("tests")
    if task in ("classification", "regression") and isinstance(tests, dict):
        wrong = REGRESSION_METRICS if task == "classification" else CLASSIFICATION_METRICS
        for i, threshold in enumerate(tests.get("metrics") or []):
            if isinstance(threshold, dict) and threshold.get("metric") in wrong:
                add(
                    ["spec", "tests", "metrics", i, "metric"],
                    f"spec.tests.metrics[{i}].metric: {threshold['metric']} "
                    f"does not apply to a {task} model",
                )
        if tests.get("metrics") and not isinstance(spec.get("evaluation"), dict):
            add(
                ["spec", "tests", "metrics"],
                "spec.tests.metrics: metric thresholds need spec.evaluation "
                "(the data to measure on)",
            )

    bench = spec.get("benchmark")
    if isinstance(bench, dict):
        sizes = bench.get("batch_sizes") or [1, 64]
        for i, budget in enumerate(bench.get("budgets") or []):
            if (
                isinstance(budget, dict)
                and isinstance(budget.get("batch_size"), int)
                and budget["batch_size"] not in sizes
            ):
                add(
                    ["spec", "benchmark", "budgets", i, "batch_size"],
                    f"spec.benchmark.budgets[{i}].batch_size: {budget['batch_size']} is not "
                    f"among the measured batch_sizes {sizes}",
                )

    monitoring = spec.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("refresh_by"), str):
        try:
            _dt.date.fromisoformat(monitoring["refresh_by"])
        except ValueError:
            add(
                ["spec", "monitoring", "refresh_by"],
                f"spec.monitoring.refresh_by: '{monitoring['refresh_by']}' is not a real date",
            )
    return problems


# --- public entry points -------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one file: a manifest, or the policy when `schema` says so."""

    path: Path
    shown: str
    problems: tuple[Problem, ...]
    data: dict[str, Any] | None = field(default=None, repr=False)
    node: Any = field(default=None, repr=False, compare=False)
    schema: str = MANIFEST_SCHEMA

    @property
    def valid(self) -> bool:
        return not self.problems


def find_repo_root(start: Path) -> Path:
    """The enclosing git checkout of `start`, else the current folder when it contains `start`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    cwd = Path.cwd().resolve()
    return cwd if start.is_relative_to(cwd) else (start if start.is_dir() else start.parent)


def display_path(path: Path) -> str:
    """A path as a person wants to read it: relative to the current folder where it can be."""
    if not path.is_absolute():
        return os.path.normpath(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_file(
    path: Path,
    root: Path | None = None,
    shown: str | None = None,
    schema: str = MANIFEST_SCHEMA,
) -> Checked:
    """All problems of one manifest file: YAML, schema, files, digests, consistency.

    With another `schema` (the policy's), the YAML and schema checks only.
    """
    shown = shown or display_path(path)
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
    except OSError as exc:
        problem = Problem(shown, None, None, "", f"cannot read: {exc.strerror}")
        return Checked(path, shown, (problem,), schema=schema)
    if raw is None:
        message = f"file is larger than {MAX_FILE_BYTES:,} bytes; manifests are limited to that"
        return Checked(path, shown, (Problem(shown, None, None, "", message),), schema=schema)
    data, problems, node = parse_document(raw, shown, schema)
    if data is None or schema != MANIFEST_SCHEMA:
        return Checked(path, shown, tuple(problems), data, node, schema)
    root = root or find_repo_root(path.parent)
    reported = {p.pointer for p in problems}
    problems += [
        p
        for p in _semantic_problems(
            data, node, path.absolute(), root, shown, schema_ok=not problems
        )
        if p.pointer not in reported
    ]
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return Checked(path, shown, tuple(problems), data, node)


def check_unique_names(results: Sequence[Checked]) -> list[Checked]:
    """The results again, with a problem on each manifest that reuses another's name."""
    first: dict[str, Checked] = {}
    out: list[Checked] = []
    for result in results:
        meta = (
            result.data.get("metadata")
            if result.data and result.schema == MANIFEST_SCHEMA
            else None
        )
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str):
            out.append(result)
            continue
        if name in first:
            other = first[name]
            line, col = locate(result.node, ["metadata", "name"])
            other_line, _ = locate(other.node, ["metadata", "name"])
            extra = Problem(
                result.shown,
                line,
                col,
                "/metadata/name",
                f"metadata.name: '{name}' is already the name of {other.shown}:{other_line}; "
                "names must be unique in the repository",
            )
            result = Checked(
                result.path, result.shown, (*result.problems, extra), result.data, result.node
            )
        else:
            first[name] = result
        out.append(result)
    return out


def find_manifests(folder: Path) -> list[Path]:
    """Every model.yaml / model.yml below `folder`, skipping hidden folders, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "node_modules")
        found.extend(Path(dirpath) / f for f in filenames if f in MANIFEST_NAMES)
    return sorted(found)


def load(path: Path, root: Path | None = None) -> Manifest:
    """A valid manifest, or CheckFailed listing every problem with its line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"manifest {path} does not exist")
    result = check_file(path, root)
    if not result.valid:
        lines = "\n".join(f"  {p}" for p in result.problems)
        raise CheckFailed(f"{result.shown} is not a valid manifest:\n{lines}")
    assert result.data is not None
    return Manifest(path.absolute(), (root or find_repo_root(path.parent)).resolve(), result.data)


# --- versions ------------------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key with semver 2.0 precedence (build metadata ignored); ValueError if not semver."""
    match = _SEMVER.match(version)
    if not match:
        raise ValueError(f"'{version}' is not a semantic version")
    major, minor, patch, pre = match.groups()
    core = (int(major), int(minor), int(patch))
    if pre is None:
        return (*core, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (*core, 0, ids)
