"""The framework table and the helpers behind it: pickle scanning, output alignment, opsets,
the signature check, and that no framework is imported before it is used."""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlops_ci import frameworks
from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.frameworks import _graph, _safe
from mlops_ci.manifest import Signature, TensorSpec


def test_every_framework_module_has_the_same_surface() -> None:
    for name in frameworks.FRAMEWORKS:
        module = frameworks.get(name)
        for function in ("load", "to_onnx", "predict"):
            assert callable(getattr(module, function)), f"{name}.{function}"
        assert module.HEAVY_IMPORTS


def test_unknown_framework_is_a_usage_error_listing_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown framework 'caffe'.*sklearn, xgboost"):
        frameworks.get("caffe")


def test_importing_the_table_and_the_convert_stage_loads_no_ml_framework() -> None:
    code = (
        "import sys, mlops_ci.frameworks, mlops_ci.convert, mlops_ci.data\n"
        "heavy = {'torch', 'sklearn', 'xgboost', 'lightgbm', 'onnxruntime', 'pandas', 'skl2onnx'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


# --- the pickle scanner -----------------------------------------------------------------------


def test_scanner_resolves_memoised_names_of_stack_global() -> None:
    # the second os.* global reuses the memoised module string through BINGET
    stream = pickle.dumps([os.system, os.getcwd], protocol=4)
    assert any(op.name == "BINGET" for op, _, _ in pickletools.genops(stream))
    names, problem = _safe.pickle_globals(stream)
    assert names == ["posix.system", "posix.getcwd"] and problem is None


def test_scanner_flags_a_global_whose_name_is_computed() -> None:
    # STACK_GLOBAL on values produced by a call: the scanner cannot name it, so it is refused
    stream = (
        b"\x80\x04cbuiltins\nstr\n(X\x02\x00\x00\x00ostR"
        b"cbuiltins\nstr\n(X\x06\x00\x00\x00systemtR\x93."
    )
    names, _ = _safe.pickle_globals(stream)
    assert "builtins.str" in names
    assert any(n.startswith("?") for n in names)


def test_scanner_reports_a_stream_that_breaks_off_after_a_call() -> None:
    stream = pickle.dumps(os.getcwd, protocol=2)[:-1] + b"\xff"
    names, problem = _safe.pickle_globals(stream)
    assert names == ["posix.getcwd"]
    assert problem is not None and "malformed" in problem


def test_torch_allow_list_accepts_tensors_and_rejects_callables() -> None:
    allowed = _safe.torch_allowed()
    assert allowed("torch._utils._rebuild_tensor_v2") and allowed("collections.OrderedDict")
    assert allowed("__torch__.MyModule")
    for name in ("posix.system", "builtins.eval", "functools.partial", "subprocess.Popen"):
        assert not allowed(name)


# --- outputs, opsets and the signature --------------------------------------------------------


def two_output_model(label_shape: list[int | None]) -> onnx.ModelProto:
    nodes = [
        helper.make_node("ArgMax", ["x"], ["output_label"], axis=1, keepdims=0),
        helper.make_node("Softmax", ["x"], ["output_probability"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor_value_info("output_label", TensorProto.INT64, label_shape),
            helper.make_tensor_value_info("output_probability", TensorProto.FLOAT, [None, 3]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


SIGNATURE = Signature(
    inputs=(TensorSpec("x", "float32", (-1, 3)),),
    outputs=(
        TensorSpec("label", "int64", (-1,), role="label"),
        TensorSpec("probabilities", "float32", (-1, 3), role="probabilities"),
    ),
)


def test_outputs_are_renamed_to_the_signature_and_wrong_shapes_fixed() -> None:
    model = two_output_model([1])  # onnxmltools' LightGBM declares the label as [1]
    notes = _graph.align_outputs(model, ("label", "probabilities"), SIGNATURE)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert any("output_label -> label" in n for n in notes)
    assert _graph.signature_problems(model, SIGNATURE) == []
    onnx.checker.check_model(model, full_check=True)


def test_outputs_matched_by_role_not_position_and_extras_dropped() -> None:
    model = two_output_model([None])
    only_probabilities = Signature(SIGNATURE.inputs, SIGNATURE.outputs[1:])
    notes = _graph.align_outputs(model, ("label", "probabilities"), only_probabilities)
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert any("dropped" in n and "output_label" in n for n in notes)


def test_signature_check_names_input_dtype_and_shape_differences() -> None:
    model = two_output_model([None])
    _graph.align_outputs(model, ("label", "probabilities"), SIGNATURE)
    wrong = Signature(
        inputs=(TensorSpec("x", "float64", (-1, 4)),),
        outputs=SIGNATURE.outputs,
    )
    assert _graph.signature_problems(model, wrong) == [
        "input 'x': the signature says dtype float64, the ONNX model has float32",
        "input 'x': the signature says shape [-1, 4], the ONNX model has [?, 3]",
    ]


def test_opset_is_raised_to_the_requested_version_and_parity_holds() -> None:
    import onnxruntime as ort

    model = two_output_model([None])
    before = ort.InferenceSession(model.SerializeToString()).run(
        None, {"x": np.eye(3, dtype=np.float32)}
    )
    notes = _graph.set_opset(model, 17)
    assert notes == ("default-domain opset raised from 13 to 17",)
    onnx.checker.check_model(model, full_check=True)
    after = ort.InferenceSession(model.SerializeToString()).run(
        None, {"x": np.eye(3, dtype=np.float32)}
    )
    np.testing.assert_array_equal(before[1], after[1])


def test_a_signature_output_without_any_match_is_refused() -> None:
    model = two_output_model([None])
    three = Signature(
        SIGNATURE.inputs,
        (*SIGNATURE.outputs, TensorSpec("extra", "float32", (-1, 1), role="other")),
    )
    with pytest.raises(CheckFailed, match="signature output 'extra'"):
        _graph.align_outputs(model, ("label", "probabilities"), three)
