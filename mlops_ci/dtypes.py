"""The numpy element type of each manifest dtype, shared by the data layer and the frameworks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: numpy element type per manifest dtype; ONNX string tensors travel as object arrays of str.
NUMPY_DTYPES: Mapping[str, type] = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "string": np.object_,
}
