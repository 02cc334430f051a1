"""onnxruntime's own log: names a pull request chose never become workflow commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_ci"

# A model whose unused initializer and failing node are named with a line break followed by a
# workflow command: onnxruntime's warning about the one and its error about the other quote them.
_HOSTILE = """
import sys
import numpy as np
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
shape = helper.make_tensor("s", TensorProto.INT64, [2], [3, 5])
unused = helper.make_tensor("w\\n::error title=pwned::initializer", TensorProto.FLOAT, [1], [1.0])
node = helper.make_node("Reshape", ["x", "s"], ["y"], name="r\\n::error title=pwned::node")
graph = helper.make_graph([node], "g", [x], [y], [shape, unused])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
data = model.SerializeToString()
if sys.argv[1] == "naive":
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
else:
    from mlops_ci import runtime

    session = runtime.session(data)
try:
    session.run(None, {"x": np.ones(4, np.float32)})  # 4 values cannot take the shape 3 x 5
except Exception:
    print("refused")
"""


@pytest.mark.parametrize("how", ["naive", "runtime"])
def test_a_models_names_never_reach_the_log_as_workflow_commands(how: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HOSTILE, how], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "refused", out.stderr
    commands = [line for line in out.stderr.splitlines() if line.startswith("::")]
    if how == "naive":  # the attack fires: onnxruntime's warning and error both print one
        assert len(commands) == 2, out.stderr
    else:
        assert commands == [], out.stderr


def test_every_session_is_made_by_runtime() -> None:
    """A session made elsewhere would log at onnxruntime's default level again."""
    made = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "runtime.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bInferenceSession\(|\bSessionOptions\(", line)
    ]
    assert made == []
