"""A real model (scikit-learn on iris, converted with skl2onnx) as deploy candidates and as a
build folder (`mlops-ci convert` output), for the deploy, audit and act tests."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from mlops_ci.deploy import Candidate, Provenance

#: The provenance of a deploy from a laptop (`mlops-ci run`), as the deploy tests use it.
LOCAL = Provenance(source="local", actor="tester")


@functools.cache
def iris() -> tuple[bytes, bytes, list[dict[str, float]], list[int]]:
    """(artifact bytes, ONNX bytes, two input rows, their labels), built once per process."""
    import io

    import numpy as np
    import skops.io as sio
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    onnx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    ).SerializeToString()
    buffer = io.BytesIO()
    sio.dump(model, buffer)
    rows = [X[0], X[100]]
    labels = [int(v) for v in model.predict(np.array(rows))]
    return (
        buffer.getvalue(),
        onnx,
        [{f"f{i}": float(v) for i, v in enumerate(r)} for r in rows],
        labels,
    )


def manifest(
    name: str, version: str, artifact_sha: str, *, wrong_label: bool = False
) -> dict[str, Any]:
    _, _, rows, labels = iris()
    cases = [
        {
            "name": f"row {i}",
            "input": row,
            "expect": {"label": (label + 1) % 3 if wrong_label else label},
        }
        for i, (row, label) in enumerate(zip(rows, labels, strict=True))
    ]
    return {
        "apiVersion": "mlops-ci/v1",
        "kind": "Model",
        "metadata": {"name": name, "version": version, "owners": ["@alice"], "risk": "low"},
        "spec": {
            "framework": "sklearn",
            "task": "classification",
            "artifact": {"path": "model.skops", "sha256": artifact_sha},
            "signature": {
                "inputs": [
                    {
                        "name": "input",
                        "dtype": "float32",
                        "shape": [-1, 4],
                        "columns": [f"f{i}" for i in range(4)],
                    }
                ],
                "outputs": [
                    {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
                    {
                        "name": "probabilities",
                        "dtype": "float32",
                        "shape": [-1, 3],
                        "role": "probabilities",
                    },
                ],
            },
            "tests": {"cases": cases},
            "serving": {"max_batch_size": 32, "min_replicas": 1, "max_replicas": 3},
        },
    }


def candidate(
    name: str = "iris", version: str = "1.0.0", *, salt: str = "", wrong_label: bool = False
) -> Candidate:
    """A candidate; `salt` changes the artifact bytes (a retrained model, same ONNX)."""
    artifact, onnx, _, _ = iris()
    artifact_sha = hashlib.sha256(artifact + salt.encode()).hexdigest()
    doc = manifest(name, version, artifact_sha, wrong_label=wrong_label)
    return Candidate(
        name=name,
        version=version,
        manifest_text=yaml.safe_dump(doc, sort_keys=False).encode(),
        manifest_data=copy.deepcopy(doc),
        artifact_path=f"models/{name}/model.skops",
        artifact_sha256=artifact_sha,
        onnx=onnx,
        onnx_info={
            "sha256": hashlib.sha256(onnx).hexdigest(),
            "opset": 17,
            "converter": "skl2onnx",
        },
        results={"test": {"passed": True}},
    )


def write_model(repo: Path, name: str = "iris", version: str = "1.0.0", *, salt: str = "") -> Path:
    """models/<name>/{model.yaml, model.skops} in a repository folder; returns the manifest."""
    artifact, _, _, _ = iris()
    folder = repo / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    data = artifact + salt.encode()
    (folder / "model.skops").write_bytes(data)
    doc = manifest(name, version, hashlib.sha256(data).hexdigest())
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_build(out: Path, manifest_path: Path) -> Path:
    """What `mlops-ci convert` (and test) leave in --out for that manifest."""
    _, onnx, _, _ = iris()
    doc = yaml.safe_load(manifest_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx)
    convert = {
        "schema": "mlops-ci/convert/v1",
        "passed": True,
        "model": {"name": doc["metadata"]["name"], "version": doc["metadata"]["version"]},
        "artifact": {"path": "model.skops", "sha256": doc["spec"]["artifact"]["sha256"]},
        "onnx": {
            "path": "model.onnx",
            "sha256": hashlib.sha256(onnx).hexdigest(),
            "opset": 17,
            "converter": "skl2onnx",
        },
    }
    (out / "convert.json").write_text(json.dumps(convert))
    (out / "test.json").write_text(
        json.dumps({"passed": True, "counts": {"pass": 2}, "checks": []})
    )
    return out


def git(repo: Path, *args: str) -> str:
    """git in `repo`, as a test author with no user configuration: its output, stripped."""
    import os
    import subprocess

    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


def tree(repo: Path, ref: str) -> dict[str, bytes]:
    """Every file of commit `ref`: path -> bytes (as tests/ghserver.py serves a commit's tree)."""
    import subprocess

    paths = git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()
    return {
        p: subprocess.run(
            ["git", "show", f"{ref}:{p}"], cwd=repo, check=True, capture_output=True
        ).stdout
        for p in paths
    }


def publish_at_once(uri: str, cands: list[Candidate], prov: Any) -> list[Any]:
    """Each candidate published into the registry at `uri` by a thread and a client of its own,
    all let go at once by a barrier: the `deploy.Published` of each, in order (the first
    error, once all have ended, is raised)."""
    import threading

    from mlops_ci import deploy
    from mlops_ci.registry import open_registry

    start = threading.Barrier(len(cands))
    done: list[Any] = [None] * len(cands)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        reg = open_registry(uri)
        start.wait()
        try:
            done[i] = deploy.publish(reg, cands[i], prov, lock_timeout_s=120)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cands))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done
