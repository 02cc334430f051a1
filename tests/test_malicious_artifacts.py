"""Malicious model artifacts: no payload ever runs, and the refusal says what was found.

Every payload would create a marker file. Control tests prove that each kind of payload is live
(loading it the unsafe way, in a child process, does create the marker); the refusal tests then
assert that mlops-ci's loaders refuse it with a clear message and the marker never appears.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlops_ci import frameworks
from mlops_ci.data import sha256_file
from mlops_ci.errors import CheckFailed


class Payload:
    """Pickles to `func(*args)`: what an attacker's __reduce__ does."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def os_system(marker: Path) -> Payload:
    return Payload(os.system, f"touch {marker}")


def builtin_eval(marker: Path) -> Payload:
    return Payload(eval, f"open({str(marker)!r}, 'w').close()")


def subprocess_call(marker: Path) -> Payload:
    return Payload(subprocess.call, ["touch", str(marker)])


def partial_gadget(marker: Path) -> Payload:
    # functools.partial hides the dangerous callable one level down
    return Payload(functools.partial(os.system, f"touch {marker}"))


def getattr_import_gadget(marker: Path) -> bytes:
    """getattr(__import__('os'), 'system')('touch marker'), hand-written in protocol 0."""
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch "
        + str(marker).encode()
        + b"'\ntR."
    )


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "os.system": lambda m: pickle.dumps(os_system(m), protocol=4),
    "eval": lambda m: pickle.dumps(builtin_eval(m), protocol=2),
    "subprocess": lambda m: pickle.dumps(subprocess_call(m), protocol=4),
    "functools.partial": lambda m: pickle.dumps(partial_gadget(m), protocol=4),
    "getattr/__import__": getattr_import_gadget,
    "os.system protocol 0": lambda m: pickle.dumps(os_system(m), protocol=0),
}


def run_unsafely(code: str) -> None:
    """Run `code` in a child process: how a naive loader would treat the file."""
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)


def load(framework: str, path: Path, fmt: str, trusted: tuple[str, ...] = ()) -> Any:
    artifact = frameworks.Artifact(path, sha256_file(path), fmt, trusted)
    return frameworks.get(framework).load(artifact)


# --- the payloads are live ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOADS)
def test_control_each_pickle_payload_runs_when_loaded_with_plain_pickle(
    kind: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(PAYLOADS[kind](marker))
    run_unsafely(f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())")
    assert marker.exists(), f"the {kind} payload is not live, so the refusal tests prove nothing"


# --- pickles under a model's name ----------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize(
    ("framework", "suffix", "fmt"),
    [
        ("sklearn", ".skops", "skops"),
        ("pytorch", ".pt", "torchscript"),
        ("pytorch", ".pt2", "torch-export"),
    ],
)
def test_pickle_renamed_as_a_model_is_refused_without_running(
    kind: str, framework: str, suffix: str, fmt: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(CheckFailed) as info:
        load(framework, path, fmt)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message
    assert "Pickle files are refused" in message and "skops" in message


def test_joblib_file_renamed_skops_is_refused(tmp_path: Path) -> None:
    import joblib

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    joblib.dump(os_system(marker), path)
    with pytest.raises(CheckFailed, match="the file is a pickle stream"):
        load("sklearn", path, "skops")
    assert not marker.exists()


# --- skops with types that are not trusted -------------------------------------------------------


class MarkerOnLoad:
    """A class whose __setstate__ runs code: skops calls it when it rebuilds the object."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def test_control_untrusted_skops_type_runs_code_when_trusted_blindly(tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    sio.dump(MarkerOnLoad(str(marker)), path)
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.exists()


def test_skops_file_with_an_untrusted_type_is_refused_with_the_fix(tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    sio.dump(MarkerOnLoad(str(marker)), path)
    with pytest.raises(CheckFailed) as info:
        load("sklearn", path, "skops")
    assert not marker.exists()
    message = str(info.value)
    assert f"{MarkerOnLoad.__module__}.MarkerOnLoad" in message
    assert "spec.artifact.trusted_types" in message


@pytest.mark.parametrize("func", [os.system, eval, subprocess.call])
def test_skops_transformer_holding_a_dangerous_function_is_refused(
    func: Callable[..., Any], tmp_path: Path
) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=func), path)
    with pytest.raises(CheckFailed, match="not trusted") as info:
        load("sklearn", path, "skops")
    assert func.__name__ in str(info.value)


def test_reviewed_trusted_types_from_the_manifest_are_honoured(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=sorted), path)
    model = load("sklearn", path, "skops", trusted=("builtins.sorted",))
    assert model.func is sorted


# --- torch archives ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A genuine .pt2 and TorchScript archive of a tiny model, to tamper with."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    program = torch.export.export(
        model, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(folder / "model.pt2"))
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), str(folder / "model.pt"))
    return {"pt2": folder / "model.pt2", "pt": folder / "model.pt"}


def test_genuine_archives_whose_weights_start_like_a_pickle_still_load(tmp_path: Path) -> None:
    import numpy as np
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():  # first weight byte 0x80: the pickle PROTO opcode
        model[0].weight[0, 0] = float(np.frombuffer(b"\x80\x00\x80\x3f", dtype=np.float32)[0])
    program = torch.export.export(model, (torch.zeros(2, 4),))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), str(tmp_path / "model.pt"))
    weights = [
        zipfile.ZipFile(tmp_path / f).read(n)
        for f in ("model.pt2", "model.pt")
        for n in zipfile.ZipFile(tmp_path / f).namelist()
        if n.endswith(("weight_0", "data/0"))
    ]
    assert weights and all(w[:1] == b"\x80" for w in weights)
    assert load("pytorch", tmp_path / "model.pt2", "torch-export") is not None
    assert load("pytorch", tmp_path / "model.pt", "torchscript") is not None


def rewrite_zip(
    source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], add: dict[str, bytes]
) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
        for name, data in add.items():
            dst.writestr(name, data)
    return target


def pt2_with_pickled_weight(source: Path, target: Path, payload: bytes) -> Path:
    """The weight file replaced by a pickle, and the config saying it is pickled."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return payload
        return data

    return rewrite_zip(source, target, edit, {})


def test_control_pt2_with_a_pickled_weight_runs_code_in_torch_export_load(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(
        torch_archives["pt2"], tmp_path / "model.pt2", pickle.dumps(os_system(marker), protocol=2)
    )
    run_unsafely(f"import torch; torch.export.load({str(evil)!r})")
    assert marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pt2_with_a_pickled_weight_payload_is_refused(
    kind: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(
        torch_archives["pt2"], tmp_path / "model.pt2", PAYLOADS[kind](marker)
    )
    with pytest.raises(CheckFailed, match=r"refusing to load: member .*weight_0") as info:
        load("pytorch", evil, "torch-export")
    assert not marker.exists()
    assert "allow-list" in str(info.value) or "bare pickle" in str(info.value)


def test_pt2_with_a_payload_inside_its_nested_torch_save_file_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("sample_inputs/model.pt"):
            return data
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as inner, zipfile.ZipFile(buffer, "w") as out:
            for info in inner.infolist():
                blob = inner.read(info)
                if info.filename.endswith("data.pkl"):
                    blob = pickle.dumps(partial_gadget(marker), protocol=2)
                out.writestr(info.filename, blob)
        return buffer.getvalue()

    evil = rewrite_zip(torch_archives["pt2"], tmp_path / "model.pt2", edit, {})
    with pytest.raises(CheckFailed) as info:
        load("pytorch", evil, "torch-export")
    assert not marker.exists()
    assert "functools.partial" in str(info.value) and "posix.system" in str(info.value)


def test_pt2_with_a_pickled_custom_object_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    prefix = zipfile.ZipFile(torch_archives["pt2"]).namelist()[0].split("/")[0]
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda _n, d: d,
        {f"{prefix}/data/constants/opaque_obj_0": pickle.dumps(os_system(marker))},
    )
    with pytest.raises(CheckFailed, match="pickled custom object"):
        load("pytorch", evil, "torch-export")
    assert not marker.exists()


def test_pt2_graph_calling_a_python_function_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if "/models/" in name and name.endswith(".json"):
            return data.replace(b'"torch.ops.aten.linear.default"', b'"torch.os.system"')
        return data

    evil = rewrite_zip(torch_archives["pt2"], tmp_path / "model.pt2", edit, {})
    assert b"torch.os.system" in zipfile.ZipFile(evil).read(
        next(n for n in zipfile.ZipFile(evil).namelist() if "/models/" in n)
    )
    with pytest.raises(CheckFailed, match=r"calls 'torch\.os\.system'"):
        load("pytorch", evil, "torch-export")


def test_control_torchscript_code_can_write_files(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = scripted_file_writer(marker, tmp_path / "model.pt")
    torch.jit.load(str(path))(torch.zeros(2))
    assert marker.exists()


def scripted_file_writer(marker: Path, path: Path) -> Path:
    import torch

    source = (
        "import torch\n"
        "class Writer(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        f"        t = torch.from_file({str(marker)!r}, True, 4)\n"
        "        return x + t.sum()\n"
    )
    namespace: dict[str, Any] = {}
    module_file = path.with_suffix(".py")
    module_file.write_text(source)  # TorchScript compiles from a real source file
    exec(compile(source, str(module_file), "exec"), namespace)
    torch.jit.save(torch.jit.script(namespace["Writer"]()), str(path))
    return path


def test_torchscript_code_that_touches_files_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = scripted_file_writer(marker, tmp_path / "model.pt")
    with pytest.raises(CheckFailed, match="uses from_file"):
        load("pytorch", path, "torchscript")
    assert not marker.exists()


def test_torchscript_with_a_payload_in_data_pkl_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    def edit(name: str, data: bytes) -> bytes:
        return (
            pickle.dumps(subprocess_call(marker), protocol=2)
            if name.endswith("/data.pkl")
            else data
        )

    evil = rewrite_zip(torch_archives["pt"], tmp_path / "model.pt", edit, {})
    # protocol 2 spells subprocess.call as commands.call (Python 2 names)
    with pytest.raises(CheckFailed, match=r"would import (subprocess|commands)\.call"):
        load("pytorch", evil, "torchscript")
    assert not marker.exists()


def test_genuine_torch_archives_still_load(torch_archives: dict[str, Path]) -> None:
    import torch

    program = load("pytorch", torch_archives["pt2"], "torch-export")
    script = load("pytorch", torch_archives["pt"], "torchscript")
    x = torch.ones(3, 4)
    assert torch.allclose(program.module()(x), script(x))


# --- ONNX -------------------------------------------------------------------------------------


def test_onnx_model_with_external_data_outside_the_file_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])],
        [weight],
    )
    model = helper.make_model(graph)
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="../../etc/passwd")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(CheckFailed, match="external files"):
        load("onnx", path, "onnx")


def test_digest_is_verified_before_the_loader_reads_a_byte(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    path.write_bytes(PAYLOADS["os.system"](marker))
    artifact = frameworks.Artifact(path, "0" * 64, "skops")
    with pytest.raises(CheckFailed, match="digest mismatch"):
        frameworks.get("sklearn").load(artifact)
    assert not marker.exists()
