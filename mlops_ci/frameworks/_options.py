"""Which `spec.conversion.options` each converter accepts: an allow-list of names and value types.

Options come from the manifest, so from the pull request: they are as untrusted as the artifact.
A converter keyword that takes a path or a callable (torch's `artifacts_dir`, `report`,
onnxmltools' `custom_conversion_functions`) is never on the list, so an option can only tune the
conversion, never make it read or write files or run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_ci.errors import CheckFailed

_FLAG = (bool,)
_WORD = (str,)
_WORDS = (list,)  # of strings, checked below

#: framework -> option name -> accepted value types. Nothing here names a file or a function.
ALLOWED: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    # skl2onnx's per-estimator options (zipmap is always off)
    "sklearn": {
        "nocl": _FLAG,
        "raw_scores": _FLAG,
        "output_class_labels": _FLAG,
        "decision_path": _FLAG,
        "decision_leaf": _FLAG,
        "score_samples": _FLAG,
        "return_std": _FLAG,
        "return_cov": _FLAG,
        "optim": _WORD,
        "div": _WORD,
        "gemm": _FLAG,
        "split": (int,),
        "separators": _WORDS,
        "tokenexp": _WORD,
    },
    # onnxmltools' converters take only these plain settings as keywords
    "xgboost": {"name": _WORD, "doc_string": _WORD},
    "lightgbm": {"split": (int,), "nocl": _FLAG},
    # torch.onnx.export keywords that change the graph, never where anything is written
    "pytorch": {
        "do_constant_folding": _FLAG,
        "keep_initializers_as_inputs": _FLAG,
        "optimize": _FLAG,
        "custom_opsets": (dict,),
    },
    "onnx": {},
}


def checked(framework: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options, if every name is allowed for `framework` and every value has its type."""
    options = dict(options or {})
    allowed = ALLOWED.get(framework, {})
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise CheckFailed(
            f"spec.conversion.options: {', '.join(map(str, unknown))} "
            f"{'is' if len(unknown) == 1 else 'are'} not accepted for {framework} (accepted: "
            f"{accepted}); options come from the pull request, so only settings that cannot "
            "name files or code are allowed"
        )
    for name, value in options.items():
        types = allowed[name]
        ok = isinstance(value, types) and not (bool in types and not isinstance(value, bool))
        if list in types and ok:
            ok = all(isinstance(v, str) for v in value)
        if dict in types and ok:
            ok = all(isinstance(k, str) and type(v) is int for k, v in value.items())
        if not ok:
            raise CheckFailed(
                f"spec.conversion.options.{name}: {value!r} is not a valid value "
                f"(expected {' or '.join(t.__name__ for t in types)})"
            )
    return options
