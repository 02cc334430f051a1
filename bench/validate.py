"""Throughput and cold start of `mlops-ci validate`, against check-jsonschema, measured in one run.

    python bench/validate.py [--sizes 1000,10000] [--rounds 3]

For each size, generates N valid manifests with their artifacts and evaluation data in a
temporary folder, then alternates `mlops-ci validate DIR` with `check-jsonschema --schemafile …
FILES` (schema only: it does no digests and keeps no YAML lines for us) and prints files/s, the
ratio and mlops-ci's peak RSS. Goals: files/s kept from the smallest to the largest size
(within 1.2x), at least 8x check-jsonschema at the largest, under 200 MB. Then the cold start
of validating one file against `python -c "import yaml, jsonschema"`; goal at most 3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import corpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FRAMEWORKS = [("sklearn", "model.skops"), ("xgboost", "model.json"), ("lightgbm", "model.txt")]


def generate(folder: Path, count: int) -> list[Path]:
    (folder / ".git").mkdir()  # the repository root for path checks
    files = []
    for i in range(count):
        model = folder / "models" / f"m{i // 100:03d}" / f"model-{i:05d}"
        framework, artifact_name = FRAMEWORKS[i % len(FRAMEWORKS)]
        data = f"x,y\n{i},{i % 2}\n".encode()
        files.append(
            corpus.write_model(
                model,
                f"model-{i:05d}",
                os.urandom(4096),
                data,
                framework=framework,
                artifact_name=artifact_name,
            )
        )
    return files


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    return corpus.timed(cmd, cwd)[:3]


def compare(folder: Path, count: int, rounds: int) -> dict[str, float]:
    """Medians for mlops-ci validate and check-jsonschema over `count` generated manifests."""
    schema = ROOT / "schemas" / "model-manifest.v1.json"
    folder.mkdir()
    files = generate(folder, count)
    rel = [str(f.relative_to(folder)) for f in files]
    ours_cmd = [str(BIN / "mlops-ci"), "validate", "models"]
    theirs_cmd = [str(BIN / "check-jsonschema"), "--schemafile", str(schema), *rel]
    ours, theirs = [], []
    for r in range(rounds):
        ours.append(timed(ours_cmd, folder))
        theirs.append(timed(theirs_cmd, folder))
        print(
            f"  {count} files, round {r + 1}: mlops-ci {ours[-1][0]:.2f} s "
            f"({ours[-1][1]:.2f} CPU-s, {ours[-1][2]:.0f} MB), check-jsonschema "
            f"{theirs[-1][0]:.2f} s ({theirs[-1][1]:.2f} CPU-s)",
            flush=True,
        )
    return {
        "ours_wall": statistics.median(o[0] for o in ours),
        "ours_cpu": statistics.median(o[1] for o in ours),
        "ours_mb": max(o[2] for o in ours),
        "theirs_wall": statistics.median(t[0] for t in theirs),
        "theirs_cpu": statistics.median(t[1] for t in theirs),
        "files": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        found = {n: compare(Path(tmp) / str(n), n, args.rounds) for n in sizes}
        small, large = found[sizes[0]], found[sizes[-1]]
        print(f"\nthroughput, files/s (median of {args.rounds} alternating runs; wall | CPU)")
        for n, f in found.items():
            print(
                f"  {n:>6} files  mlops-ci {n / f['ours_wall']:7.0f} | {n / f['ours_cpu']:7.0f}"
                f"   check-jsonschema {n / f['theirs_wall']:6.0f} | {n / f['theirs_cpu']:6.0f}"
                f"   ratio {f['theirs_wall'] / f['ours_wall']:5.2f}x | "
                f"{f['theirs_cpu'] / f['ours_cpu']:5.2f}x   peak {f['ours_mb']:.0f} MB"
            )
        keep_wall = (small["files"] / small["ours_wall"]) / (large["files"] / large["ours_wall"])
        keep_cpu = (small["files"] / small["ours_cpu"]) / (large["files"] / large["ours_cpu"])
        print("\ngoals")
        print(
            f"  files/s at {sizes[0]} / at {sizes[-1]}: {keep_wall:.2f}x wall, {keep_cpu:.2f}x CPU"
            "  (goal <= 1.2x: no slow-down as the repository grows)"
        )
        wall_ratio = large["theirs_wall"] / large["ours_wall"]
        print(
            f"  vs check-jsonschema at {sizes[-1]}: {wall_ratio:.2f}x"
            f" wall, {large['theirs_cpu'] / large['ours_cpu']:.2f}x CPU  (goal >= 8x; mlops-ci"
            " also checks digests, paths and names)"
        )
        print(f"  peak RSS at {sizes[-1]}: {large['ours_mb']:.0f} MB  (goal < 200 MB)")

        folder = Path(tmp) / str(sizes[0])
        one = next(iter(sorted((folder / "models").rglob("model.yaml"))))
        cold_ours, cold_base = [], []
        for _ in range(max(5, args.rounds)):
            cold_ours.append(timed([str(BIN / "mlops-ci"), "validate", str(one)], folder)[0])
            cold_base.append(timed([sys.executable, "-c", "import yaml, jsonschema"], folder)[0])
        co, cb = statistics.median(cold_ours), statistics.median(cold_base)
        print("\ncold start, one manifest (median)")
        print(f"  mlops-ci validate FILE          {co * 1000:6.0f} ms")
        print(f'  python -c "import yaml, jsonschema" {cb * 1000:6.0f} ms')
        print(f"  ratio                           {co / cb:6.2f}x  (goal <= 3x)")


if __name__ == "__main__":
    main()
