"""The Open Inference Protocol's wire format, parsed and encoded without a server."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mlops_ci.serve.protocol import (
    ProtocolError,
    TensorMeta,
    encode_response,
    parse_request,
)

X = TensorMeta("input", "FP32", (-1, 3))
WORD = TensorMeta("word", "BYTES", (-1, 1))
COUNT = TensorMeta("count", "INT64", (-1,))
OUTPUTS = (TensorMeta("label", "INT64", (-1,)), TensorMeta("probabilities", "FP32", (-1, 2)))


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_json_request_becomes_arrays_of_the_model_dtype() -> None:
    body = _json(
        {
            "id": "r-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "data": [[1, 2, 3], [4, 5.5, 6]],
                }
            ],
        }
    )
    req = parse_request(body, None, [X], OUTPUTS)
    assert req.id == "r-1"
    assert req.inputs["input"].dtype == np.float32
    np.testing.assert_array_equal(req.inputs["input"], [[1, 2, 3], [4, 5.5, 6]])
    # No `outputs`: every output, as JSON.
    assert req.outputs == (("label", False), ("probabilities", False))


def test_binary_request_reads_each_tensor_from_its_slice() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = ["héllo", ""]
    header = _json(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                },
                {
                    "name": "word",
                    "shape": [2, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(_bytes_tensor(words))},
                },
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body = header + x.tobytes() + _bytes_tensor(words)
    req = parse_request(body, len(header), [X, WORD], OUTPUTS)
    np.testing.assert_array_equal(req.inputs["input"], x)
    assert req.inputs["word"].tolist() == [["héllo"], [""]]
    assert req.outputs == (("label", True), ("probabilities", True))


@pytest.mark.parametrize("pad", [0, 1], ids=["aligned", "unaligned"])
def test_a_binary_input_is_a_view_of_the_body_unless_unaligned(pad: int) -> None:
    """The body was copied twice (its binary part, then each input's slice): 128 MB more for
    a 64 MB request. Now an input aligned in the body is read in place; one that is not (the
    JSON part has any length) is copied once, so no kernel gets unaligned numbers."""
    x = np.arange(3 << 10, dtype=np.float32).reshape(-1, 3)
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    header = _json({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]})
    header += b" " * ((-len(header)) % 16 + pad)  # JSON may end in whitespace
    body = header + x.tobytes()
    got = parse_request(body, len(header), [X], OUTPUTS).inputs["input"]
    np.testing.assert_array_equal(got, x)
    assert got.flags.aligned and got.flags.writeable == (pad == 1)  # a copy is writeable
    assert np.shares_memory(got, np.frombuffer(body, np.uint8)) == (pad == 0)


def test_requested_outputs_keep_their_order_and_binary_flag() -> None:
    body = _json(
        {
            "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label"},
            ],
        }
    )
    req = parse_request(body, None, [X], OUTPUTS)
    assert req.outputs == (("probabilities", True), ("label", False))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                ]
            },
            "shape [1, 4]",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "datatype 'FP64'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]},
            "needs 3 values",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": ["1", "2", "3"]}
                ]
            },
            "not a list of FP32",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2], [3]]}
                ]
            },
            "not a list of FP32",
        ),
        ({"inputs": []}, "missing input input"),
        (
            {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]},
            "unknown input 'nope'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, -3], "datatype": "FP32", "data": []}]},
            "whole numbers",
        ),
        ({"id": 7, "inputs": []}, "'id' must be a string"),
        ({"id": "\ud800", "inputs": []}, "'id' must be a string of Unicode text"),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "outputs": [{"name": ["label"]}],  # unhashable: was a TypeError, not a refusal
            },
            "unknown output ['label']",
        ),
        # Truthiness read the string "false" as true: binary data the client did not ask for.
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "outputs": [{"name": "label", "parameters": {"binary_data": "false"}}],
            },
            "binary_data must be true or false, not 'false'",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "parameters": {"binary_data_output": "false"},
            },
            "binary_data_output must be true or false, not 'false'",
        ),
        ([1, 2], "must be a JSON object"),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "outputs": [{"name": "nope"}],
            },
            "unknown output 'nope'",
        ),
        # Each copy was one more of the output in the reply: 0.2 MB asking for one output 2,000
        # times had a 73 MB answer. Triton refuses it too ("it already exists").
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "outputs": [{"name": "label"}, {"name": "probabilities"}, {"name": "label"}],
            },
            "outputs[2]: output 'label' is asked for twice",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
                ],
                "outputs": [{"name": "label", "parameters": {"classification": 2}}],
            },
            "classification extension",
        ),
    ],
)
def test_malformed_json_requests_are_refused_with_400(doc: object, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request(_json(doc), None, [X], OUTPUTS)
    assert err.value.status == 400
    assert message in err.value.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[true, false, true]", "not a list of FP32"),
        # Among numbers a boolean leaves no trace in numpy's dtype: [true, 2.5] was [1.0, 2.5].
        ("[true, 2.5, 3]", "not a list of FP32"),
        ("[[1, 2.5, false]]", "not a list of FP32"),
        ("[1, 2, NaN]", "NaN is not a JSON value"),
        ("[1, 2, Infinity]", "Infinity is not a JSON value"),
        ("[1, 2, 1e999]", "out of range for FP32"),
        ("[1, 2, 1e39]", "out of range for FP32"),  # finite as a float64, infinite as FP32
    ],
)
def test_float_tensors_take_finite_json_numbers_only(data: str, message: str) -> None:
    """Python's json reads booleans, NaN, Infinity and 1e999 where a number goes; numpy then
    turns them into 1.0, nan and inf, which a model predicts on silently."""
    body = (
        '{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":' + data + "}]}"
    ).encode()
    with pytest.raises(ProtocolError) as err:
        parse_request(body, None, [X], OUTPUTS)
    assert err.value.status == 400
    assert message in err.value.message
    ok = parse_request(
        b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2.5,-3e38]}]}',
        None,
        [X],
        OUTPUTS,
    )
    assert ok.inputs["input"].tolist() == [[1.0, 2.5, np.float32(-3e38)]]


def test_integer_tensors_refuse_fractions_and_out_of_range_values() -> None:
    for data in ([1.5], [2**70], ["3"], [True], [True, 2], [3, False]):
        body = _json(
            {"inputs": [{"name": "count", "shape": [len(data)], "datatype": "INT64", "data": data}]}
        )
        with pytest.raises(ProtocolError):
            parse_request(body, None, [COUNT], OUTPUTS)
    body = _json({"inputs": [{"name": "count", "shape": [2], "datatype": "INT64", "data": [1, 2]}]})
    assert parse_request(body, None, [COUNT], OUTPUTS).inputs["count"].dtype == np.int64


def _binary(size: int, payload: bytes) -> tuple[bytes, int]:
    header = _json(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    return header + payload, len(header)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: (_binary(12, b"\0" * 12)[0], 10_000), "Inference-Header-Content-Length"),
        (lambda: (_binary(12, b"\0" * 12)[0], -1), "Inference-Header-Content-Length"),
        (lambda: _binary(-12, b"\0" * 12), "binary_data_size must be"),
        (lambda: _binary(12, b"\0" * 8), "runs past the end"),
        (lambda: _binary(8, b"\0" * 8), "needs 12 bytes"),
        (lambda: _binary(12, b"\0" * 16), "no input claims"),
    ],
    ids=[
        "header-past-body",
        "header-negative",
        "negative-size",
        "truncated",
        "short-size",
        "trailing-bytes",
    ],
)
def test_malformed_binary_requests_are_refused_with_400(make, message: str) -> None:  # type: ignore[no-untyped-def]
    body, header_length = make()
    with pytest.raises(ProtocolError) as err:
        parse_request(body, header_length, [X], OUTPUTS)
    assert err.value.status == 400
    assert message in err.value.message


def test_a_shape_without_elements_is_bounded_like_one_with_them() -> None:
    any_shape = TensorMeta("input", "FP32", (-1, -1))
    for shape in ([0, 10**30], [0, 1 << 62], [1 << 40, 0], [1 << 29, 0]):
        for binary in (False, True):
            tensor: dict[str, object] = {"name": "input", "shape": shape, "datatype": "FP32"}
            if binary:
                tensor["parameters"] = {"binary_data_size": 0}
            else:
                tensor["data"] = []
            body = _json({"inputs": [tensor]})
            with pytest.raises(ProtocolError, match="is too large") as err:
                parse_request(body, len(body) if binary else None, [any_shape], OUTPUTS)
            assert err.value.status == 400
    # An empty batch stays a valid request.
    ok = {"inputs": [{"name": "input", "shape": [0, 3], "datatype": "FP32", "data": []}]}
    assert parse_request(_json(ok), None, [any_shape], OUTPUTS).inputs["input"].shape == (0, 3)


def test_bytes_json_text_that_utf8_cannot_carry_is_refused() -> None:
    # The binary form must be UTF-8; JSON's \\udc00 escape makes a lone surrogate, which
    # onnxruntime failed on ("inference failed") instead of the protocol refusing it.
    for values in (["\udc00"], ["ok", "\ud83d", "\ude00"]):
        doc = {"inputs": [{"name": "word", "shape": [len(values), 1], "datatype": "BYTES",
                           "data": values}]}  # fmt: skip
        with pytest.raises(ProtocolError, match="BYTES values must be UTF-8 text"):
            parse_request(_json(doc), None, [WORD], OUTPUTS)
    doc = {
        "inputs": [{"name": "word", "shape": [1, 1], "datatype": "BYTES", "data": ["\ud83d\ude00"]}]
    }
    assert parse_request(_json(doc), None, [WORD], OUTPUTS).inputs["word"][0, 0] == "\U0001f600"


def test_truncated_bytes_element_is_refused() -> None:
    raw = _bytes_tensor(["abc"])[:-1]
    header = _json(
        {
            "inputs": [
                {
                    "name": "word",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    with pytest.raises(ProtocolError, match="runs past"):
        parse_request(header + raw, len(header), [WORD], OUTPUTS)


def test_reply_mixes_json_and_binary_outputs_as_requested() -> None:
    label = np.array([1, 0], dtype=np.int64)
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    body, json_length = encode_response(
        "m", "3", "r-9", [("label", label, False), ("probabilities", probs, True)]
    )
    assert json_length is not None
    head = json.loads(body[:json_length])
    assert head["id"] == "r-9" and head["model_version"] == "3"
    assert head["outputs"][0] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "data": [1, 0],
    }
    assert head["outputs"][1]["parameters"] == {"binary_data_size": probs.nbytes}
    np.testing.assert_array_equal(
        np.frombuffer(body[json_length:], dtype="<f4").reshape(2, 2), probs
    )


def test_json_reply_without_binary_has_no_header_length() -> None:
    body, json_length = encode_response("m", "1", None, [("x", np.array([1.5]), False)])
    assert json_length is None
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "1",
        "outputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.5]}],
    }
