"""ONNX: a given model is checked and passed through; its "native" runtime is onnxruntime."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci import runtime
from mlops_ci.digest import verify_digest
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported

if TYPE_CHECKING:
    import onnx

    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("onnx", "onnxruntime")


#: The most bytes the tensors of a model may declare, whatever the file's size: a sparse
#: tensor of a few bytes can declare a dense shape of terabytes, which the runtime allocates.
MAX_TENSOR_BYTES = 4 << 30
#: ... and no more than this many times the file's own size (plus a floor for tiny models).
MAX_EXPANSION = 64
_EXPANSION_FLOOR = 64 << 20


def load(artifact: Artifact) -> onnx.ModelProto:
    """The model, refusing external data wherever a tensor can live (its paths would read
    files the artifact's digest does not cover) and tensors that declare more bytes than the
    file could hold."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    import onnx

    try:
        model = onnx.load(str(artifact.path), load_external_data=False)
    except Exception as exc:
        raise CheckFailed(f"not a readable ONNX model: {exc}", path=artifact.path) from exc
    tensors = list(_tensors(model))
    external = [where for where, t in tensors if _is_external(t)]
    if external:
        raise CheckFailed(
            f"the model keeps tensor(s) in external files ({', '.join(external[:5])}); mlops-ci "
            "takes self-contained ONNX files only, since external data is read from paths the "
            "artifact's digest does not cover (save with save_as_external_data=False)",
            path=artifact.path,
        )
    limit = min(MAX_TENSOR_BYTES, _EXPANSION_FLOOR + MAX_EXPANSION * artifact.path.stat().st_size)
    declared = 0
    for where, tensor in tensors:
        declared += _declared_bytes(tensor, where, artifact)
        if declared > limit:
            raise CheckFailed(
                f"the model's tensors declare over {limit:,} bytes (at {where}) for a file of "
                f"{artifact.path.stat().st_size:,} bytes; refusing a model that would expand "
                "when loaded",
                path=artifact.path,
            )
    return model


def _is_external(tensor: onnx.TensorProto) -> bool:
    from onnx import TensorProto

    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _declared_bytes(tensor: onnx.TensorProto, where: str, artifact: Artifact) -> int:
    from onnx import TensorProto, helper

    if any(d < 0 for d in tensor.dims):
        raise CheckFailed(f"tensor {where} has a negative dimension", path=artifact.path)
    count = 1
    for d in tensor.dims:
        count *= d
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return len(tensor.SerializeToString())
    try:
        size = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        size = 8
    return count * size


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor of the model, named by where it lives: initializers, sparse initializers,
    node attributes (t, tensors, sparse_tensor, sparse_tensors) in the graph, its subgraphs and
    the model's local functions. A sparse tensor counts with its dense shape."""
    yield from _graph_tensors(model.graph, "graph")
    for function in model.functions:
        yield from _node_tensors(function.node, f"function {function.domain}.{function.name}")


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for tensor in graph.initializer:
        yield f"{where} initializer {tensor.name}", tensor
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse, f"{where} sparse initializer {sparse.values.name}")
    yield from _node_tensors(graph.node, where)


def _sparse(sparse: onnx.SparseTensorProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    import onnx

    yield f"{where} values", sparse.values
    yield f"{where} indices", sparse.indices
    # what the runtime allocates when it densifies the tensor
    dense = onnx.TensorProto(dims=list(sparse.dims), data_type=sparse.values.data_type)
    yield f"{where} (dense)", dense


def _node_tensors(
    nodes: Iterable[onnx.NodeProto], where: str
) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in nodes:
        for attr in node.attribute:
            at = f"{where} node {node.name or node.op_type} attribute {attr.name}"
            if attr.HasField("t"):
                yield at, attr.t
            for tensor in attr.tensors:
                yield at, tensor
            if attr.HasField("sparse_tensor"):
                yield from _sparse(attr.sparse_tensor, at)
            for sparse in attr.sparse_tensors:
                yield from _sparse(sparse, at)
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g, f"{at} subgraph")
            for sub in attr.graphs:
                yield from _graph_tensors(sub, f"{at} subgraph")


def to_onnx(
    model: onnx.ModelProto, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    """The model itself (a copy): nothing to convert."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return Exported(copy, "passthrough", passthrough=True)


# One cached session: `predict` is called repeatedly on the same model (parity, benchmarks).
_SESSION: list[tuple[Any, Any]] = []


def feature_names(model: onnx.ModelProto) -> None:
    """An ONNX graph takes tensors: it records no column names."""
    return None


def predict(model: onnx.ModelProto, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    """The given model on onnxruntime: the reference the written model.onnx must match."""
    from mlops_ci.dtypes import NUMPY_DTYPES

    if not _SESSION or _SESSION[0][0] is not model:
        session = runtime.session(model.SerializeToString())
        _SESSION[:] = [(model, session)]
    session = _SESSION[0][1]
    feeds: dict[str, np.ndarray] = {
        s.name: np.asarray(batch.feeds[s.name], dtype=NUMPY_DTYPES[s.dtype])
        for s in signature.inputs
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))
