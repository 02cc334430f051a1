"""The defaults of `mlops-ci serve`, written once: its flags (cli.py), `serve.main`, the app's
`Settings` and the model store take them from here, and tests/test_serve_defaults.py holds
docs/serve.md to the same numbers. Imports nothing, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeDefaults:
    """What `serve` does when not told otherwise (flag names in docs/serve.md's table)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: onnxruntime intra-op threads per session. A worker runs each inference inline on its event
    #: loop, one request at a time whatever the thread count: more threads only shorten large
    #: batches, and cost every small request a hand-off to the pool (2 threads took twice the
    #: time of 1 on one row of a 100-tree forest). Cores are for --workers.
    threads: int = 1
    #: Share of requests logged for a model whose deployed manifest sets no rate.
    sample_rate: float = 0.0
    max_body_mb: float = 64
    #: Published versions other than the serving ones that a worker keeps loaded after a request
    #: by path (least recently used out first; an evicted one is loaded again when asked for).
    #: Each holds an onnxruntime session: without a bound, a client walking through versions
    #: made a worker hold every one.
    version_cache: int = 4
    poll_s: float = 0.5
    #: Keep-alive, and how long a client may take to send a request's headers.
    idle_timeout_s: float = 5.0
    #: How long SIGTERM waits for requests in flight.
    drain_s: float = 10.0
    #: How often the prediction log writes what it has buffered.
    log_flush_s: float = 30.0


DEFAULTS = ServeDefaults()


def max_body_bytes(max_body_mb: float) -> int:
    return int(max_body_mb * (1 << 20))


def body_timeout_s(idle_timeout_s: float) -> float:
    """How long a request body may stall between two chunks: twice the idle timeout, since it
    measures silence, not a slow network."""
    return 2 * idle_timeout_s
