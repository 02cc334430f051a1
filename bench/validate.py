"""Throughput and cold start of `mlops-ci validate`, against check-jsonschema, measured in one run.

    python bench/validate.py [--files 5000] [--rounds 3]

Generates N valid manifests with their artifacts and evaluation data in a temporary folder,
then alternates `mlops-ci validate DIR` with `check-jsonschema --schemafile … FILES` (schema
only: it does no digests and keeps no YAML lines for us) and prints files/s and the ratio.
Goal: mlops-ci at least 4x check-jsonschema's throughput while also checking digests, paths
and names. Then the cold start of validating one file against `python -c "import yaml,
jsonschema"`; goal at most 3x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPLATE = (ROOT / "tests" / "corpus" / "valid" / "model.yaml").read_text()
FRAMEWORKS = [("sklearn", "model.skops"), ("xgboost", "model.json"), ("lightgbm", "model.txt")]


def generate(folder: Path, count: int) -> list[Path]:
    import hashlib

    (folder / ".git").mkdir()  # the repository root for path checks
    files = []
    for i in range(count):
        model = folder / "models" / f"m{i // 100:03d}" / f"model-{i:05d}"
        model.mkdir(parents=True)
        framework, artifact_name = FRAMEWORKS[i % len(FRAMEWORKS)]
        artifact = os.urandom(4096)
        data = f"x,y\n{i},{i % 2}\n".encode()
        (model / artifact_name).write_bytes(artifact)
        (model / "eval.csv").write_bytes(data)
        text = (
            TEMPLATE.replace("name: corpus-model", f"name: model-{i:05d}")
            .replace("framework: sklearn", f"framework: {framework}")
            .replace("../model.skops", artifact_name)
            .replace("../eval.csv", "eval.csv")
            .replace(
                "4de28936fed5cdf64189d659fb20472a6509c621a49ef5fe5122ed7ba24273c5",
                hashlib.sha256(artifact).hexdigest(),
            )
            .replace(
                "1c2774606e096c8ee91ec09a8b7ad342ab39ed2a75bc7266714d34114a124f02",
                hashlib.sha256(data).hexdigest(),
            )
        )
        (model / "model.yaml").write_text(text)
        files.append(model / "model.yaml")
    return files


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"{cmd[0]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema = ROOT / "schemas" / "model-manifest.v1.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = generate(folder, args.files)
        rel = [str(f.relative_to(folder)) for f in files]
        ours_cmd = [str(BIN / "mlops-ci"), "validate", "models"]
        theirs_cmd = [str(BIN / "check-jsonschema"), "--schemafile", str(schema), *rel]
        ours, theirs = [], []
        for r in range(args.rounds):
            ours.append(timed(ours_cmd, folder))
            theirs.append(timed(theirs_cmd, folder))
            print(
                f"round {r + 1}: mlops-ci {ours[-1]:.2f} s, check-jsonschema {theirs[-1]:.2f} s",
                flush=True,
            )
        o, t = statistics.median(ours), statistics.median(theirs)
        print(
            f"\nthroughput over {args.files} manifests (median of {args.rounds} alternating runs)"
        )
        print(
            f"  mlops-ci validate   {args.files / o:8.0f} files/s  (schema, digests, paths, names)"
        )
        print(f"  check-jsonschema    {args.files / t:8.0f} files/s  (schema only)")
        print(f"  ratio               {t / o:8.2f}x  (goal >= 4x)")

        one = folder / rel[0]
        cold_ours, cold_base = [], []
        for _ in range(max(5, args.rounds)):
            cold_ours.append(timed([str(BIN / "mlops-ci"), "validate", str(one)], folder))
            cold_base.append(timed([sys.executable, "-c", "import yaml, jsonschema"], folder))
        co, cb = statistics.median(cold_ours), statistics.median(cold_base)
        print("\ncold start, one manifest (median)")
        print(f"  mlops-ci validate FILE          {co * 1000:6.0f} ms")
        print(f'  python -c "import yaml, jsonschema" {cb * 1000:6.0f} ms')
        print(f"  ratio                           {co / cb:6.2f}x  (goal <= 3x)")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
