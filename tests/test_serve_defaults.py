"""`serve`'s defaults are written once (serve/defaults.py): the CLI's flags, `serve.main`, the
app's `Settings`, the model store, the prediction log and docs/serve.md all say the same."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

from mlops_ci.serve.defaults import DEFAULTS, body_timeout_s, max_body_bytes

DOC = Path(__file__).resolve().parents[1] / "docs" / "serve.md"

#: docs/serve.md's flag (as its table writes it) -> the default's name in ServeDefaults.
DOC_FLAGS = {
    "--host": "host",
    "--port": "port",
    "--workers N": "workers",
    "--threads N": "threads",
    "--version-cache N": "version_cache",
    "--sample-rate R": "sample_rate",
    "--max-body-mb MB": "max_body_mb",
    "--poll SECONDS": "poll_s",
    "--idle-timeout SECONDS": "idle_timeout_s",
}


def _signature_defaults(fn: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_the_clis_defaults_are_the_sources() -> None:
    from mlops_ci.cli import build_parser

    args = build_parser().parse_args(["serve", "--registry", "reg"])
    assert {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "threads": args.threads,
        "version_cache": args.version_cache,
        "sample_rate": args.sample_rate,
        "max_body_mb": args.max_body_mb,
        "poll_s": args.poll,
        "idle_timeout_s": args.idle_timeout,
    } == {
        "host": DEFAULTS.host,
        "port": DEFAULTS.port,
        "workers": DEFAULTS.workers,
        "threads": DEFAULTS.threads,
        "version_cache": DEFAULTS.version_cache,
        "sample_rate": DEFAULTS.sample_rate,
        "max_body_mb": DEFAULTS.max_body_mb,
        "poll_s": DEFAULTS.poll_s,
        "idle_timeout_s": DEFAULTS.idle_timeout_s,
    }
    assert args.prediction_log is None  # the registry's own .mlops/predictions


def test_serve_main_settings_store_and_log_default_to_the_source() -> None:
    from mlops_ci import serve
    from mlops_ci.serve.app import Settings
    from mlops_ci.serve.models import ModelStore
    from mlops_ci.serve.predlog import PredictionLog

    main = _signature_defaults(serve.main)
    for name in (
        *("host", "port", "workers", "threads", "version_cache"),
        *("sample_rate", "poll_s", "drain_s"),
    ):
        assert main[name] == getattr(DEFAULTS, name), name
    assert main["idle_timeout_s"] == DEFAULTS.idle_timeout_s
    assert main["log_flush_s"] == DEFAULTS.log_flush_s
    assert main["max_body_bytes"] == max_body_bytes(DEFAULTS.max_body_mb)

    settings = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert settings["max_body_bytes"] == max_body_bytes(DEFAULTS.max_body_mb)
    assert settings["poll_s"] == DEFAULTS.poll_s
    assert settings["threads"] == DEFAULTS.threads
    assert settings["version_cache"] == DEFAULTS.version_cache
    assert settings["default_sample_rate"] == DEFAULTS.sample_rate
    assert settings["log_flush_s"] == DEFAULTS.log_flush_s
    # The one the review found: 30 s here against twice the idle timeout (10 s) in serve.main.
    assert settings["body_timeout_s"] == body_timeout_s(DEFAULTS.idle_timeout_s)

    store = _signature_defaults(ModelStore.__init__)
    assert (store["threads"], store["default_sample_rate"], store["version_cache"]) == (
        DEFAULTS.threads,
        DEFAULTS.sample_rate,
        DEFAULTS.version_cache,
    )
    assert _signature_defaults(PredictionLog.__init__)["flush_s"] == DEFAULTS.log_flush_s


def test_serve_md_states_the_sources_numbers() -> None:
    from mlops_ci.serve.app import LARGE_BODY_BYTES
    from mlops_ci.serve.predlog import PredictionLog
    from mlops_ci.serve.transport import MAX_HEADER_BYTES

    text = DOC.read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(--[^`]+)` \| `([^`]+)` \|", text, re.MULTILINE))
    assert set(DOC_FLAGS) <= set(table), (
        f"docs/serve.md's flag table lacks {set(DOC_FLAGS) - set(table)}"
    )
    for flag, name in DOC_FLAGS.items():
        value = getattr(DEFAULTS, name)
        want = value if isinstance(value, str) else f"{value:g}"
        assert table[flag] == want, f"docs/serve.md: {flag} defaults to {table[flag]}, not {want}"

    def stated(pattern: str) -> float:
        found = re.findall(pattern, text)
        assert found, pattern
        assert len(set(found)) == 1, f"docs/serve.md says {pattern} with {found}"
        return float(found[0].replace(",", ""))

    assert stated(r"drains in-flight requests, up to ([\d.]+) s") == DEFAULTS.drain_s
    assert stated(r"every ([\d.]+) s, through the registry") == DEFAULTS.log_flush_s
    assert "a body that stalls for twice this gets 408" in text  # body_timeout_s, in words
    assert body_timeout_s(1.0) == 2.0
    assert stated(r"headers over ([\d.]+) KiB") * 1024 == MAX_HEADER_BYTES
    assert stated(r"(?:body (?:is )?over|Below) ([\d.]+) KiB") * 1024 == LARGE_BODY_BYTES
    max_buffered = _signature_defaults(PredictionLog.__init__)["max_buffered"]
    assert stated(r"The\s+buffer is bounded \(([\d,]+) rows") == max_buffered
