"""Property-based: no input makes `mlops-ci validate` print a traceback or exit outside 0/1/2."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_ci.cli import main

CORPUS = Path(__file__).parent / "corpus"
VALID = yaml.safe_load((CORPUS / "valid" / "model.yaml").read_text())


def _validate(tmp: Path, content: bytes) -> tuple[int, str]:
    manifest = tmp / "m" / "model.yaml"
    manifest.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", "--format", "json", "--root", str(tmp), str(manifest)])
    return code, out.getvalue() + err.getvalue()


def _workspace(tmp_path_factory: Any) -> Path:
    tmp = Path(tmp_path_factory.mktemp("fuzz"))
    (tmp / "m").mkdir()
    shutil.copy(CORPUS / "model.skops", tmp / "model.skops")
    shutil.copy(CORPUS / "eval.csv", tmp / "eval.csv")
    return tmp


def _assert_clean(code: int, output: str, allowed: set[int]) -> None:
    assert code in allowed, output
    assert "Traceback" not in output
    assert "internal error" not in output


_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

yaml_ish = st.text(
    alphabet=st.sampled_from(
        [*list("abc:-[]{}&*!|>'\"#%@`,? \n\t0123456789.~<="), "é", "\ufeff"]
    ),
    max_size=200,
)


@_SETTINGS
@given(text=yaml_ish)
def test_arbitrary_yaml_text_never_tracebacks(tmp_path_factory: Any, text: str) -> None:
    code, output = _validate(_workspace(tmp_path_factory), text.encode("utf-8", "surrogatepass"))
    _assert_clean(code, output, {1})


@_SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_traceback(tmp_path_factory: Any, data: bytes) -> None:
    code, output = _validate(_workspace(tmp_path_factory), data)
    _assert_clean(code, output, {1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_manifests(draw: Any) -> Any:
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return doc


@_SETTINGS
@given(doc=mutated_manifests())
def test_mutated_manifests_never_traceback(tmp_path_factory: Any, doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    code, output = _validate(_workspace(tmp_path_factory), text.encode())
    _assert_clean(code, output, {0, 1})
    if code == 1:
        report = json.loads(output[: output.rindex("}") + 1])
        errors = report["manifests"][0]["errors"]
        assert errors and all(e["message"] for e in errors)
