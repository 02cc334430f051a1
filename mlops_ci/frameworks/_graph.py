"""ONNX graph edits shared by the converters: outputs named as the signature says, the opset the
manifest asks for, and the comparison of a graph's interface with the signature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnx
from onnx import TensorProto

from mlops_ci.errors import CheckFailed

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature, TensorSpec

ELEM_TYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
    "string": TensorProto.STRING,
}
DTYPE_NAMES = {v: k for k, v in ELEM_TYPES.items()}


def dtype_name(elem_type: int) -> str:
    return DTYPE_NAMES.get(elem_type) or TensorProto.DataType.Name(elem_type).lower()


def align_outputs(
    model: onnx.ModelProto, roles: Sequence[str | None], signature: Signature
) -> tuple[str, ...]:
    """Rename (and keep only) the graph outputs the signature lists, in its order.

    Each signature output takes the converter's output with the same role, else the one in the
    same position. Declared shapes are set from the signature, because some converters declare
    wrong ones (onnxmltools' LightGBM label as [1]). Returns notes on what was changed.
    """
    graph = model.graph
    produced = list(graph.output)
    roles = list(roles) + [None] * (len(produced) - len(roles))
    chosen: list[onnx.ValueInfoProto] = []
    taken: set[int] = set()
    for position, spec in enumerate(signature.outputs):
        index = next(
            (i for i, r in enumerate(roles) if spec.role and r == spec.role and i not in taken),
            position if position < len(produced) and position not in taken else None,
        )
        if index is None:
            names = ", ".join(o.name for o in produced)
            raise CheckFailed(
                f"signature output {spec.name!r} (role {spec.role or 'other'}) has no match among "
                f"the converted model's outputs ({names})"
            )
        taken.add(index)
        value = onnx.ValueInfoProto()
        value.CopyFrom(produced[index])  # graph.output is cleared below
        chosen.append(value)
    notes: list[str] = []
    dropped = [o.name for i, o in enumerate(produced) if i not in taken]
    if dropped:
        notes.append(f"dropped converter outputs not in the signature: {', '.join(dropped)}")
    renames = {o.name: spec.name for o, spec in zip(chosen, signature.outputs, strict=True)}
    renamed = {old: new for old, new in renames.items() if old != new}
    if renamed:
        _rename_values(graph, renamed)
        notes.append("renamed outputs " + ", ".join(f"{a} -> {b}" for a, b in renamed.items()))
    del graph.output[:]
    for value, spec in zip(chosen, signature.outputs, strict=True):
        value.name = spec.name
        if any("shape" in p for p in _compare("output", value, spec)):
            _set_shape(value, spec.shape)
            notes.append(f"declared shape of output {spec.name!r} set to {shape_text(spec.shape)}")
        graph.output.append(value)
    return tuple(notes)


def _rename_values(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    clash = set(renames.values()) & (
        {i.name for i in graph.input} | {i.name for i in graph.initializer}
    )
    if clash:
        raise CheckFailed(f"output name(s) {', '.join(sorted(clash))} already name an input")
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in graph.value_info:
        value.name = renames.get(value.name, value.name)


def _set_shape(value: onnx.ValueInfoProto, shape: Sequence[int]) -> None:
    tensor = value.type.tensor_type
    tensor.shape.Clear()
    for i, dim in enumerate(shape):
        d = tensor.shape.dim.add()
        if dim >= 0:
            d.dim_value = dim
        else:
            d.dim_param = "N" if i == 0 else f"d{i}"


def set_opset(model: onnx.ModelProto, opset: int) -> tuple[str, ...]:
    """Bring the default-domain opset up to the requested one, in place; notes say what happened.

    Converters emit the lowest opset they need (skl2onnx) or stop at an older one (onnxmltools).
    onnx's version converter adapts the operators; where it cannot, the declared version is
    raised only when every default-domain operator has the same definition at both versions.
    Parity then runs on the final graph, so any change of meaning would show.
    """
    from onnx import version_converter

    current = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    old = current.version if current is not None else None
    if old == opset:
        return ()
    if old is not None and old > opset:
        return (f"the converter emitted opset {old}, above the requested {opset}; kept {old}",)
    if old is None:
        model.opset_import.append(onnx.helper.make_opsetid("", opset))
    else:
        try:
            converted = version_converter.convert_version(model, opset)
        except Exception as exc:  # the C++ converter raises bare RuntimeErrors
            reason = str(exc).strip().splitlines()[-1][:200] if str(exc) else type(exc).__name__
            converted = None
        if converted is not None:
            model.CopyFrom(converted)
        else:
            for node in model.graph.node:
                if node.domain not in ("", "ai.onnx"):
                    continue
                before = onnx.defs.get_schema(node.op_type, old, "").since_version
                after = onnx.defs.get_schema(node.op_type, opset, "").since_version
                if before != after:
                    return (
                        f"kept opset {old}: the version converter failed ({reason}) and "
                        f"operator {node.op_type} changed between opsets {old} and {opset}",
                    )
            assert current is not None
            current.version = opset
    model.ir_version = max(
        model.ir_version,
        onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True),
    )
    return (f"default-domain opset raised from {old} to {opset}",) if old else ()


def shape_text(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _onnx_shape(value: onnx.ValueInfoProto) -> list[int | str] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]


def _compare(kind: str, value: onnx.ValueInfoProto, spec: TensorSpec) -> list[str]:
    problems = []
    where = f"{kind} {spec.name!r}"
    if not value.type.HasField("tensor_type"):
        return [f"{where} is not a tensor in the ONNX model"]
    elem = value.type.tensor_type.elem_type
    if elem != ELEM_TYPES[spec.dtype]:
        problems.append(
            f"{where}: the signature says dtype {spec.dtype}, the ONNX model has {dtype_name(elem)}"
        )
    shape = _onnx_shape(value)
    if shape is None:
        return problems
    mismatch = len(shape) != len(spec.shape) or any(
        (want >= 0 and got != want) or (want < 0 and isinstance(got, int) and got > 0)
        for want, got in zip(spec.shape, shape, strict=False)
    )
    if mismatch:
        problems.append(
            f"{where}: the signature says shape {shape_text(spec.shape)}, the ONNX model has "
            f"{shape_text(shape)}"
        )
    return problems


def signature_problems(model: onnx.ModelProto, signature: Signature) -> list[str]:
    """Every difference between the graph's interface and the signature: names, dtypes, shapes."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    problems: list[str] = []
    for kind, values, specs in (
        ("input", inputs, signature.inputs),
        ("output", list(graph.output), signature.outputs),
    ):
        names = [v.name for v in values]
        wanted = [s.name for s in specs]
        if names != wanted:
            problems.append(
                f"{kind}s: the signature lists {', '.join(wanted)}; the ONNX model has "
                f"{', '.join(names) or 'none'}"
            )
        by_name = {v.name: v for v in values}
        for spec in specs:
            if spec.name in by_name:
                problems.extend(_compare(kind, by_name[spec.name], spec))
    return problems


def signature_of(model: onnx.ModelProto) -> dict[str, list[dict[str, object]]]:
    """The graph's interface in manifest form (for a passed-through ONNX model without one)."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def spec(v: onnx.ValueInfoProto) -> dict[str, object]:
        shape = _onnx_shape(v) or []
        return {
            "name": v.name,
            "dtype": dtype_name(v.type.tensor_type.elem_type),
            "shape": [d if isinstance(d, int) and d > 0 else -1 for d in shape],
        }

    return {
        "inputs": [spec(v) for v in graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in graph.output],
    }
