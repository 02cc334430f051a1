"""What the plan and validate benchmarks share: valid manifests made from the test corpus's
model, and one child process timed with its own CPU time and peak memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "tests" / "corpus" / "valid" / "model.yaml").read_text()
# The digests the corpus manifest pins for its artifact and its evaluation data.
_ARTIFACT_SHA = "4de28936fed5cdf64189d659fb20472a6509c621a49ef5fe5122ed7ba24273c5"
_DATA_SHA = "1c2774606e096c8ee91ec09a8b7ad342ab39ed2a75bc7266714d34114a124f02"


def write_model(
    folder: Path,
    name: str,
    artifact: bytes,
    data: bytes,
    *,
    version: str = "1.2.0",
    framework: str = "sklearn",
    artifact_name: str = "model.skops",
) -> Path:
    """A valid model folder (manifest, artifact, eval.csv, digests that match); its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifact_name).write_bytes(artifact)
    (folder / "eval.csv").write_bytes(data)
    text = (
        TEMPLATE.replace("name: corpus-model", f"name: {name}")
        .replace("version: 1.2.0", f"version: {version}")
        .replace("framework: sklearn", f"framework: {framework}")
        .replace("../model.skops", artifact_name)
        .replace("../eval.csv", "eval.csv")
        .replace(_ARTIFACT_SHA, hashlib.sha256(artifact).hexdigest())
        .replace(_DATA_SHA, hashlib.sha256(data).hexdigest())
    )
    manifest = folder / "model.yaml"
    manifest.write_text(text)
    return manifest


def timed(cmd: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one child. CPU time is printed beside wall time
    because a shared machine's load moves wall time far more than CPU time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # both small: no pipe fills up
    _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own CPU time and peak RSS
    took = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        sys.exit(f"{cmd[0]} failed ({code}):\n{err.decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return took, cpu, usage.ru_maxrss / 1024, out.decode()
