"""Safe YAML reading that keeps every node's position: plain JSON values plus the node tree.

Refuses what a manifest never needs and an attacker would use: aliases, merge keys, custom
tags, duplicate keys, deep nesting, huge files, control characters. Errors carry a line.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

#: Manifests are small; a larger file is a mistake or an attack.
MAX_FILE_BYTES = 1 << 20
#: Deeper than any real manifest, shallow enough that nothing recurses dangerously.
MAX_DEPTH = 64

_TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)
# What YAML's reader refuses: C0 controls but tab, LF and CR; DEL; C1 controls but NEL; BOM-less
# non-characters. libyaml says only "position 121", so the line is found here.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 0x1B: "ESC", 0x7F: "DEL"}
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
_ALIAS_MESSAGE = "YAML aliases (*name) are not allowed in a manifest"


class YamlInvalid(Exception):
    """The file cannot be read as a manifest; `line`/`column` are 1-based when known."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.line: int | None = mark.line + 1 if mark is not None else None
        self.column: int | None = mark.column + 1 if mark is not None else None


@dataclass(frozen=True)
class _Mark:
    line: int  # 0-based, like yaml's marks
    column: int


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


class _AliasFound(Exception):
    """A node reached twice: the document uses an alias."""


def read(text: str | bytes) -> tuple[dict[str, Any], Any]:
    """(document as plain JSON values, its mapping node tree), or YamlInvalid with a line."""
    if isinstance(text, bytes):
        text = _decode(text)
    elif len(text) > MAX_FILE_BYTES:
        raise YamlInvalid(
            f"file is {len(text):,} characters; manifests are limited to {MAX_FILE_BYTES:,}"
        )
    node = _compose(text)
    if node is None:
        raise YamlInvalid("the file is empty")
    if not isinstance(node, yaml.MappingNode):
        raise YamlInvalid(
            "the document must be a mapping (key: value), not a list or a single value",
            node.start_mark,
        )
    try:
        data = _build(node, set())
    except _AliasFound:
        raise YamlInvalid(_ALIAS_MESSAGE, _first_alias(text)) from None
    return data, node


def _decode(raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise YamlInvalid(
            f"file is {len(raw):,} bytes; manifests are limited to {MAX_FILE_BYTES:,}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start)
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1)
        raise YamlInvalid(
            f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded", _Mark(line, col)
        ) from None
    return text.removeprefix("\ufeff")


def _control_character(text: str) -> YamlInvalid | None:
    found = _CONTROL.search(text)
    if found is None:
        return None
    code = ord(found.group())
    name = _CONTROL_NAMES.get(code)
    shown = f"U+{code:04X}" + (f" ({name})" if name else "")
    line = text.count("\n", 0, found.start())
    col = found.start() - (text.rfind("\n", 0, found.start()) + 1)
    return YamlInvalid(
        f"control character {shown} is not allowed in a manifest; remove it", _Mark(line, col)
    )


def _compose(text: str) -> Any:
    """The YAML node tree of a single-document file; None for an empty file."""
    tab = _TAB_INDENT.search(text)
    if tab:
        line = text.count("\n", 0, tab.start())
        raise YamlInvalid(
            "tab used for indentation; YAML allows spaces only",
            _Mark(line, tab.end() - tab.start() - 1),
        )
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        if "expected a single document" in str(exc):
            reason = "more than one YAML document ('---'); a manifest is one document"
        raise YamlInvalid(f"YAML syntax error: {reason}", mark) from None
    except yaml.YAMLError as exc:
        # The reader's errors (control characters) give an offset, not a line.
        raise _control_character(text) or YamlInvalid(f"YAML error: {exc}") from None
    except RecursionError:
        raise YamlInvalid(f"YAML nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


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
    raise YamlInvalid(f"YAML tag {_tag(tag)} is not allowed in a manifest", node.start_mark)


def _build(node: Any, seen: set[int], depth: int = 0) -> Any:
    """Plain JSON values from the node tree, refusing aliases, merges and duplicate keys."""
    if depth > MAX_DEPTH:
        raise YamlInvalid(f"YAML nested more than {MAX_DEPTH} levels deep", node.start_mark)
    if id(node) in seen:
        # The composer hands back the anchored node again for every alias: refusing the first
        # repeat keeps "billion laughs" documents from expanding at all.
        raise _AliasFound()
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if node.tag not in (_SEQ, _MAP):
        raise YamlInvalid(
            f"YAML tag {_tag(node.tag)} is not allowed in a manifest", node.start_mark
        )
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, seen, depth + 1) for item in node.value]
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            raise YamlInvalid(
                "YAML merge keys (<<) are not allowed in a manifest", key_node.start_mark
            )
        if not isinstance(key_node, yaml.ScalarNode):
            raise YamlInvalid("mapping keys must be plain strings", key_node.start_mark)
        # The key's text as written: `yes:` or `1:` is the string the author meant.
        key = key_node.value
        if key in result:
            raise YamlInvalid(f"duplicate key '{key}'", key_node.start_mark)
        if id(key_node) in seen:
            raise _AliasFound()
        seen.add(id(key_node))
        result[key] = _build(value_node, seen, depth + 1)
    return result


def walk(root: Any, parts: Sequence[str | int], *, key: bool = False) -> tuple[Any, Any]:
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
    _, mark = walk(root, parts, key=key)
    return mark.line + 1, mark.column + 1


def scalar_text(root: Any, parts: Sequence[str | int]) -> str | None:
    """A scalar's text as written (`1.10`, not 1.1), or None where there is no scalar."""
    node, _ = walk(root, parts)
    return node.value if isinstance(node, yaml.ScalarNode) else None


def is_plain_scalar(root: Any, parts: Sequence[str | int]) -> bool:
    """Whether the value at `parts` is written unquoted (YAML typed it by its look)."""
    node, _ = walk(root, parts)
    return isinstance(node, yaml.ScalarNode) and not node.style
