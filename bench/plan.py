"""Does `mlops-ci plan` scale with the change, not with the repository? Measured in one run.

    .venv/bin/python bench/plan.py [--sizes 1000,10000] [--rounds 3]

For each size, generates a git repository of N models (copies of the corpus model, with valid
digests), then times `mlops-ci plan` (wall and peak RSS, per child process) over commits that
change 1, 10 and 100 models, and one that renames 10 model folders, beside `git diff
--name-status` on the same range, the floor any planner pays. Prints the goals and the ratios:
one changed model in the largest repository under 0.5 s and 100 MB; flat (within 1.5x) from the
smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=_ENV
    ).stdout.strip()


def write_model(folder: Path, name: str, version: str, artifact: bytes) -> None:
    corpus.write_model(
        folder, name, artifact, f"x,y\n{len(artifact)},1\n".encode(), version=version
    )


def folder_of(i: int) -> str:
    return f"models/g{i // 100:03d}/model-{i:05d}"


def generate(repo: Path, count: int) -> dict[str, str]:
    """A repository of `count` models; returns the commits named by what they change."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(count):
        write_model(repo / folder_of(i), f"model-{i:05d}", "1.0.0", os.urandom(256))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    commits = {"base": git(repo, "rev-parse", "HEAD")}
    for changed in (1, 10, 100):
        git(repo, "checkout", "-q", "-B", f"change-{changed}", commits["base"])
        for i in range(0, count, count // changed)[:changed]:
            write_model(repo / folder_of(i), f"model-{i:05d}", "1.1.0", os.urandom(256))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"change {changed}")
        commits[f"{changed} changed"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-B", "rename", commits["base"])
    for i in range(0, count, count // 10)[:10]:
        git(repo, "mv", folder_of(i), folder_of(i) + "-moved")
    git(repo, "commit", "-q", "-m", "rename 10")
    commits["10 renamed"] = git(repo, "rev-parse", "HEAD")
    return commits


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, float, str]:
    return corpus.timed(cmd, cwd, ok=(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[int, str], tuple[float, float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            repo = Path(tmp) / f"repo-{size}"
            started = time.perf_counter()
            commits = generate(repo, size)
            print(f"generated {size} models in {time.perf_counter() - started:.1f} s", flush=True)
            for what, head in commits.items():
                if what == "base":
                    continue
                ours = [str(BIN / "mlops-ci"), "plan", "--repo", ".", "--base", commits["base"]]
                ours += ["--head", head, "--format", "json"]
                floor = ["git", "diff", "--name-status", commits["base"], head]
                walls, cpus, peaks, floors = [], [], [], []
                for _ in range(args.rounds):
                    wall, cpu, peak, out = measure(ours, repo)
                    walls.append(wall)
                    cpus.append(cpu)
                    peaks.append(peak)
                    floors.append(measure(floor, repo)[0])
                doc = json.loads(out)
                n = len(doc["matrix"]["include"])
                statuses = sorted({m["status"] for m in doc["matrix"]["include"]})
                peak = max(peaks)
                results[(size, what)] = (
                    statistics.median(walls),
                    peak,
                    statistics.median(floors),
                    statistics.median(cpus),
                )
                w, _, f, c = results[(size, what)]
                print(
                    f"  {size:>6} models, {what:<11}: plan {w * 1000:6.0f} ms ({c * 1000:4.0f} "
                    f"CPU-ms), {peak:3.0f} MB peak,"
                    f" {n:3} {'/'.join(statuses)}; git diff --name-status {f * 1000:5.0f} ms",
                    flush=True,
                )
    small, large = sizes[0], sizes[-1]
    one_wall, one_peak, _, one_cpu = results[(large, "1 changed")]
    flat = one_wall / results[(small, "1 changed")][0]
    flat_cpu = one_cpu / results[(small, "1 changed")][3]
    print(f"\ngoals (median of {args.rounds} runs, wall time includes Python's start-up)")
    print(f"  one changed model in {large}: {one_wall:.3f} s, {one_cpu:.3f} CPU-s (goal < 0.5 s)")
    print(f"  its peak RSS:                 {one_peak:.0f} MB (goal < 100 MB)")
    print(
        f"  {large} / {small} models, one changed: {flat:.2f}x wall, {flat_cpu:.2f}x CPU"
        " (goal <= 1.5x)"
    )
    for what in ("10 changed", "100 changed", "10 renamed"):
        ratio = results[(large, what)][3] / one_cpu
        print(f"  {what:<11} / 1 changed at {large}: {ratio:.2f}x CPU (grows with the change)")
    print(
        f"  plan / git diff --name-status at {large}, one changed: "
        f"{one_wall / results[(large, '1 changed')][2]:.1f}x"
    )


if __name__ == "__main__":
    main()
