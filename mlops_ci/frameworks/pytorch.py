"""PyTorch: torch.export archives (.pt2) and TorchScript, scanned before loading, exported by
torch.onnx with a dynamic batch dimension (the dynamo exporter first, TorchScript's as fallback)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.digest import verify_digest
from mlops_ci.dtypes import NUMPY_DTYPES
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _safe

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("torch", "onnxscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters log and warn at length about their internals (opset fallbacks, deprecations);
    # what matters (which exporter ran, and why) goes into the notes instead.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    # torch.export.load calls torch.load(weights_only=False) internally; this variable makes
    # every such call use torch's allow-list unpickler, a second wall behind our own scan.
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def load(artifact: Artifact) -> Any:
    """An ExportedProgram (.pt2) or a ScriptModule, after the digest check and archive scan."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    if artifact.format == "torch-export":
        _safe.check_torch_export(artifact.path)
        import torch

        try:
            with _weights_only():
                return torch.export.load(str(artifact.path))
        except Exception as exc:
            raise CheckFailed(
                f"torch.export.load failed: {type(exc).__name__}: {exc}", path=artifact.path
            ) from exc
    if artifact.format == "torchscript":
        _safe.check_torchscript(artifact.path)
        import torch

        try:
            with _weights_only():
                return torch.jit.load(str(artifact.path), map_location="cpu").eval()
        except Exception as exc:
            raise CheckFailed(
                f"torch.jit.load failed: {type(exc).__name__}: {exc}", path=artifact.path
            ) from exc
    raise CheckFailed(
        f"PyTorch models are read from torch.export (.pt2) or TorchScript archives, not "
        f"{artifact.format}; {_safe.PICKLE_FIX}",
        path=artifact.path,
    )


_MODULES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _callable(model: Any) -> Any:
    """A callable module: an ExportedProgram's module is built once and cached."""
    import torch

    if not isinstance(model, torch.export.ExportedProgram):
        return model
    if model not in _MODULES:
        _MODULES[model] = model.module()
    return _MODULES[model]


def _examples(signature: Signature) -> tuple[Any, ...]:
    import torch

    tensors = []
    for spec in signature.inputs:
        inner = spec.shape[1:]
        if any(d < 0 for d in inner):
            raise CheckFailed(
                f"input {spec.name!r}: only the batch dimension may be dynamic for PyTorch "
                f"export (shape {list(spec.shape)})"
            )
        dtype = getattr(torch, "bool" if spec.dtype == "bool" else spec.dtype, None)
        if dtype is None or spec.dtype == "string":
            raise CheckFailed(f"input {spec.name!r}: PyTorch has no {spec.dtype} tensors")
        tensors.append(torch.zeros((2, *inner), dtype=dtype))
    return tuple(tensors)


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    """torch.onnx.export, dynamo first; the TorchScript exporter when dynamo cannot export."""
    import onnx
    import torch

    reserved = {"dynamo", "external_data", "opset_version", "input_names", "output_names", "f"}
    clash = sorted(reserved & set(options))
    if clash:
        raise CheckFailed(
            f"conversion.options may not set {', '.join(clash)}: mlops-ci sets them from the "
            "manifest (opset, signature names) and always embeds the weights"
        )
    examples = _examples(signature)
    input_names = [s.name for s in signature.inputs]
    output_names = [s.name for s in signature.outputs]
    dynamic_axes = {name: {0: "N"} for name in input_names + output_names}
    common: dict[str, Any] = {
        "input_names": input_names,
        "output_names": output_names,
        "opset_version": opset,
        "dynamic_axes": dynamic_axes,
        **options,
    }
    failure = ""
    try:
        with _quiet():
            program = torch.onnx.export(
                model, examples, dynamo=True, external_data=False, verbose=False, **common
            )
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise RuntimeError("torch.onnx.export returned no program")
        proto = program.model_proto
        return Exported(
            proto, f"torch.onnx dynamo (torch {torch.__version__})", notes=_static_batch(proto)
        )
    except Exception as exc:
        failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        first = exc
    # the TorchScript-based exporter takes modules, not ExportedPrograms
    module = _callable(model)
    buffer = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(module, examples, buffer, dynamo=False, **common)  # type: ignore[arg-type]
    except Exception as exc:
        raise CheckFailed(
            f"torch.onnx could not export the model: dynamo exporter: {failure}; TorchScript "
            f"exporter: {type(exc).__name__}: {exc}"
        ) from first
    return Exported(
        onnx.load_from_string(buffer.getvalue()),
        f"torch.onnx TorchScript exporter (torch {torch.__version__})",
        notes=(f"the dynamo exporter failed ({failure}); used the TorchScript exporter",),
    )


def _static_batch(model: Any) -> tuple[str, ...]:
    """A hint when the archive fixed the batch size, which the signature check will then report."""
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    if dims and dims[0].HasField("dim_value"):
        return (
            f"the model has a fixed batch size of {dims[0].dim_value}: export it with "
            "torch.export.export(..., dynamic_shapes=({0: torch.export.Dim('batch')},))",
        )
    return ()


def feature_names(model: Any) -> None:
    """A PyTorch module takes tensors: it records no column names."""
    return None


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    """The module's outputs on the batch, in signature order, keyed by output name."""
    import torch

    module = _callable(model)
    tensors = [
        torch.from_numpy(np.ascontiguousarray(batch.feeds[s.name], dtype=NUMPY_DTYPES[s.dtype]))
        for s in signature.inputs
    ]
    with torch.no_grad():
        result = module(*tensors)
    outputs = result if isinstance(result, tuple | list) else (result,)
    return {
        spec.name: value.detach().cpu().numpy()
        for spec, value in zip(signature.outputs, outputs, strict=False)
    }
