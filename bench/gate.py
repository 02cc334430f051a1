"""One `mlops-ci gate` run on a pull request with 10 models and 200 reviews, against the local
GitHub-compatible server: prints the API calls it made (by endpoint) and the wall time.

The gate re-runs on every review event, so it must stay a bounded handful of calls. Run:
    .venv/bin/python bench/gate.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ghserver import GitHubServer

from mlops_ci import cli

REPO = "acme/models"
MODELS = 10
REVIEWS = 200


def manifest(i: int, risk: str, version: str) -> str:
    return (
        "apiVersion: mlops-ci/v1\nkind: Model\nmetadata:\n"
        f"  name: model-{i}\n  version: {version}\n"
        f"  owners: ['@acme/team-{i % 3}', '@lead{i}']\n  risk: {risk}\n"
        "spec:\n  framework: onnx\n"
        f"  artifact: {{path: model.onnx, sha256: '{'0' * 64}'}}\n"
    )


def setup(server: GitHubServer) -> None:
    repo = server.add_repo(REPO)
    policy = (
        "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n"
        "  high: {approvals: 2, from_owners: true, required_teams: ['@acme/ml-governance']}\n"
    )
    base = {".mlops/policy.yaml": policy}
    head = dict(base)
    risks = ("low", "medium", "high")
    for i in range(MODELS):
        base[f"models/m{i}/model.yaml"] = manifest(i, risks[i % 3], "1.0.0")
        head[f"models/m{i}/model.yaml"] = manifest(i, risks[i % 3], "1.1.0")
        base[f"models/m{i}/model.onnx"] = f"v1-{i}"
        head[f"models/m{i}/model.onnx"] = f"v2-{i}"
    pull = repo.add_pull(7, author="carol", base_files=base, head_files=head)
    for t in range(3):
        for k in range(4):
            server.add_team_member(f"@acme/team-{t}", f"member{t}{k}")
    server.add_team_member("@acme/ml-governance", "gina")
    reviewers = [f"member{t}{k}" for t in range(3) for k in range(4)] + ["gina"]
    reviewers += [f"lead{i}" for i in range(MODELS)] + [f"watcher{j}" for j in range(7)]
    old = pull.head_sha
    pull.push()
    # 200 reviews: a long discussion (comments, changes requested, stale approvals on the old
    # push), ending with everyone's approval of the head.
    n = 0
    while n < REVIEWS - len(reviewers):
        who = reviewers[n % len(reviewers)]
        state = ("COMMENTED", "CHANGES_REQUESTED", "APPROVED")[n % 3]
        pull.add_review(who, state, commit_id=old)
        n += 1
    for who in reviewers:
        pull.add_review(who, "APPROVED")


_VARYING = re.compile(r"/(m\d+|[0-9a-f]{40}|member\d+|lead\d+|gina|watcher\d+)(?=/|$)")


def _shape(path: str) -> str:
    """The endpoint, with per-model / per-user parts folded into `*`."""
    return _VARYING.sub("/*", path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (default 5)")
    args = parser.parse_args()
    server = GitHubServer().start()
    setup(server)
    os.environ.update(server.env(repo=REPO))
    os.environ["MLOPS_CI_GITHUB_MAX_WAIT"] = "0.01"
    argv = ["gate", "--pr", "7", "--repo", REPO, "--format", "json"]
    times, calls = [], []
    code = None
    for _ in range(args.repeat + 1):  # the first run pays for imports: not timed
        server.requests.clear()
        out = StringIO()
        start = time.perf_counter()
        with redirect_stdout(out):
            code = cli.main(argv)
        times.append(time.perf_counter() - start)
        calls.append(list(server.requests))
    # And once as a user runs it: a fresh interpreter, imports included.
    start = time.perf_counter()
    cold = subprocess.run(
        [sys.executable, "-m", "mlops_ci", *argv], capture_output=True, text=True, check=False
    )
    cold_time = time.perf_counter() - start
    server.stop()
    times, calls = times[1:], calls[1:]
    per_endpoint = collections.Counter(f"{r.method} {_shape(r.path)}" for r in calls[0])
    print(f"pull request: {MODELS} models changed, {REVIEWS} reviews; exit code {code}")
    print(f"API calls per gate run: {len(calls[0])}")
    for endpoint, count in sorted(per_endpoint.items()):
        print(f"  {count:4d}  {endpoint}")
    print(
        f"wall time per gate run (in-process, {args.repeat} runs): "
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )
    print(
        f"wall time of `python -m mlops_ci gate` in a fresh process: {cold_time * 1000:.0f} ms "
        f"(exit code {cold.returncode})"
    )
    return 0 if code == 0 and cold.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
