"""Triton's `config.pbtxt`: built from a manifest's signature as Triton's own `ModelConfig`
protobuf, checked for what Triton's parser accepts but its loader refuses, and read back.

`tritonclient` ships the message as `tritonclient/grpc/model_config_pb2.py`; importing that module
the normal way pulls in grpcio, so it is loaded by path and needs only `protobuf`.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mlops_ci.errors import CheckFailed, UsageError

PLATFORM = "onnxruntime_onnx"
#: Used when the manifest's `spec.serving.max_batch_size` is absent and the signature batches.
DEFAULT_MAX_BATCH_SIZE = 64

_TYPES = {
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
    "string": "TYPE_STRING",
}


#: What a missing or broken `deploy` extra tells the user (exit 2).
MISSING = (
    "writing or reading a registry's config.pbtxt needs Triton's ModelConfig "
    "(tritonclient and protobuf): pip install 'mlops-ci[deploy]'"
)


@functools.cache
def model_config_pb2() -> ModuleType:
    """Triton's `model_config_pb2` module, loaded from tritonclient's file without grpcio."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(MISSING)
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    name = "mlops_ci._triton_model_config_pb2"
    file_spec = importlib.util.spec_from_file_location(name, path)
    if file_spec is None or file_spec.loader is None or not path.is_file():
        raise UsageError(f"{path}: Triton's model_config_pb2.py is missing from tritonclient")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module
    try:
        file_spec.loader.exec_module(module)
    except Exception as exc:  # no protobuf, or one that tritonclient's generated code refuses
        del sys.modules[name]
        raise UsageError(f"{MISSING} ({type(exc).__name__}: {exc})") from exc
    return module


@dataclass(frozen=True)
class Tensor:
    """One signature entry, as the manifest states it (shape includes the batch dimension)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _batching(tensors: Sequence[Tensor]) -> bool:
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def build(
    name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    version: int,
    serving: dict[str, Any] | None = None,
) -> Any:
    """The ModelConfig message for one model serving `version`; CheckFailed when the signature
    cannot be served as stated."""
    pb = model_config_pb2()
    serving = serving or {}
    _check_ranges(name, inputs, outputs, serving)
    batching = _batching([*inputs, *outputs])
    requested = serving.get("max_batch_size")
    default = DEFAULT_MAX_BATCH_SIZE if batching else 0
    max_batch = default if requested is None else int(requested)
    cfg = pb.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch)
    cfg.version_policy.specific.versions.append(version)
    for side, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            if t.dtype not in _TYPES:
                raise CheckFailed(f"{name}: {side} {t.name}: dtype {t.dtype} has no Triton type")
            entry = getattr(cfg, side).add()
            entry.name = t.name
            entry.data_type = pb.DataType.Value(_TYPES[t.dtype])
            dims = list(t.shape[1:] if max_batch > 0 else t.shape)
            if not dims:
                # A batch-only tensor ([-1]): Triton wants dims [1], reshaped to a scalar.
                entry.dims.append(1)
                entry.reshape.SetInParent()
            else:
                entry.dims.extend(dims)
    if serving.get("dynamic_batching") and max_batch > 0:
        cfg.dynamic_batching.SetInParent()
    if serving.get("instances"):
        group = cfg.instance_group.add()
        group.count = int(serving["instances"])
        group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
    check(cfg, inputs, outputs)
    return cfg


#: ModelConfig's fields are int32 (max_batch_size, an instance group's count) and int64 (dims):
#: a manifest's integers have no upper bound, and protobuf refuses a value past its field's.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _check_ranges(
    name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], serving: dict[str, Any]
) -> None:
    problems = [
        f"spec.serving.{key} {serving[key]} is more than Triton's {INT32_MAX}"
        for key in ("max_batch_size", "instances")
        if isinstance(serving.get(key), int) and serving[key] > INT32_MAX
    ]
    problems += [
        f"{t.name}: dimension {d} of shape {list(t.shape)} is more than {INT64_MAX}"
        for t in (*inputs, *outputs)
        for d in t.shape
        if d > INT64_MAX
    ]
    if problems:
        raise CheckFailed(f"config.pbtxt for {name}: " + "; ".join(problems))


def check(cfg: Any, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
    """What Triton's loader refuses although its parser accepts it: the platform, a batch size
    the signature cannot take, dims that disagree with the signature, an empty version policy."""
    problems: list[str] = []
    if cfg.platform != PLATFORM:
        problems.append(f"platform is {cfg.platform!r}, not {PLATFORM}")
    if cfg.max_batch_size < 0:
        problems.append("max_batch_size is negative")
    if cfg.max_batch_size > 0 and not _batching([*inputs, *outputs]):
        problems.append(
            f"max_batch_size {cfg.max_batch_size} needs every input and output to start with "
            "the batch dimension -1 (set spec.serving.max_batch_size: 0)"
        )
    for side, tensors, entries in (("input", inputs, cfg.input), ("output", outputs, cfg.output)):
        declared = {t.name: t for t in tensors}
        if sorted(declared) != sorted(e.name for e in entries) or len(entries) != len(tensors):
            problems.append(f"{side} names {[e.name for e in entries]} differ from the signature")
            continue
        for e in entries:
            shape = declared[e.name].shape
            expected = list(shape[1:] if cfg.max_batch_size > 0 else shape)
            dims = list(e.dims)
            if e.HasField("reshape"):
                if dims != [1] or list(e.reshape.shape) != expected:
                    problems.append(f"{side} {e.name}: reshape of {dims} disagrees with {shape}")
            elif dims != expected:
                problems.append(f"{side} {e.name}: dims {dims} disagree with shape {list(shape)}")
            if any(d == 0 or d < -1 for d in dims):
                problems.append(f"{side} {e.name}: dims {dims} must be positive or -1")
    if cfg.version_policy.WhichOneof("policy_choice") != "specific" or not list(
        cfg.version_policy.specific.versions
    ):
        problems.append("version_policy must name the serving version (specific)")
    if problems:
        raise CheckFailed(f"config.pbtxt for {cfg.name}: " + "; ".join(problems))


def to_text(cfg: Any) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(cfg))


def parse(text: str) -> Any:
    """A config.pbtxt as a ModelConfig; ValueError when Triton's parser would refuse it."""
    cfg = model_config_pb2().ModelConfig()  # first: without protobuf, it says what to install
    from google.protobuf import text_format

    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise ValueError(f"not a Triton model configuration: {exc}") from exc
    return cfg


def serving_version(text: str) -> int:
    """The version a config.pbtxt's `version_policy: { specific: … }` serves (the highest named)."""
    cfg = parse(text)
    versions = list(cfg.version_policy.specific.versions)
    if cfg.version_policy.WhichOneof("policy_choice") != "specific" or not versions:
        raise ValueError("version_policy does not name a specific version")
    return int(max(versions))


def with_version(text: str, version: int) -> str:
    """The same configuration, serving `version` instead: a rollback rewrites only this."""
    cfg = parse(text)
    cfg.version_policy.ClearField("policy_choice")
    cfg.version_policy.specific.versions.append(version)
    return to_text(cfg)
