"""The Open Inference Protocol v2 wire format: parse, validate and encode requests and replies,
JSON and the binary tensor data extension. Pure functions over bytes and numpy arrays.

An `InferenceRequest` is checked against the model's `TensorMeta` here, so nothing malformed ever
reaches onnxruntime; every refusal is a `ProtocolError` carrying its HTTP status.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Protocol datatype -> numpy dtype (BYTES is variable length: numpy object arrays of str).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
#: onnxruntime's type strings -> protocol datatype.
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
#: numpy dtype -> protocol datatype, for replies (a dict lookup, not 13 dtype comparisons).
_DATATYPE_OF = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}
#: One compact encoder, built once (json.dumps with arguments builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
#: The most elements one tensor may declare; the body limit bounds real data long before this.
MAX_ELEMENTS = 1 << 28
_LENGTH = struct.Struct("<I")


class ProtocolError(Exception):
    """A request the server refuses: HTTP `status` and a message for `{"error": ...}`."""

    def __init__(self, message: str, status: int = 400, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.allow = allow  # a 405's Allow header: the methods the resource takes


@dataclass(frozen=True)
class TensorMeta:
    """One input or output of a model as the protocol describes it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InferenceRequest:
    """A parsed and validated request: numpy inputs keyed by name, the outputs to return
    (name -> as binary?) in reply order, and the request's id (None when it sent none)."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[tuple[str, bool], ...]


# --- requests --------------------------------------------------------------------------------


def parse_request(
    body: bytes,
    header_length: int | None,
    inputs: Sequence[TensorMeta],
    outputs: Sequence[TensorMeta],
) -> InferenceRequest:
    """Parse an inference request body (JSON, or JSON then binary tensor data when the
    `Inference-Header-Content-Length` header says how long the JSON part is) for a model."""
    if header_length is None:
        header, binary = memoryview(body), memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        # Views, not copies: a binary input is read from the body itself (`_from_binary`).
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    try:
        # already str: json skips its encoding detection
        doc = json.loads(str(header, "utf-8"), parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("the request's JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not (isinstance(request_id, str) and _is_text(request_id)):
        raise ProtocolError("'id' must be a string of Unicode text")
    params = _parameters(doc.get("parameters"), "request")
    if params.get("classification"):
        raise ProtocolError("the classification extension is not supported")
    arrays = _parse_inputs(doc.get("inputs"), binary, inputs)
    return InferenceRequest(
        request_id,
        arrays,
        _requested_outputs(
            doc.get("outputs"), _flag(params, "binary_data_output", "request") or False, outputs
        ),
    )


def _is_text(value: str) -> bool:
    """False for a string with a lone surrogate, which JSON's \\ud800 escape makes and UTF-8
    cannot carry: onnxruntime and Parquet (the prediction log) both refuse it, the log a whole
    flush of other requests' rows with it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flag(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    """A boolean parameter, or None when absent. Not truthiness: the string "false" is true."""
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f"the {where}'s {key} must be true or false, not {value!r}")
    return value


def _not_json(token: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; JSON has none of them (RFC 8259 §6).
    raise ValueError(f"{token} is not a JSON value (send NaN and infinity as binary data)")


def _parameters(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"the {where}'s 'parameters' must be an object")
    return value


def _parse_inputs(
    raw: Any, binary: memoryview, metas: Sequence[TensorMeta]
) -> dict[str, np.ndarray]:
    if not isinstance(raw, list):
        raise ProtocolError("'inputs' must be a list of tensors")
    by_name = {m.name: m for m in metas}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(raw):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{index}] must be an object")
        name = tensor.get("name")
        meta = by_name.get(name) if isinstance(name, str) else None
        if meta is None or not isinstance(name, str):
            raise ProtocolError(
                f"unknown input {name!r}; the model's inputs are {', '.join(by_name)}"
            )
        if name in arrays:
            raise ProtocolError(f"input {name!r} is given twice")
        shape = _shape(tensor.get("shape"), meta)
        datatype = tensor.get("datatype")
        if datatype != meta.datatype:
            raise ProtocolError(
                f"input {name!r} has datatype {datatype!r}; the model expects {meta.datatype}"
            )
        params = _parameters(tensor.get("parameters"), f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
            if type(size) is not int or size < 0:
                raise ProtocolError(f"input {name!r}: binary_data_size must be a whole number ≥ 0")
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            arrays[name] = _from_binary(binary[offset : offset + size], shape, meta)
            offset += size
        else:
            arrays[name] = _from_json(tensor.get("data"), shape, meta)
    if offset != len(binary):
        raise ProtocolError(
            f"the body holds {len(binary) - offset} bytes of binary data that no input claims"
        )
    missing = [m.name for m in metas if m.name not in arrays]
    if missing:
        raise ProtocolError(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return arrays


def _shape(raw: Any, meta: TensorMeta) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(type(d) is int and d >= 0 for d in raw):
        raise ProtocolError(f"input {meta.name!r}: 'shape' must be a list of whole numbers ≥ 0")
    shape = tuple(raw)
    if len(shape) != len(meta.shape) or any(
        want != -1 and got != want for got, want in zip(shape, meta.shape, strict=True)
    ):
        raise ProtocolError(
            f"input {meta.name!r} has shape {list(shape)}; the model expects "
            f"{list(meta.shape)} (-1: any size)"
        )
    # Zeros count as ones: [0, 10**30] holds no element, but numpy cannot make the array (an
    # error that reached the client as "inference failed"), and [2**40, 0] counted 2**40
    # inferences in nv_inference_count for a request without a byte of data.
    if _count([max(d, 1) for d in shape]) > MAX_ELEMENTS:
        raise ProtocolError(f"input {meta.name!r}: shape {list(shape)} is too large")
    return shape


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _from_json(data: Any, shape: tuple[int, ...], meta: TensorMeta) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(f"input {meta.name!r}: 'data' must be a list")
    if meta.datatype == "BYTES":
        array = np.array(_flat(data), dtype=object)
        if not all(isinstance(v, str) for v in array):
            raise ProtocolError(f"input {meta.name!r}: BYTES data must be strings")
        if not _is_text("".join(array)):  # as the binary form, which must be UTF-8
            raise ProtocolError(f"input {meta.name!r}: BYTES values must be UTF-8 text")
    else:
        array = _numbers(data, meta)
    if array.size != _count(shape):
        raise ProtocolError(
            f"input {meta.name!r}: shape {list(shape)} needs {_count(shape)} values, "
            f"'data' has {array.size}"
        )
    return array.reshape(shape)


#: Which kinds of JSON values (as numpy infers them) each kind of tensor accepts: numbers for
#: numbers and true/false for BOOL, never one for the other (as Triton's JSON parser).
_ACCEPTS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


def _numbers(data: list[Any], meta: TensorMeta) -> np.ndarray:
    """JSON numbers as the model's dtype; strings, ragged lists, fractions in an integer
    tensor and integers out of the dtype's range are refused rather than coerced."""
    dtype = DTYPES[meta.datatype]
    try:
        inferred = np.asarray(data)
    except (ValueError, OverflowError):
        inferred = np.asarray([], dtype=object)
    if (
        inferred.dtype.kind not in _ACCEPTS[dtype.kind]
        or (inferred.size == 0 and data)
        # numpy reads [true, 2.5] as [1.0, 2.5] (and [true, 2] as [1, 2]): a boolean among
        # numbers leaves no trace in the dtype it infers, so the values are looked at.
        or (dtype.kind != "b" and inferred.size and _holds_bool(data, inferred.ndim))
    ):
        raise ProtocolError(f"input {meta.name!r}: 'data' is not a list of {meta.datatype} values")
    if dtype.kind in "iu" and inferred.size:
        info = np.iinfo(dtype)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise ProtocolError(f"input {meta.name!r}: a value is out of range for {meta.datatype}")
    with np.errstate(over="ignore"):  # an overflow becomes infinity, refused just below
        array = inferred.astype(dtype, copy=False)
    if dtype.kind == "f" and array.size and not np.isfinite(array).all():
        # 1e999 reads as infinity, and 1e39 becomes infinity as FP32: a number out of range.
        raise ProtocolError(f"input {meta.name!r}: a value is out of range for {meta.datatype}")
    return array


def _holds_bool(data: list[Any], ndim: int) -> bool:
    """Whether JSON `data` that numpy read as an `ndim`-dimensional array of numbers holds a
    true or false. numpy refuses ragged lists, so every value sits `ndim` lists deep. (One
    C-level pass over the values: 0.5 ms of the 7.6 ms a 1000×30 JSON request takes to
    parse, under 1 µs for one row.)"""
    values: Any = data
    for _ in range(ndim - 1):
        values = itertools.chain.from_iterable(values)
    return bool in set(map(type, values))


def _flat(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flat(v) if isinstance(v, list) else [v])
    return out


def _from_binary(raw: memoryview, shape: tuple[int, ...], meta: TensorMeta) -> np.ndarray:
    count = _count(shape)
    if meta.datatype == "BYTES":
        return np.array(split_bytes(raw, count, meta.name), dtype=object).reshape(shape)
    dtype = DTYPES[meta.datatype]
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"input {meta.name!r}: shape {list(shape)} of {meta.datatype} needs "
            f"{count * dtype.itemsize} bytes, binary_data_size is {len(raw)}"
        )
    # A read-only view of the body (onnxruntime only reads its inputs), unless it starts at an
    # address that is no multiple of its item size (the JSON part has any length): a copy then,
    # so that no kernel is handed unaligned numbers.
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array if array.flags.aligned else array.copy()


def split_bytes(raw: bytes | memoryview, count: int, name: str) -> list[str]:
    """BYTES in binary form: each element is a 4-byte little-endian length, then its bytes."""
    values: list[str] = []
    offset, end = 0, len(raw)
    for _ in range(count):
        if offset + 4 > end:
            raise ProtocolError(f"input {name!r}: the BYTES data ends after {len(values)} values")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise ProtocolError(f"input {name!r}: a BYTES value runs past its binary data")
        try:
            values.append(str(raw[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(f"input {name!r}: BYTES values must be UTF-8 text") from None
        offset += length
    if offset != end:
        raise ProtocolError(
            f"input {name!r}: shape needs {count} BYTES values, the binary data holds more"
        )
    return values


def _requested_outputs(
    raw: Any, binary_default: bool, metas: Sequence[TensorMeta]
) -> tuple[tuple[str, bool], ...]:
    if raw is None or raw == []:  # no `outputs`, or an empty list: every output
        return tuple((m.name, binary_default) for m in metas)
    if not isinstance(raw, list):
        raise ProtocolError("'outputs' must be a list")
    known = {m.name for m in metas}
    wanted: list[tuple[str, bool]] = []
    asked: set[str] = set()
    for index, out in enumerate(raw):
        name = out.get("name") if isinstance(out, dict) else None
        if not isinstance(name, str) or name not in known:  # a list is unhashable: a TypeError
            raise ProtocolError(
                f"outputs[{index}]: unknown output {name!r}; the model's outputs are "
                f"{', '.join(m.name for m in metas)}"
            )
        if name in asked:
            # As Triton ("it already exists"): each copy is one more of the output in the
            # reply, so 0.2 MB asking for one output 2,000 times had a 73 MB answer.
            raise ProtocolError(f"outputs[{index}]: output {name!r} is asked for twice")
        asked.add(name)
        params = _parameters(out.get("parameters"), f"output {name!r}")
        if params.get("classification"):
            raise ProtocolError("the classification extension is not supported")
        binary = _flag(params, "binary_data", f"output {name!r}")
        wanted.append((name, binary_default if binary is None else bool(binary)))
    return tuple(wanted)


# --- replies ---------------------------------------------------------------------------------


def encode_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, int | None]:
    """The reply body, and the JSON part's length when binary data follows it (the value of
    the `Inference-Header-Content-Length` reply header), else None."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array, binary in outputs:
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _to_json_data(array, datatype)
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = described
    try:
        header = _ENCODER.encode(doc).encode()
    except ValueError:  # JSON has no NaN or infinity; the binary form carries them
        raise ProtocolError(
            "an output holds NaN or infinity, which JSON cannot carry; request binary_data", 500
        ) from None
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def datatype_of(array: np.ndarray) -> str:
    found = _DATATYPE_OF.get(array.dtype)
    if found is not None:
        return found
    if array.dtype.kind in "OUS":
        return "BYTES"
    raise ProtocolError(f"the model returned an unsupported dtype {array.dtype}", 500)


def _to_json_data(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    data: list[Any] = flat.tolist()
    return data


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in array.reshape(-1):
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def json_bytes(doc: Any) -> bytes:
    return _ENCODER.encode(doc).encode()


# --- the client side (the deploy smoke test) --------------------------------------------------


def encode_request(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str], request_id: str | None = None
) -> tuple[bytes, int]:
    """A binary inference request asking for `outputs` as binary: (body, JSON part's length)."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in inputs.items():
        datatype = datatype_of(array)
        raw = _to_binary(array, datatype)
        described.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    doc: dict[str, Any] = {
        "inputs": described,
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
    }
    if request_id is not None:
        doc["id"] = request_id
    header = json_bytes(doc)
    return b"".join([header, *chunks]), len(header)


def decode_tensor(raw: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """One tensor of a binary reply."""
    if datatype not in DTYPES:
        raise ProtocolError(f"unknown datatype {datatype!r}")
    if datatype == "BYTES":
        return np.array(split_bytes(raw, _count(shape), "output"), dtype=object).reshape(shape)
    dtype = DTYPES[datatype].newbyteorder("<")
    if len(raw) != _count(shape) * dtype.itemsize:
        raise ProtocolError(f"{len(raw)} bytes do not make a {datatype} tensor of {list(shape)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
