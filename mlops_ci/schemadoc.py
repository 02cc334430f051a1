"""Field tables for the docs, generated from the JSON Schemas so the two cannot drift apart.

`python -m mlops_ci.schemadoc` rewrites the tables between the markers in docs/*.md;
`--check` fails when a table is out of date (CI runs the test that does the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_ci.resources import MANIFEST_SCHEMA, POLICY_SCHEMA, load_schema

START, END = "<!-- fields:start -->", "<!-- fields:end -->"
DOCS = {"manifest.md": MANIFEST_SCHEMA, "policy.md": POLICY_SCHEMA}


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The node with a local `$ref` merged in (the node's own keywords win)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    if isinstance(kind, list):
        return " \\| ".join(kind)
    if kind == "array":
        items = node.get("items", {})
        inner = items.get("type") if isinstance(items.get("type"), str) else "item"
        return f"list of {inner}" if "$ref" not in items else "list"
    return str(kind)


def fields(schema: dict[str, Any]) -> Iterator[tuple[str, str, bool, str]]:
    """(dotted name, type, required, description) for every property, depth first."""

    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, str, bool, str]]:
        node = _resolve(schema, node)
        required = set(node.get("required", []))
        for name, raw in node.get("properties", {}).items():
            child = _resolve(schema, raw)
            dotted = f"{prefix}{name}"
            text = child.get("description") or child.get("title") or ""
            yield dotted, _type(child), name in required, text
            if child.get("type") == "object" or "properties" in child:
                yield from walk(child, dotted + ".")
            items = child.get("items")
            if child.get("type") == "array" and isinstance(items, dict):
                item = _resolve(schema, items)
                if "properties" in item:
                    yield from walk(item, dotted + "[].")

    yield from walk(schema, "")


def table(schema: dict[str, Any]) -> str:
    rows = ["| Field | Type | Required | Description |", "|---|---|---|---|"]
    for name, kind, required, text in fields(schema):
        cell = text.replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | {'yes' if required else ''} | {cell} |")
    return "\n".join(rows)


def render(doc: str, schema: dict[str, Any]) -> str:
    """The document with its field table replaced by a fresh one."""
    head, sep, rest = doc.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the document has no {START} … {END} markers")
    return f"{head}{START}\n{table(schema)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--check", action="store_true", help="fail when a table is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, schema_name in DOCS.items():
        path = args.docs / name
        doc = path.read_text(encoding="utf-8")
        fresh = render(doc, load_schema(schema_name))
        if fresh != doc:
            stale.append(str(path))
            if not args.check:
                path.write_text(fresh, encoding="utf-8")
    if args.check and stale:
        print(f"stale field tables: {', '.join(stale)} (run python -m mlops_ci.schemadoc)")
        return 1
    print(json.dumps({"updated" if not args.check else "stale": stale}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
