"""onnxruntime sessions, made one way: quiet.

onnxruntime logs from C straight to stderr, past `gha.guarded_output`, and its messages quote the
model: initializer and node names, which a pull request chooses. A name holding a line break
starts a new line of the job's log, and a line that starts with `::` is a workflow command. Its
warnings (an unused initializer) and its errors (a node that fails at run time) both quote
names, so a session logs only what is fatal; anything that goes wrong reaches the caller as an
exception, which is printed escaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime

#: onnxruntime's FATAL: nothing a model can name is logged at it.
LOG_SEVERITY = 4


def options() -> onnxruntime.SessionOptions:
    """SessionOptions that log only what is fatal; callers set the rest."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = LOG_SEVERITY
    return opts


def session(
    model: bytes | str, opts: onnxruntime.SessionOptions | None = None
) -> onnxruntime.InferenceSession:
    """A CPU session of `model` (bytes, or a path) with `opts` (default: `options()`)."""
    import onnxruntime as ort

    return ort.InferenceSession(
        model, sess_options=opts or options(), providers=["CPUExecutionProvider"]
    )
