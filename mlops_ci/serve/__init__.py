"""`mlops-ci serve`: the Open Inference Protocol v2 over the registry (uvicorn, a minimal ASGI app).

`protocol` parses and encodes the wire format (`offload`: for large requests, in a child process),
`models` decides which version serves, `metrics` and `predlog` observe, `app` wires them into an
ASGI callable, and `main` runs it under uvicorn.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from mlops_ci.errors import EXIT_OK, UsageError
from mlops_ci.serve import defaults
from mlops_ci.serve.defaults import DEFAULTS

if TYPE_CHECKING:
    import socket

# logging, signal and socket are imported where a server starts: every command's parser reads
# this package's defaults, and `mlops-ci validate` must not pay for a server it never runs.


def main(
    registry: str,
    *,
    host: str = DEFAULTS.host,
    port: int = DEFAULTS.port,
    workers: int = DEFAULTS.workers,
    threads: int = DEFAULTS.threads,
    version_cache: int = DEFAULTS.version_cache,
    prediction_log: str | None = None,
    max_body_bytes: int = defaults.max_body_bytes(DEFAULTS.max_body_mb),
    poll_s: float = DEFAULTS.poll_s,
    sample_rate: float = DEFAULTS.sample_rate,
    log_flush_s: float = DEFAULTS.log_flush_s,
    drain_s: float = DEFAULTS.drain_s,
    idle_timeout_s: float = DEFAULTS.idle_timeout_s,
    access_log: bool = False,
) -> int:
    """Serve until SIGTERM or Ctrl-C; exit 0 after a clean drain, 2 on a configuration error."""
    import uvicorn

    from mlops_ci.registry import open_registry
    from mlops_ci.serve.app import App, Settings
    from mlops_ci.serve.transport import BoundedHttpToolsProtocol

    if workers < 1:
        raise UsageError("--workers must be at least 1")
    reg = open_registry(registry)
    if not reg.exists():
        raise UsageError(f"{registry}: no such registry folder")
    found = reg.models()  # reachable and readable now, rather than a failing worker later
    if prediction_log:  # likewise: a bad URI here would fail uvicorn's startup (exit 3)
        from mlops_ci.errors import MlopsCiError

        try:
            log_uri = open_registry(prediction_log).uri
        except MlopsCiError as exc:
            raise UsageError(f"--prediction-log: {exc}") from None
        # Beside the models, the log's folders would be models to Triton and KServe, which read
        # the same tree (a folder without config.pbtxt stops Triton's start), and KServe would
        # download the log with the model.
        if (log_uri + "/").startswith(reg.uri + "/") and not log_uri.startswith(
            reg.uri + "/.mlops/"
        ):
            raise UsageError(
                f"--prediction-log {prediction_log} is inside the registry, beside its models; "
                "leave it out to log under the registry's .mlops/predictions"
            )
    settings = Settings(
        registry=registry,
        prediction_log=prediction_log,
        max_body_bytes=max_body_bytes,
        poll_s=poll_s,
        threads=threads,
        version_cache=version_cache,
        default_sample_rate=sample_rate,
        log_flush_s=log_flush_s,
        body_timeout_s=defaults.body_timeout_s(idle_timeout_s),
    )
    import logging
    import signal

    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    logging.basicConfig(level=logging.INFO, format="mlops-ci serve: %(message)s")
    common: dict[str, Any] = {
        "http": BoundedHttpToolsProtocol,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "lifespan": "on",
        "access_log": access_log,
        "log_level": "warning",
        "timeout_keep_alive": idle_timeout_s,
        "timeout_graceful_shutdown": drain_s,
        "server_header": False,
    }
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in a URL
    print(f"mlops-ci serve: http://{shown}:{bound} (registry {reg.uri})", flush=True)
    if not found:  # a wrong --registry (the model repository, say) would otherwise look fine
        print(
            f"mlops-ci serve: no model in {reg.uri} yet; deploys are picked up as they land",
            flush=True,
        )
    if workers == 1:
        config = uvicorn.Config(App(settings), **common)
        server = uvicorn.Server(config)
        # uvicorn re-raises the SIGTERM it drained for once it is done; a drained server has
        # done its job, so the process then exits 0 rather than die of the signal.
        signal.signal(signal.SIGTERM, lambda *_: None)
        server.run(sockets=[sock])
        return EXIT_OK if server.started else 2
    import shutil

    from uvicorn.supervisors import Multiprocess

    from mlops_ci.serve import shared_counters

    # Where the workers share their counters, so that any worker's /metrics reports the totals
    # (serve/shared_counters.py). Private (0700), and it outlives the workers it holds: removed
    # only once they have all stopped.
    metrics_dir = shared_counters.make_folder()
    try:
        settings = dataclasses.replace(settings, metrics_dir=metrics_dir)
        os.environ["MLOPS_CI_SERVE_SETTINGS"] = json.dumps(dataclasses.asdict(settings))
        config = uvicorn.Config(
            "mlops_ci.serve.app:create_app", factory=True, workers=workers, **common
        )
        Multiprocess(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK


def _bind(host: str, port: int) -> socket.socket:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, Nagle holds back the reply's body (a second
    # small write) until the client acknowledges its headers, adding milliseconds per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
