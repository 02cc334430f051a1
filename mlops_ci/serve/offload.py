"""The JSON work of large requests, done in a child process so that a worker's event loop keeps
answering while a 64 MB body becomes arrays, and while a large reply becomes JSON.

A thread is not enough: `json.loads`, numpy's conversion of nested lists and the JSON encoder
are single C calls that hold the GIL from start to end (up to a second each for 64 MB), so a
loop beside them stalls as long. In a child process they hold the child's GIL; the worker only
copies bytes in and arrays out, and arrays in and bytes out: milliseconds. One child per worker,
started on the first large body (a worker that never sees one never pays for it), does one job
at a time, is started again if it dies, and exits when its worker does, however the worker
ends. The app (`App._turns`) decides which requests come here and how many at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mlops_ci.serve import protocol
from mlops_ci.serve.protocol import InferenceRequest, ProtocolError, TensorMeta

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger("mlops_ci.serve")
_T = TypeVar("_T")


class CodecProcess:
    """`protocol.parse_request` and `protocol.encode_response` in a child process."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def decode(
        self,
        body: bytes,
        header_length: int | None,
        inputs: Sequence[TensorMeta],
        outputs: Sequence[TensorMeta],
    ) -> InferenceRequest:
        return await self._call(_decode, body, header_length, tuple(inputs), tuple(outputs))

    async def encode(
        self,
        model: str,
        version: str,
        request_id: str | None,
        outputs: Sequence[tuple[str, np.ndarray, bool]],
    ) -> tuple[bytes, int | None]:
        return await self._call(_encode, model, version, request_id, list(outputs))

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        pool = self._pool or self._start()
        try:
            future = loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:  # died since its last job (killed, out of memory): a new one
            log.error("the process for large requests had died; starting another")
            pool = self._start()
            future = loop.run_in_executor(pool, fn, *args)
        try:
            return await future
        except BrokenProcessPool:
            # Died on this very job, which may be what killed it: no second try.
            log.error("the process for large requests died; another starts on the next one")
            if self._pool is pool:
                self._pool = None
            raise ProtocolError("the server could not handle this request; retry", 503) from None

    def _start(self) -> ProcessPoolExecutor:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is not None:  # a broken one: let its threads go
            self._pool.shutdown(wait=False)
        # spawn, not fork: the worker has threads (the poller, onnxruntime's), and a fork
        # copies their locks in whatever state they are.
        self._pool = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init
        )
        return self._pool

    def close(self) -> None:
        """Stop the child and wait for it (the server has drained: it has no job, or finishes
        the one a drain that timed out left it). Waiting releases the pool's semaphores: under
        `--workers N` the worker then dies of uvicorn's re-raised SIGTERM, and semaphores still
        held made multiprocessing's resource tracker warn of leaked ones on every shutdown."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)


# In the child: the same functions as inline (a ProtocolError travels back with its status).


def _decode(
    body: bytes,
    header_length: int | None,
    inputs: tuple[TensorMeta, ...],
    outputs: tuple[TensorMeta, ...],
) -> InferenceRequest:
    return protocol.parse_request(body, header_length, inputs, outputs)


def _encode(
    model: str, version: str, request_id: str | None, outputs: list[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    return protocol.encode_response(model, version, request_id, outputs)


def _child_init() -> None:
    import multiprocessing
    import signal
    import threading

    # Ctrl-C reaches the whole process group; the worker stops the child itself, and a
    # KeyboardInterrupt traceback from it would only be noise on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The child never outlives its worker, however the worker ends. Under `--workers N` uvicorn's
    # worker dies of the SIGTERM it re-raises after draining, and the kernel's OOM killer sends
    # SIGKILL: neither runs the worker's exit handlers that tell the child to stop, and the
    # child's queue never reports the worker gone (the child holds its write end too), so the
    # child waited for work for good, orphaned, with its memory.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_with_parent(sentinel: int) -> None:
    import os
    from multiprocessing.connection import wait

    wait([sentinel])  # ready once the worker has exited, whatever way
    os._exit(0)  # no cleanup to run: the job it may be doing has nobody to answer
