"""What does conversion cost, and does the ONNX model it writes run as fast as it can?

Per example model, side by side in one process:
- conversion wall time (load + convert + check + parity; a second, warm run) and its parts;
- import cost of each framework's heavy modules, each measured in a fresh interpreter;
- single-row p50 of the ONNX model against the native model, as a ratio (native is timed through
  `frameworks.<name>.predict`, i.e. with the input marshalling mlops-ci does, such as building a
  pandas DataFrame for column-named scikit-learn pipelines);
- single-row p50 of the ONNX model against the per-call floor of onnxruntime: an Identity model
  with one 1x4 float input. Goal: every tabular model within 2x of the floor. A model with many
  inputs is also set against an Identity model with its own inputs ("inputs floor"), because
  onnxruntime charges per input fed before any graph work.

Calls are interleaved in pairs (ONNX, floor, ONNX, floor, ...; then ONNX, native, ...) so drift
and noise hit both sides of each ratio alike.

    .venv/bin/python bench/convert.py [--repo examples/model-repo] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlops_ci import convert, data, frameworks, manifest, trust
from mlops_ci.report import terminal

TABULAR = {"sklearn", "xgboost", "lightgbm"}


def session(model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def identity_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def inputs_floor(model: onnx.ModelProto) -> bytes:
    """The floor for a model's own inputs: all of them fed, one passed through by Identity.

    onnxruntime's Python binding costs per input fed, so an 11-column signature has a higher
    floor than the 1x4 one before the converted graph does any work."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    first = inputs[0]
    output = helper.make_tensor_value_info("y", first.type.tensor_type.elem_type, None)
    graph = helper.make_graph(
        [helper.make_node("Identity", [first.name], ["y"])], "inputs_floor", inputs, [output]
    )
    floor = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(floor.SerializeToString())


def import_cost(module: str, heavy: tuple[str, ...]) -> float:
    """Seconds to import a framework module and its heavy imports, in a fresh interpreter."""
    code = (
        "import time, importlib\n"
        "import mlops_ci.frameworks, numpy\n"
        "t = time.perf_counter()\n"
        f"importlib.import_module({module!r})\n"
        f"for m in {heavy!r}: importlib.import_module(m)\n"
        "print(time.perf_counter() - t)\n"
    )
    runs = []
    for _ in range(3):
        command = [sys.executable, "-c", code]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return min(runs)


def interleaved_p50(calls: dict[str, Callable[[], Any]], n: int) -> dict[str, float]:
    """p50 seconds per callable, calling them in turn n times (after a warm-up)."""
    for f in calls.values():
        for _ in range(20):
            f()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    clock = time.perf_counter_ns
    for _ in range(n):
        for name, f in calls.items():
            start = clock()
            f()
            samples[name].append(clock() - start)
    return {k: statistics.median(v) / 1e9 for k, v in samples.items()}


def bench_model(path: Path, calls: int, floor: Any) -> dict[str, Any]:
    m = manifest.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        first = convert.run(m, Path(tmp) / "cold")
        cold = time.perf_counter() - started
        started = time.perf_counter()
        result = convert.run(m, Path(tmp) / "warm")
        warm = time.perf_counter() - started
        if not result.passed or result.onnx_path is None:
            raise SystemExit(f"{m.name}: conversion failed: {terminal.conversion(result)}")
        onnx_bytes = result.onnx_path.read_bytes()

    framework = frameworks.get(m.framework)
    native = framework.load(trust.artifact(m))
    signature = m.signature
    rows = convert.parity_data(m, signature)
    assert rows.table is not None
    one, target, signature = rows.table.take(1), rows.target, rows.signature
    feeds = data.feeds(one, signature, target=target)
    native_batch = frameworks.Batch(
        data.feeds(one, convert._widened(signature), target=target),
        data.input_columns(signature, list(one.columns), target=target),
    )
    model_session = session(onnx_bytes)
    floor_feed = {"x": np.ones((1, 4), dtype=np.float32)}
    own_floor = session(inputs_floor(onnx.load_from_string(onnx_bytes)))
    # Two pairs, each interleaved: a slow native call between two ONNX calls would evict
    # caches and inflate the floor, which is a few microseconds.
    p50 = interleaved_p50(
        {
            "onnx": lambda: model_session.run(None, feeds),
            "floor": lambda: floor.run(None, floor_feed),
            "inputs_floor": lambda: own_floor.run(None, feeds),
        },
        calls,
    )
    p50_native = interleaved_p50(
        {
            "onnx": lambda: model_session.run(None, feeds),
            "native": lambda: framework.predict(native, native_batch, signature),
        },
        max(200, calls // 10),
    )
    proto = onnx.load_from_string(onnx_bytes)
    return {
        "name": m.name,
        "framework": m.framework,
        "cold_s": cold,
        "warm_s": warm,
        "to_onnx_s": result.timings["convert"],
        "parity_s": result.timings["parity"],
        "first_passed": first.passed,
        "onnx_us": p50["onnx"] * 1e6,
        "native_us": p50_native["native"] * 1e6,
        "onnx_beside_native_us": p50_native["onnx"] * 1e6,
        "floor_us": p50["floor"] * 1e6,
        "inputs_floor_us": p50["inputs_floor"] * 1e6,
        "nodes": ", ".join(n.op_type for n in proto.graph.node),
        "inputs": len(signature.inputs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("examples/model-repo"))
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    print("import cost of each framework module (fresh interpreter, best of 3)")
    for name, module in frameworks.FRAMEWORKS.items():
        heavy = frameworks.get(name).HEAVY_IMPORTS
        print(f"  {name:<9} {import_cost(module, heavy) * 1000:8.0f} ms   ({', '.join(heavy)})")
    print()

    floor = session(identity_model())
    rows = [bench_model(p, args.calls, floor) for p in manifest.find_manifests(args.repo)]
    header = (
        f"{'model':<22}{'framework':<10}{'convert cold':>13}{'warm':>8}{'to_onnx':>9}"
        f"{'ONNX p50':>10}{'native p50':>12}{'native/ONNX':>12}{'floor p50':>11}{'ONNX/floor':>11}"
        f"{'inputs floor':>13}{'ONNX/inputs':>12}"
    )
    print(header)
    print("-" * len(header))
    failures = []
    for r in rows:
        ratio_native = r["native_us"] / r["onnx_beside_native_us"]
        ratio_floor = r["onnx_us"] / r["floor_us"]
        ratio_inputs = r["onnx_us"] / r["inputs_floor_us"]
        print(
            f"{r['name']:<22}{r['framework']:<10}{r['cold_s']:>12.2f}s{r['warm_s']:>7.2f}s"
            f"{r['to_onnx_s']:>8.3f}s{r['onnx_us']:>8.1f}us{r['native_us']:>10.1f}us"
            f"{ratio_native:>11.1f}x{r['floor_us']:>9.1f}us{ratio_floor:>10.2f}x"
            f"{r['inputs_floor_us']:>11.1f}us{ratio_inputs:>11.2f}x"
        )
        if r["framework"] in TABULAR and min(ratio_floor, ratio_inputs) > 2.0:
            failures.append(f"{r['name']}: {ratio_inputs:.2f}x its inputs' floor ({r['nodes']})")
    print()
    for r in rows:
        print(f"  {r['name']}: {r['inputs']} input(s); nodes: {r['nodes']}")
    print()
    if failures:
        print("tabular models above 2x the onnxruntime floor:")
        for f in failures:
            print("  " + f)
        return 1
    print(
        "every tabular model is within 2x of the onnxruntime per-call floor for its inputs "
        "(the 1x4 floor for single-input models)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
