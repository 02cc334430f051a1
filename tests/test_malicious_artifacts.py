"""Malicious model artifacts: no payload ever runs, and the refusal says what was found.

Every payload would create a marker file. Control tests prove that each kind of payload is live
(loading it the unsafe way, in a child process, does create the marker); the refusal tests then
assert that mlops-ci's loaders refuse it with a clear message and the marker never appears.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlops_ci import frameworks
from mlops_ci.digest import sha256_file
from mlops_ci.errors import CheckFailed


class Payload:
    """Pickles to `func(*args)`: what an attacker's __reduce__ does."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def os_system(marker: Path) -> Payload:
    return Payload(os.system, f"touch {marker}")


def builtin_eval(marker: Path) -> Payload:
    return Payload(eval, f"open({str(marker)!r}, 'w').close()")


def subprocess_call(marker: Path) -> Payload:
    return Payload(subprocess.call, ["touch", str(marker)])


def partial_gadget(marker: Path) -> Payload:
    # functools.partial hides the dangerous callable one level down
    return Payload(functools.partial(os.system, f"touch {marker}"))


def getattr_import_gadget(marker: Path) -> bytes:
    """getattr(__import__('os'), 'system')('touch marker'), hand-written in protocol 0."""
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch "
        + str(marker).encode()
        + b"'\ntR."
    )


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "os.system": lambda m: pickle.dumps(os_system(m), protocol=4),
    "eval": lambda m: pickle.dumps(builtin_eval(m), protocol=2),
    "subprocess": lambda m: pickle.dumps(subprocess_call(m), protocol=4),
    "functools.partial": lambda m: pickle.dumps(partial_gadget(m), protocol=4),
    "getattr/__import__": getattr_import_gadget,
    "os.system protocol 0": lambda m: pickle.dumps(os_system(m), protocol=0),
}


def run_unsafely(code: str) -> None:
    """Run `code` in a child process: how a naive loader would treat the file."""
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)


_NAIVE_LOOP = """
import json, os, sys
import torch
for line in sys.stdin:
    job = json.loads(line)
    saved = dict(os.environ)
    os.environ.update(job["env"])
    try:
        exec(job["code"], {"torch": torch})
    except BaseException:
        pass
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print("<<done>>", flush=True)
"""


class NaiveTorch:
    """One child process with torch imported that loads files the naive way on request: the
    controls share it instead of paying torch's import once each."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", _NAIVE_LOOP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self, code: str, **env: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"code": code, "env": env}) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.strip() == "<<done>>":
                return
        raise RuntimeError("the naive torch process died")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def naive_torch() -> Any:
    runner = NaiveTorch()
    yield runner
    runner.close()


def load(framework: str, path: Path, fmt: str, trusted: tuple[str, ...] = ()) -> Any:
    artifact = frameworks.Artifact(path, sha256_file(path), fmt, trusted)
    return frameworks.get(framework).load(artifact)


# --- the payloads are live ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOADS)
def test_control_each_pickle_payload_runs_when_loaded_with_plain_pickle(
    kind: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(PAYLOADS[kind](marker))
    run_unsafely(f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())")
    assert marker.exists(), f"the {kind} payload is not live, so the refusal tests prove nothing"


# --- pickles under a model's name ----------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize(
    ("framework", "suffix", "fmt"),
    [
        ("sklearn", ".skops", "skops"),
        ("pytorch", ".pt", "torchscript"),
        ("pytorch", ".pt2", "torch-export"),
    ],
)
def test_pickle_renamed_as_a_model_is_refused_without_running(
    kind: str, framework: str, suffix: str, fmt: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(CheckFailed) as info:
        load(framework, path, fmt)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message
    assert "Pickle files are refused" in message and "skops" in message


def test_joblib_file_renamed_skops_is_refused(tmp_path: Path) -> None:
    import joblib

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    joblib.dump(os_system(marker), path)
    with pytest.raises(CheckFailed, match="the file is a pickle stream"):
        load("sklearn", path, "skops")
    assert not marker.exists()


# --- skops with types that are not trusted -------------------------------------------------------


class MarkerOnLoad:
    """A class whose __setstate__ runs code: skops calls it when it rebuilds the object."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def test_control_untrusted_skops_type_runs_code_when_trusted_blindly(tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    sio.dump(MarkerOnLoad(str(marker)), path)
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.exists()


def test_skops_file_with_an_untrusted_type_is_refused_with_the_fix(tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    sio.dump(MarkerOnLoad(str(marker)), path)
    with pytest.raises(CheckFailed) as info:
        load("sklearn", path, "skops")
    assert not marker.exists()
    message = str(info.value)
    assert f"{MarkerOnLoad.__module__}.MarkerOnLoad" in message
    assert "trusted_types in .mlops/policy.yaml" in message


@pytest.mark.parametrize("func", [os.system, eval, subprocess.call])
def test_skops_transformer_holding_a_dangerous_function_is_refused(
    func: Callable[..., Any], tmp_path: Path
) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=func), path)
    with pytest.raises(CheckFailed, match="not trusted") as info:
        load("sklearn", path, "skops")
    assert func.__name__ in str(info.value)


def file_reading_text_model(kind: str, path: Path) -> Path:
    """A text regressor, all of it types skops trusts by default, whose vectorizer opens the
    file each input names (`input='filename'`) instead of reading the input as the text.
    "hidden": set only on the fitted ColumnTransformer's `transformers_`, which predict uses,
    while the parameters (`transformers`) a reviewer's get_params() shows stay clean."""
    import pandas as pd
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import (
        CountVectorizer,
        HashingVectorizer,
        TfidfVectorizer,
    )
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    docs = ["aa bb", "bb cc", "cc dd aa", "dd dd"]
    vectorizers = {"count": CountVectorizer, "tfidf": TfidfVectorizer}
    vectorizers |= {"hashing": lambda: HashingVectorizer(n_features=16)}
    if kind == "hidden":
        columns = ColumnTransformer([("text", CountVectorizer(), "text")])
        model = make_pipeline(columns, LinearRegression())
        model.fit(pd.DataFrame({"text": docs}), [1.0, 2.0, 3.0, 4.0])
    else:
        model = make_pipeline(vectorizers[kind](), LinearRegression())
        model.fit(docs, [1.0, 2.0, 3.0, 4.0])
    vectorizer_of(model, kind).input = "filename"
    sio.dump(model, path)
    return path


def vectorizer_of(model: Any, kind: str) -> Any:
    first = model.steps[0][1]
    return first.transformers_[0][1] if kind == "hidden" else first


@pytest.mark.parametrize("kind", ["count", "tfidf", "hashing", "hidden"])
def test_control_skops_text_model_reads_the_files_its_inputs_name(
    kind: str, tmp_path: Path
) -> None:
    import pandas as pd
    import skops.io as sio

    path = file_reading_text_model(kind, tmp_path / "model.skops")
    assert sio.get_untrusted_types(file=path) == []  # nothing to trust: skops loads it as is
    model = sio.load(path)
    secret = tmp_path / "secret.txt"
    secret.write_text("dd dd dd aa")
    rows = [str(secret), str(tmp_path / "absent")]
    x: Any = pd.DataFrame({"text": rows}) if kind == "hidden" else rows
    with pytest.raises(FileNotFoundError, match="absent"):
        model.predict(x)
    named = model.predict(x[:1])
    # what the model predicts for the path is what it predicts for the file's content
    vectorizer_of(model, kind).input = "content"
    as_text = ["dd dd dd aa"]
    assert named == pytest.approx(
        model.predict(pd.DataFrame({"text": as_text}) if kind == "hidden" else as_text)
    )
    assert named != pytest.approx(model.predict(x[:1]))


def with_nodes(tree: Any, edit: Callable[[Any], None], n_features: int | None = None) -> Any:
    """A copy of a fitted sklearn Tree with its node array edited (and its width changed)."""
    from sklearn.tree._tree import Tree

    state = tree.__getstate__()
    state["nodes"] = state["nodes"].copy()
    edit(state["nodes"])
    copy = Tree(n_features or tree.n_features, tree.n_classes, tree.n_outputs)
    copy.__setstate__(state)
    return copy


def crafted_tree_model(kind: str, path: Path) -> Path:
    """A tree model, nothing in it off skops' trusted list, whose arrays sklearn's compiled
    code follows without bounds checks."""
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.tree import DecisionTreeRegressor

    x = np.random.default_rng(0).normal(size=(200, 3))
    y = x[:, 0] * 2
    model: Any
    if kind == "boosting shape":  # 64 trees per stage for a model that predicts 1 value
        model = GradientBoostingRegressor(n_estimators=20).fit(x, y)
        model.estimators_ = np.repeat(model.estimators_, 64, axis=1)
    elif kind == "boosting width":  # one tree reads 10**9 columns of the model's 3
        model = GradientBoostingRegressor(n_estimators=20).fit(x, y)
        second = model.estimators_[1, 0]  # the rows are checked against the first tree only
        second.tree_ = with_nodes(
            second.tree_, lambda n: n["feature"].__setitem__(0, 10**9 - 1), n_features=10**9
        )
        second.n_features_in_ = 10**9
    elif kind.startswith("histogram"):  # the second iteration's tree of a fitted model
        model = HistGradientBoostingRegressor(max_iter=5).fit(x, y)
        nodes = model._predictors[1][0].nodes
        if kind == "histogram child":
            nodes["left"][0] = nodes["right"][0] = 10**9
        elif kind == "histogram width":
            nodes["feature_idx"][0] = 10**9
        else:
            nodes["is_categorical"][0], nodes["bitset_idx"][0] = 1, 10**9
    elif kind.startswith(("kd_tree", "ball_tree")):  # a neighbour index's arrays
        algorithm, _, what = kind.partition(" ")
        model = KNeighborsRegressor(algorithm=algorithm).fit(x, y)
        state = list(model._tree.__getstate__())
        state[1], state[2] = state[1].copy(), state[2].copy()  # idx_array, node_data
        if what == "points":
            state[1][:] = 10**9
        elif what == "ends":
            state[2]["idx_end"][state[2]["is_leaf"] == 1] = 10**9
        else:
            state[2]["is_leaf"][:] = 0
        model._tree.__setstate__(tuple(state))
    elif kind == "tree width":  # the tree reads 10**9 columns of the estimator's 3
        model = DecisionTreeRegressor(max_depth=3).fit(x, y)
        model.tree_ = with_nodes(
            model.tree_, lambda n: n["feature"].__setitem__(0, 10**9 - 1), n_features=10**9
        )
    else:
        model = DecisionTreeRegressor(max_depth=3).fit(x, y)
        edits = {
            "feature": lambda n: n["feature"].__setitem__(0, 10**9),
            "child": lambda n: [n[f].__setitem__(0, 10**9) for f in ("left_child", "right_child")],
            "cycle": lambda n: [n[f].__setitem__(0, 0) for f in ("left_child", "right_child")],
        }
        model.tree_ = with_nodes(model.tree_, edits[kind])
    sio.dump(model, path)
    return path


TREE_ATTACKS = {
    "feature": r"\(Tree\) splits node 0 on feature 1000000000 of 3",
    "child": r"\(Tree\) has node 0 whose left child is 1000000000 of \d+",
    "cycle": r"\(Tree\) has node 0 whose left child is 0 of \d+",
    "tree width": r"\(DecisionTreeRegressor\) takes 3 features but its tree reads 1000000000",
    "boosting width": r"takes 3 features but its tree 1 takes 1000000000",
    "histogram child": r"\(TreePredictor\) has node 0 whose left child is 1000000000 of \d+",
    "histogram width": r"takes 3 features but a tree splits on a feature beyond them",
    "histogram bitset": r"\(TreePredictor\) has a categorical split whose bitset it does not hold",
    "kd_tree points": r"\(KDTree\) indexes points outside its 200 data points",
    "ball_tree points": r"\(BallTree\) indexes points outside its 200 data points",
    "kd_tree ends": r"\(KDTree\) has a node whose points lie outside its 200 data points",
    "kd_tree children": r"\(KDTree\) has a node whose children lie outside its \d+ nodes",
    "boosting shape": r"holds trees of shape \[20, 64\] for 1 outputs",
}


def _crashes_or_hangs(code: str, *, hangs: bool, timeout_s: float) -> None:
    """Run `code` (which prints 'finished' at its end) in a child: it must be killed by a signal
    (SIGSEGV reading out of bounds, SIGABRT on a heap it overwrote), or, when `hangs`, never
    finish (a genuine model answers in milliseconds)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=8 if hangs else timeout_s,
        )
    except subprocess.TimeoutExpired:
        assert hangs
        return
    assert done.returncode < 0 and "finished" not in done.stdout, (done.returncode, done.stderr)


@pytest.mark.parametrize("kind", TREE_ATTACKS)
def test_control_crafted_skops_tree_crashes_or_hangs_the_process_that_predicts(
    kind: str, tmp_path: Path
) -> None:
    path = crafted_tree_model(kind, tmp_path / "model.skops")
    code = (
        "import numpy as np, skops.io as sio\n"
        f"path = {str(path)!r}\n"
        "model = sio.load(path, trusted=sio.get_untrusted_types(file=path))\n"
        "x = np.random.default_rng(1).normal(size=(20000, 3))\n"
        "for _ in range(20):\n"
        "    model.predict(x)\n"
        "print('finished')\n"
    )
    _crashes_or_hangs(code, hangs=kind == "cycle", timeout_s=120)


@pytest.mark.parametrize("kind", TREE_ATTACKS)
def test_crafted_skops_tree_is_refused(kind: str, tmp_path: Path) -> None:
    path = crafted_tree_model(kind, tmp_path / "model.skops")
    with pytest.raises(CheckFailed, match=TREE_ATTACKS[kind]) as info:
        load("sklearn", path, "skops")
    assert str(info.value).startswith(f"{path}: refusing to load: the model")
    assert "out of bounds or never finish" in str(info.value)


def crafted_neighbour_model(kind: str, path: Path) -> Path:
    """A neighbours model, nothing in it off skops' trusted list, whose distance code reads
    per feature from arrays the file sized for fewer: a KDTree's / BallTree's node bounds,
    the Minkowski weights of a BallTree's metric, or a brute-force Mahalanobis `VI`."""
    import numpy as np
    import skops.io as sio
    from sklearn.neighbors import KNeighborsRegressor

    width = 6000 if kind == "mahalanobis" else 50
    x = np.random.default_rng(0).normal(size=(8 if kind == "mahalanobis" else 300, width))
    y = x[:, 0] * 2
    model: Any
    if kind == "mahalanobis":  # scipy's cdist reads VI as width × width
        params = {"VI": np.eye(width)}
        model = KNeighborsRegressor(2, algorithm="brute", metric="mahalanobis")
        model.set_params(metric_params=params).fit(x, y)
        model.metric_params = model.effective_metric_params_ = {"VI": np.eye(1)}
    else:
        algorithm, _, what = kind.partition(" ")
        if what == "weights":
            model = KNeighborsRegressor(algorithm=algorithm, metric="minkowski", p=3)
            model.set_params(metric_params={"w": np.ones(width)})
        else:
            model = KNeighborsRegressor(algorithm=algorithm, leaf_size=2)
        model.fit(x, y)
        state = list(model._tree.__getstate__())
        if what == "weights":  # the metric's weights: one, for 50 features
            metric = state[11]
            metric.__setstate__((*metric.__getstate__()[:1], np.ones(1), np.zeros((1, 1))))
        else:  # one bound of one feature, for every node and feature
            state[3] = np.zeros((len(state[3]), 1, 1))
        model._tree.__setstate__(tuple(state))
    sio.dump(model, path)
    return path


NEIGHBOUR_ATTACKS = {
    "kd_tree bounds": r"\(KDTree\) holds node bounds of shape \[2, 1, 1\] for \d+ nodes of 50",
    "ball_tree bounds": r"\(BallTree\) holds node bounds of shape \[1, 1, 1\] for \d+ nodes",
    "ball_tree weights": r"\(BallTree\) weighs 1 features of 50 in its MinkowskiDistance",
    "mahalanobis": (
        r"\(KNeighborsRegressor\) has metric_params\['VI'\] of shape \[1, 1\] for its 6000"
    ),
}


@pytest.mark.parametrize("kind", [k for k in NEIGHBOUR_ATTACKS if k != "mahalanobis"])
def test_control_crafted_neighbour_index_answers_from_memory_outside_its_arrays(
    kind: str, tmp_path: Path
) -> None:
    """The index reads bounds / weights past their arrays: its neighbours are not those a
    brute-force search finds with the model's own (intact) parameters, or it crashes."""
    path = crafted_neighbour_model(kind, tmp_path / "model.skops")
    code = (
        "import numpy as np, skops.io as sio\n"
        "from sklearn.base import clone\n"
        f"path = {str(path)!r}\n"
        "model = sio.load(path, trusted=sio.get_untrusted_types(file=path))\n"
        "brute = clone(model).set_params(algorithm='brute').fit(model._fit_X, model._y)\n"
        "x = np.random.default_rng(1).normal(size=(300, 50))\n"
        "print('wrong', int((~np.isclose(model.predict(x), brute.predict(x))).sum()))\n"
    )
    # what lies past the arrays is whatever the heap holds: a BallTree's answers depend on it
    # (KDTree's are wrong every time), so up to three fresh processes get their chance
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        wrong = re.search(r"wrong (\d+)", done.stdout)
        if done.returncode < 0 or (wrong and int(wrong.group(1)) > 0):
            return
    pytest.fail(f"the crafted index answered as a brute-force search: {done.stdout}{done.stderr}")


def test_control_mahalanobis_matrix_smaller_than_the_features_crashes_the_prediction(
    tmp_path: Path,
) -> None:
    path = crafted_neighbour_model("mahalanobis", tmp_path / "model.skops")
    code = (
        "import numpy as np, skops.io as sio\n"
        f"path = {str(path)!r}\n"
        "model = sio.load(path, trusted=sio.get_untrusted_types(file=path))\n"
        "model.predict(np.random.default_rng(1).normal(size=(20, 6000)))\n"
        "print('finished')\n"
    )
    _crashes_or_hangs(code, hangs=False, timeout_s=120)


@pytest.mark.parametrize("kind", NEIGHBOUR_ATTACKS)
def test_crafted_neighbour_metric_or_bounds_are_refused(kind: str, tmp_path: Path) -> None:
    path = crafted_neighbour_model(kind, tmp_path / "model.skops")
    with pytest.raises(CheckFailed, match=NEIGHBOUR_ATTACKS[kind]) as info:
        load("sklearn", path, "skops")
    assert str(info.value).startswith(f"{path}: refusing to load: the model")
    assert "out of bounds or never finish" in str(info.value)


def test_genuine_tree_models_pass_the_state_checks(tmp_path: Path) -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    x = np.random.default_rng(0).normal(size=(200, 4))
    y = (x[:, 0] * 3).astype(int) % 3
    models = [
        DecisionTreeClassifier(max_leaf_nodes=8),
        RandomForestClassifier(n_estimators=5),
        ExtraTreesClassifier(n_estimators=5),
        GradientBoostingClassifier(n_estimators=5),
        HistGradientBoostingClassifier(max_iter=5, categorical_features=[3]),
        IsolationForest(n_estimators=5, max_features=2),
        KNeighborsClassifier(algorithm="kd_tree"),
        KNeighborsClassifier(algorithm="ball_tree", leaf_size=3),
        KNeighborsClassifier(algorithm="kd_tree", metric="chebyshev"),
        KNeighborsClassifier(algorithm="ball_tree", metric="minkowski", p=3),
        KNeighborsClassifier(algorithm="ball_tree", metric_params={"w": np.arange(1.0, 5.0)}),
        KNeighborsClassifier(
            algorithm="brute", metric="mahalanobis", metric_params={"VI": np.eye(4)}
        ),
        KNeighborsClassifier(
            algorithm="ball_tree", metric="seuclidean", metric_params={"V": np.ones(4)}
        ),
    ]
    for i, model in enumerate(models):
        fit_x = x.copy()
        if isinstance(model, HistGradientBoostingClassifier):
            fit_x[:, 3] = np.abs(fit_x[:, 3] * 3).astype(int)
        model.fit(fit_x, y)
        path = tmp_path / f"{i}.skops"
        sio.dump(model, path)
        loaded = load("sklearn", path, "skops", tuple(sio.get_untrusted_types(file=path)))
        assert np.array_equal(loaded.predict(fit_x), model.predict(fit_x))


@pytest.mark.parametrize("kind", ["count", "tfidf", "hashing", "hidden"])
def test_skops_text_model_that_reads_files_is_refused(kind: str, tmp_path: Path) -> None:
    path = file_reading_text_model(kind, tmp_path / "model.skops")
    with pytest.raises(CheckFailed, match=r"input='filename'") as info:
        load("sklearn", path, "skops")
    message = str(info.value)
    assert message.startswith(f"{path}: refusing to load: ")
    assert "opens the file each input names" in message


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(
        ["git", "-C", str(folder), *args], env=env, check=True, capture_output=True
    )
    return done.stdout.decode().strip()


def commit_policy(repo: Path, trusted: list[str] | None) -> str:
    """Commit .mlops/policy.yaml (with `trusted_types` when given); returns the commit SHA."""
    policy = {"apiVersion": "mlops-ci/v1", "kind": "Policy", "tiers": {}}
    if trusted is not None:
        policy["trusted_types"] = trusted
    (repo / ".mlops").mkdir(exist_ok=True)
    (repo / ".mlops" / "policy.yaml").write_text(json.dumps(policy))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "policy")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q")
    return folder


def skops_calling(func: str, command: str, path: Path) -> Path:
    """A skops file whose schema asks skops to call `func(command)` while loading: what a file
    can do once its manifest (or anyone) trusts a function."""
    import skops.io as sio

    genuine = zipfile.ZipFile(io.BytesIO(sio.dumps((command,))))
    tree = json.loads(genuine.read("schema.json"))
    header = {k: tree.pop(k) for k in ("protocol", "_skops_version")}
    module, _, name = func.rpartition(".")
    schema = {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode"}
    schema |= {"content": tree, **header}
    with zipfile.ZipFile(path, "w") as out:
        for member in genuine.namelist():
            blob = json.dumps(schema) if member == "schema.json" else genuine.read(member)
            out.writestr(member, blob)
    return path


def test_control_skops_file_runs_os_system_once_it_is_trusted(tmp_path: Path) -> None:
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = skops_calling("posix.system", f"touch {marker}", tmp_path / "model.skops")
    assert sio.get_untrusted_types(file=path) == ["posix.system"]
    sio.load(path, trusted=["posix.system"])
    assert marker.exists()


def test_manifest_that_trusts_os_system_is_invalid_and_nothing_runs(tmp_path: Path) -> None:
    from mlops_ci import cli
    from mlops_ci.manifest import check_file

    marker = tmp_path / "pwned"
    path = skops_calling("posix.system", f"touch {marker}", tmp_path / "model.skops")
    manifest = tmp_path / "model.yaml"
    manifest.write_text(
        "apiVersion: mlops-ci/v1\nkind: Model\n"
        "metadata: {name: evil, version: 1.0.0, owners: ['@mallory'], risk: low}\n"
        "spec:\n  framework: sklearn\n  artifact:\n    path: model.skops\n"
        f"    sha256: {sha256_file(path)}\n    trusted_types: [posix.system]\n"
    )
    problems = [p.message for p in check_file(manifest, root=tmp_path).problems]
    moved = [p for p in problems if p.startswith("spec.artifact.trusted_types")]
    assert moved and "trusted_types in .mlops/policy.yaml" in moved[0], problems
    assert cli.main(["convert", str(manifest), "--out", str(tmp_path / "out")]) != 0
    assert not marker.exists()
    # and even a loader handed this manifest's artifact trusts nothing it names
    with pytest.raises(CheckFailed, match=r"posix\.system"):
        load("sklearn", path, "skops")
    assert not marker.exists()


def test_trusted_types_come_from_the_policy_at_the_base_commit_not_the_head(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skops.io as sio

    from mlops_ci import trust

    marker = repo / "pwned"
    base = commit_policy(repo, None)
    path = repo / "model.skops"
    sio.dump(MarkerOnLoad(str(marker)), path)
    reviewed = f"{MarkerOnLoad.__module__}.MarkerOnLoad"
    head = commit_policy(repo, [reviewed])  # the pull request trusts its own class
    # armed: a loader that believes the head-side policy runs the class's __setstate__
    load("sklearn", path, "skops", trusted=trust.trusted_types(repo, head).types)
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv(trust.POLICY_REF_ENV, base)
    assert trust.trusted_types(repo).types == ()
    with pytest.raises(CheckFailed, match="not trusted"):
        load("sklearn", path, "skops", trusted=trust.trusted_types(repo).types)
    assert not marker.exists()
    # once merged (the base now holds it), the reviewed class is honoured
    monkeypatch.setenv(trust.POLICY_REF_ENV, head)
    assert load("sklearn", path, "skops", trusted=trust.trusted_types(repo).types) is not None


def test_head_side_policy_trusting_os_system_is_never_read(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ci import trust

    marker = tmp_path / "pwned"
    base = commit_policy(repo, None)
    path = skops_calling("posix.system", f"touch {marker}", repo / "model.skops")
    # the working tree (the pull request's side) trusts os.system, uncommitted
    (repo / ".mlops" / "policy.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "mlops-ci/v1",
                "kind": "Policy",
                "tiers": {},
                "trusted_types": ["posix.system"],
            }
        )
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 1, "base": {"sha": base}}}))
    monkeypatch.delenv(trust.POLICY_REF_ENV, raising=False)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    assert trust.policy_ref() == base
    with pytest.raises(CheckFailed, match=r"posix\.system"):
        load("sklearn", path, "skops", trusted=trust.trusted_types(repo).types)
    assert not marker.exists()


def test_trusted_class_whose_code_lives_in_the_repository_is_refused(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skops.io as sio

    from mlops_ci import trust
    from mlops_ci.errors import UsageError

    package = f"features_{repo.parent.name.replace('-', '_')}"
    (repo / package).mkdir()
    (repo / package / "__init__.py").write_text("")
    harmless = "class Bander:\n    pass\n"
    (repo / package / "bands.py").write_text(harmless)
    base = commit_policy(repo, [f"{package}.bands.Bander"])  # reviewed: harmless at base
    marker = repo / "pwned"
    # the pull request keeps the reviewed name and changes what it does
    (repo / package / "bands.py").write_text(
        "from pathlib import Path\n"
        "class Bander:\n"
        "    def __setstate__(self, state):\n"
        f"        Path({str(marker)!r}).touch()\n"
    )
    monkeypatch.syspath_prepend(str(repo))
    module = importlib.import_module(f"{package}.bands")
    path = repo / "model.skops"
    bander = module.Bander()
    bander.edges = [18.5, 25.0, 30.0]  # some state, which skops restores through __setstate__
    sio.dump(bander, path)
    # armed: trusting the reviewed name runs the pull request's code for it
    sio.load(path, trusted=[f"{package}.bands.Bander"])
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UsageError, match="defined in the repository itself"):
        trust.trusted_types(repo, base)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("posix.system", "is refused"),
        ("os.system", "is refused"),
        ("subprocess.Popen", "is refused"),
        ("builtins.eval", "is refused"),
        ("importlib.import_module", "is refused"),
        ("sklearn.feature_selection.chi2", "not a class"),
    ],
)
def test_policy_at_base_may_trust_classes_only(name: str, why: str, repo: Path) -> None:
    from mlops_ci import trust
    from mlops_ci.errors import UsageError

    base = commit_policy(repo, [name])
    with pytest.raises(UsageError, match=why):
        trust.trusted_types(repo, base)


# --- torch archives ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A genuine .pt2 and TorchScript archive of a tiny model, to tamper with."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    program = torch.export.export(
        model, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(folder / "model.pt2"))
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), str(folder / "model.pt"))
    return {"pt2": folder / "model.pt2", "pt": folder / "model.pt"}


def test_genuine_archives_whose_weights_start_like_a_pickle_still_load(tmp_path: Path) -> None:
    import numpy as np
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():  # first weight byte 0x80: the pickle PROTO opcode
        model[0].weight[0, 0] = float(np.frombuffer(b"\x80\x00\x80\x3f", dtype=np.float32)[0])
    program = torch.export.export(model, (torch.zeros(2, 4),))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), str(tmp_path / "model.pt"))
    weights = [
        zipfile.ZipFile(tmp_path / f).read(n)
        for f in ("model.pt2", "model.pt")
        for n in zipfile.ZipFile(tmp_path / f).namelist()
        if n.endswith(("weight_0", "data/0"))
    ]
    assert weights and all(w[:1] == b"\x80" for w in weights)
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    expected = model(x).detach()
    program = load("pytorch", tmp_path / "model.pt2", "torch-export")
    script = load("pytorch", tmp_path / "model.pt", "torchscript")
    # loaded whole: the weights that begin like a pickle are the model's own
    assert torch.equal(program.module()(x), expected)
    assert torch.equal(script(x), expected)


def rewrite_zip(
    source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], add: dict[str, bytes]
) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
        for name, data in add.items():
            dst.writestr(name, data)
    return target


def pt2_with_pickled_weight(source: Path, target: Path, payload: bytes) -> Path:
    """The weight file replaced by a pickle, and the config saying it is pickled."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return payload
        return data

    return rewrite_zip(source, target, edit, {})


def test_control_pt2_with_a_pickled_weight_runs_code_in_torch_export_load(
    torch_archives: dict[str, Path], tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(
        torch_archives["pt2"], tmp_path / "model.pt2", pickle.dumps(os_system(marker), protocol=2)
    )
    naive_torch.run(f"torch.export.load({str(evil)!r})")
    assert marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pt2_with_a_pickled_weight_payload_is_refused(
    kind: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(
        torch_archives["pt2"], tmp_path / "model.pt2", PAYLOADS[kind](marker)
    )
    with pytest.raises(CheckFailed, match=r"refusing to load: member .*weight_0") as info:
        load("pytorch", evil, "torch-export")
    assert not marker.exists()
    assert "allow-list" in str(info.value) or "bare pickle" in str(info.value)


def test_pt2_with_a_payload_inside_its_nested_torch_save_file_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("sample_inputs/model.pt"):
            return data
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as inner, zipfile.ZipFile(buffer, "w") as out:
            for info in inner.infolist():
                blob = inner.read(info)
                if info.filename.endswith("data.pkl"):
                    blob = pickle.dumps(partial_gadget(marker), protocol=2)
                out.writestr(info.filename, blob)
        return buffer.getvalue()

    evil = rewrite_zip(torch_archives["pt2"], tmp_path / "model.pt2", edit, {})
    with pytest.raises(CheckFailed) as info:
        load("pytorch", evil, "torch-export")
    assert not marker.exists()
    assert "functools.partial" in str(info.value) and "posix.system" in str(info.value)


def test_pt2_with_a_pickled_custom_object_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    prefix = zipfile.ZipFile(torch_archives["pt2"]).namelist()[0].split("/")[0]
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda _n, d: d,
        {f"{prefix}/data/constants/opaque_obj_0": pickle.dumps(os_system(marker))},
    )
    with pytest.raises(CheckFailed, match="pickled custom object"):
        load("pytorch", evil, "torch-export")
    assert not marker.exists()


def test_pt2_graph_calling_a_python_function_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if "/models/" in name and name.endswith(".json"):
            return data.replace(b'"torch.ops.aten.linear.default"', b'"torch.os.system"')
        return data

    evil = rewrite_zip(torch_archives["pt2"], tmp_path / "model.pt2", edit, {})
    assert b"torch.os.system" in zipfile.ZipFile(evil).read(
        next(n for n in zipfile.ZipFile(evil).namelist() if "/models/" in n)
    )
    with pytest.raises(CheckFailed, match=r"calls 'torch\.os\.system'"):
        load("pytorch", evil, "torch-export")


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("member", "old", "new", "refusal"),
    [
        (
            "/models/",
            b'"torch.ops.aten.linear.default"',
            b'"torch.ops.aten"',
            "calls 'torch.ops.aten'",
        ),
        ("/models/", b'"torch.ops.aten.linear.default"', DEEP, "is not JSON"),
        ("_weights_config.json", None, DEEP, "is not a payload config"),
    ],
    ids=["short operator name", "deeply nested graph", "deeply nested config"],
)
def test_pt2_with_malformed_json_is_refused_not_a_crash(
    member: str,
    old: bytes | None,
    new: bytes,
    refusal: str,
    torch_archives: dict[str, Path],
    tmp_path: Path,
) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if member in name and name.endswith(".json"):
            return new if old is None else data.replace(old, new)
        return data

    evil = rewrite_zip(torch_archives["pt2"], tmp_path / "model.pt2", edit, {})
    with pytest.raises(CheckFailed, match=re.escape(refusal)):
        load("pytorch", evil, "torch-export")


def test_control_torchscript_code_can_write_files(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = scripted_file_writer(marker, tmp_path / "model.pt")
    torch.jit.load(str(path))(torch.zeros(2))
    assert marker.exists()


def scripted_file_writer(marker: Path, path: Path) -> Path:
    import torch

    source = (
        "import torch\n"
        "class Writer(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        f"        t = torch.from_file({str(marker)!r}, True, 4)\n"
        "        return x + t.sum()\n"
    )
    namespace: dict[str, Any] = {}
    module_file = path.with_suffix(".py")
    module_file.write_text(source)  # TorchScript compiles from a real source file
    exec(compile(source, str(module_file), "exec"), namespace)
    torch.jit.save(torch.jit.script(namespace["Writer"]()), str(path))
    return path


def test_torchscript_code_that_touches_files_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = scripted_file_writer(marker, tmp_path / "model.pt")
    with pytest.raises(CheckFailed, match="uses from_file"):
        load("pytorch", path, "torchscript")
    assert not marker.exists()


def test_torchscript_with_a_payload_in_data_pkl_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    def edit(name: str, data: bytes) -> bytes:
        return (
            pickle.dumps(subprocess_call(marker), protocol=2)
            if name.endswith("/data.pkl")
            else data
        )

    evil = rewrite_zip(torch_archives["pt"], tmp_path / "model.pt", edit, {})
    # protocol 2 spells subprocess.call as commands.call (Python 2 names)
    with pytest.raises(CheckFailed, match=r"would import (subprocess|commands)\.call"):
        load("pytorch", evil, "torchscript")
    assert not marker.exists()


def rewrite_names(
    source: Path, target: Path, rename: Callable[[str], str], add: dict[str, bytes] | None = None
) -> Path:
    """The archive with every member renamed (content unchanged), plus `add`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(rename(info.filename), src.read(info))
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return target


def pt2_with_opaque_constant(source: Path, target: Path, member: str, payload: bytes) -> Path:
    """A constants config naming `opaque_obj_0` and the pickle stored as `member` (any case)."""
    prefix = zipfile.ZipFile(source).namelist()[0].split("/")[0]

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_constants_config.json"):
            entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}
            return json.dumps({"config": {"c": {**entry, "tensor_meta": None}}}).encode()
        return data

    return rewrite_zip(source, target, edit, {f"{prefix}/{member}": payload})


OPAQUE_SPELLINGS = ["data/constants/OPAQUE_OBJ_0", "DATA/Constants/opaque_obj_0"]


@pytest.mark.parametrize("member", OPAQUE_SPELLINGS)
def test_control_pt2_opaque_constant_runs_code_even_with_weights_only_forced(
    member: str, torch_archives: dict[str, Path], tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_opaque_constant(
        torch_archives["pt2"], tmp_path / "model.pt2", member, pickle.dumps(os_system(marker))
    )
    # torch.export.load hands opaque constants to a bare pickle.loads: the weights-only switch
    # that mlops-ci sets as its second wall does not cover them
    naive_torch.run(f"torch.export.load({str(evil)!r})", TORCH_FORCE_WEIGHTS_ONLY_LOAD="1")
    assert marker.exists()


@pytest.mark.parametrize("member", OPAQUE_SPELLINGS)
def test_pt2_opaque_constant_under_any_spelling_is_refused(
    member: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_opaque_constant(
        torch_archives["pt2"], tmp_path / "model.pt2", member, pickle.dumps(os_system(marker))
    )
    with pytest.raises(CheckFailed, match=r"constant 'c' \(opaque_obj_0\) is not a plain tensor"):
        load("pytorch", evil, "torch-export")
    assert not marker.exists()


@pytest.mark.parametrize("member", OPAQUE_SPELLINGS)
def test_pt2_opaque_object_member_is_refused_even_when_no_config_names_it(
    member: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    prefix = zipfile.ZipFile(torch_archives["pt2"]).namelist()[0].split("/")[0]
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda _n, d: d,
        {f"{prefix}/{member}": pickle.dumps(os_system(tmp_path / "pwned"))},
    )
    with pytest.raises(CheckFailed, match="pickled custom object"):
        load("pytorch", evil, "torch-export")


def test_pt2_pickled_weight_stored_under_another_case_is_scanned(
    torch_archives: dict[str, Path], tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(
        torch_archives["pt2"], tmp_path / "lower.pt2", pickle.dumps(os_system(marker), protocol=2)
    )
    upper = rewrite_names(evil, tmp_path / "model.pt2", lambda n: n.replace("weight_0", "WEIGHT_0"))
    # torch finds the member whatever its case: the payload is reached (and stopped only by
    # torch's own weights-only unpickler when that is forced)
    naive_torch.run(f"torch.export.load({str(upper)!r})")
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckFailed, match=r"member .*WEIGHT_0 would import posix\.system"):
        load("pytorch", upper, "torch-export")
    assert not marker.exists()


def torch_save_with_shadow_pickle(target: Path, marker: Path) -> Path:
    """A torch.save file holding a genuine data.pkl and, appended, a payload named DATA.PKL."""
    import torch

    genuine = target.with_name("genuine.pt")
    torch.save({"w": torch.ones(2)}, genuine)
    prefix = zipfile.ZipFile(genuine).namelist()[0].split("/")[0]
    payload = pickle.dumps(os_system(marker), protocol=2)
    return rewrite_names(genuine, target, lambda n: n, {f"{prefix}/DATA.PKL": payload})


def test_control_torch_load_picks_a_member_whose_name_differs_only_in_case(
    tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    evil = torch_save_with_shadow_pickle(tmp_path / "inputs.pt", marker)
    naive_torch.run(f"torch.load({str(evil)!r}, weights_only=False)")
    assert marker.exists()


def test_archive_whose_names_collide_once_case_folded_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    shadowed = torch_save_with_shadow_pickle(tmp_path / "inputs.pt", marker).read_bytes()
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda n, d: shadowed if n.endswith("sample_inputs/model.pt") else d,
        {},
    )
    with pytest.raises(CheckFailed, match=r"data\.pkl' and .*DATA\.PKL', one name once case"):
        load("pytorch", evil, "torch-export")
    prefix = zipfile.ZipFile(torch_archives["pt"]).namelist()[0].split("/")[0]
    script = rewrite_names(
        torch_archives["pt"],
        tmp_path / "model.pt",
        lambda n: n,
        {f"{prefix}/Data.Pkl": pickle.dumps(os_system(marker), protocol=2)},
    )
    with pytest.raises(CheckFailed, match="one name once case is ignored"):
        load("pytorch", script, "torchscript")
    assert not marker.exists()


def test_pt2_member_torch_could_load_but_mlops_ci_cannot_place_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    prefix = zipfile.ZipFile(torch_archives["pt2"]).namelist()[0].split("/")[0]
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda _n, d: d,
        {f"{prefix}/data/aotinductor/model/model.so": b"\x7fELF" + b"\0" * 60},
    )
    with pytest.raises(CheckFailed, match="compiled code"):
        load("pytorch", evil, "torch-export")
    odd = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "odd.pt2",
        lambda _n, d: d,
        {f"{prefix}/data/weights/model.pt": pickle.dumps(os_system(tmp_path / "pwned"))},
    )
    with pytest.raises(CheckFailed, match=r"model\.pt would import posix\.system"):
        load("pytorch", odd, "torch-export")


def upper_case_code(source: Path, target: Path) -> Path:
    """Every TorchScript code member renamed to upper case (the archive's top folder kept)."""

    def rename(name: str) -> str:
        top, _, rest = name.partition("/")
        return f"{top}/{rest.upper()}" if rest.startswith("code/") else name

    return rewrite_names(source, target, rename)


def test_control_torchscript_code_stored_in_upper_case_still_runs(
    tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    path = upper_case_code(scripted_file_writer(marker, tmp_path / "m.pt"), tmp_path / "model.pt")
    assert any(n.endswith(".PY") for n in zipfile.ZipFile(path).namelist())
    naive_torch.run(f"torch.jit.load({str(path)!r})(torch.zeros(2))")
    assert marker.exists()


def test_torchscript_code_stored_in_upper_case_is_found_and_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = upper_case_code(scripted_file_writer(marker, tmp_path / "m.pt"), tmp_path / "model.pt")
    with pytest.raises(CheckFailed, match=r"\.PY uses from_file"):
        load("pytorch", path, "torchscript")
    assert not marker.exists()


#: `torch.from_file` spelt so that the word never appears in the code: TorchScript's getattr
#: takes the operator's name as a string literal, which its parser joins and unescapes.
HIDDEN_FROM_FILE = {
    "concatenated": 'getattr(torch, "from" "_fi" "le")',
    "octal escape": 'getattr(torch, "from\\137file")',
    "split over lines": 'getattr(torch,\n      "fr"\n      "om_file")',
}


def hidden_file_writer(marker: Path, folder: Path, spelling: str) -> Path:
    """The file-writing module with `torch.from_file` in its code replaced by `spelling` (its
    debug info dropped, which only maps the code back to the original source)."""
    source = scripted_file_writer(marker, folder / "writer.pt")

    def edit(name: str, data: bytes) -> bytes | None:
        if name.endswith(".debug_pkl"):
            return None
        return data.replace(b"torch.from_file(", f"{spelling}(".encode())

    path = rewrite_zip(source, folder / "model.pt", edit, {})
    code = b"".join(zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist())
    assert b"from_file" not in code and spelling.encode() in code
    return path


@pytest.mark.parametrize("spelling", HIDDEN_FROM_FILE)
def test_control_torchscript_code_naming_an_operator_by_a_string_writes_files(
    spelling: str, tmp_path: Path, naive_torch: NaiveTorch
) -> None:
    marker = tmp_path / "pwned"
    path = hidden_file_writer(marker, tmp_path, HIDDEN_FROM_FILE[spelling])
    naive_torch.run(f"torch.jit.load({str(path)!r})(torch.zeros(2))")
    assert marker.exists()


@pytest.mark.parametrize("spelling", HIDDEN_FROM_FILE)
def test_torchscript_code_naming_a_file_operator_by_a_string_is_refused(
    spelling: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = hidden_file_writer(marker, tmp_path, HIDDEN_FROM_FILE[spelling])
    with pytest.raises(CheckFailed, match=r"code/__torch__/.*\.py uses from_file"):
        load("pytorch", path, "torchscript")
    assert not marker.exists()


def test_torchscript_code_that_is_not_python_syntax_is_refused(
    torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    evil = rewrite_zip(
        torch_archives["pt"],
        tmp_path / "model.pt",
        lambda n, d: d + b"\n  def (\n" if n.endswith(".py") else d,
        {},
    )
    with pytest.raises(CheckFailed, match=r"TorchScript code in .*\.py cannot be read"):
        load("pytorch", evil, "torchscript")


def crafted_os_system(command: str) -> bytes:
    """`os.system(command)` written opcode by opcode (protocol 2): nothing here unpickles it."""
    arg = command.encode()
    return b"".join(
        (
            pickle.PROTO + b"\x02",
            pickle.GLOBAL + b"os\nsystem\n",
            pickle.BINUNICODE + struct.pack("<I", len(arg)) + arg,
            pickle.TUPLE1,
            pickle.REDUCE,
            pickle.STOP,
        )
    )


def torch_save_with(
    target: Path, edit: Callable[[str, bytes], bytes], add: dict[str, bytes]
) -> Path:
    """A genuine torch.save archive, edited member by member, with `add` (names below its top
    folder) appended."""
    import torch

    genuine = target.with_name(f"genuine-{target.name}")
    torch.save({"w": torch.ones(2)}, genuine)
    prefix = zipfile.ZipFile(genuine).namelist()[0].split("/")[0]
    return rewrite_zip(genuine, target, edit, {f"{prefix}/{k}": v for k, v in add.items()})


def unclassified_member_payloads(tmp_path: Path, marker: Path) -> dict[str, bytes]:
    """What a torch.save archive's member that is neither data.pkl, a storage nor metadata can
    hold: a bare pickle, or a torch.save archive (torch.save inside) whose data.pkl is one."""
    bare = crafted_os_system(f"touch {marker}")
    nested = torch_save_with(
        tmp_path / "nested.pt", lambda n, d: bare if n.endswith("/data.pkl") else d, {}
    ).read_bytes()
    return {"bare pickle": bare, "nested torch.save": nested}


class RecordingPickle:
    """A pickle module for `torch.load(pickle_module=...)` whose unpickler resolves each global
    as pickle.loads would and records it, then hands back a stand-in that records the call
    instead of making it: proof of what would run, with nothing run."""

    def __init__(self) -> None:
        self.resolved: list[Any] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.__name__ = "pickle"  # torch.load reads it
        self.load = pickle.load
        recorder = self

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                recorder.resolved.append(super().find_class(module, name))
                return lambda *args: recorder.calls.append((f"{module}.{name}", args))

        self.Unpickler = Unpickler


def test_control_a_torch_save_member_nobody_classifies_would_call_os_system(
    tmp_path: Path,
) -> None:
    import torch

    marker = tmp_path / "pwned"
    payloads = unclassified_member_payloads(tmp_path, marker)
    hidden = {"extra_state": payloads["nested torch.save"]}
    carrier = torch_save_with(tmp_path / "inputs.pt", lambda _n, d: d, hidden)
    # torch's own archive reader hands the member out by name, beside the genuine data.pkl ...
    nested = bytes(torch._C.PyTorchFileReader(str(carrier)).get_record("extra_state"))
    assert nested == payloads["nested torch.save"]
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(payloads["bare pickle"])]
    assert ("GLOBAL", "os system") in ops
    # ... and torch.load of it (the naive weights_only=False) reaches os.system with the command
    recording = RecordingPickle()
    torch.load(io.BytesIO(nested), weights_only=False, pickle_module=recording)
    assert recording.resolved == [os.system]
    assert recording.calls == [("os.system", (f"touch {marker}",))]
    assert not marker.exists()


def _hidden_payload(tmp_path: Path, kind: str) -> tuple[Path, bytes]:
    """The marker an executed payload would create, and a torch.save archive whose
    unclassified member `extra_state` holds the payload (`kind`)."""
    marker = tmp_path / "pwned"
    payload = unclassified_member_payloads(tmp_path, marker)[kind]
    carrier = torch_save_with(tmp_path / "inputs.pt", lambda _n, d: d, {"extra_state": payload})
    return marker, carrier.read_bytes()


def _refusal(evil: Path, fmt: str) -> str:
    with pytest.raises(CheckFailed) as info:
        load("pytorch", evil, fmt)
    return str(info.value)


@pytest.mark.parametrize("kind", ["bare pickle", "nested torch.save"])
def test_pt2_whose_torch_save_member_hides_a_pickle_in_an_unclassified_member_is_refused(
    kind: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker, carrier = _hidden_payload(tmp_path, kind)
    evil = rewrite_zip(
        torch_archives["pt2"],
        tmp_path / "model.pt2",
        lambda n, d: carrier if n.endswith("sample_inputs/model.pt") else d,
        {},
    )
    message = _refusal(evil, "torch-export")
    assert message.startswith(f"{evil}: refusing to load: member ")
    assert "/sample_inputs/model.pt!" in message and "/extra_state" in message
    assert "would import os.system, which is not on the allow-list" in message
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["bare pickle", "nested torch.save"])
def test_torchscript_with_a_pickle_in_a_member_it_cannot_classify_is_refused(
    kind: str, torch_archives: dict[str, Path], tmp_path: Path
) -> None:
    marker, carrier = _hidden_payload(tmp_path, kind)
    # the carrier one level down: stored as a member of the TorchScript archive
    prefix = zipfile.ZipFile(torch_archives["pt"]).namelist()[0].split("/")[0]
    evil = rewrite_zip(
        torch_archives["pt"],
        tmp_path / "model.pt",
        lambda _n, d: d,
        {f"{prefix}/hidden/inputs.pt": carrier},
    )
    message = _refusal(evil, "torchscript")
    assert message.startswith(f"{evil}: refusing to load: member {prefix}/hidden/inputs.pt!")
    assert "would import os.system, which is not on the allow-list" in message
    assert not marker.exists()


def test_genuine_torch_archives_still_load(torch_archives: dict[str, Path]) -> None:
    import torch

    program = load("pytorch", torch_archives["pt2"], "torch-export")
    script = load("pytorch", torch_archives["pt"], "torchscript")
    x = torch.ones(3, 4)
    assert torch.allclose(program.module()(x), script(x))


# --- ONNX -------------------------------------------------------------------------------------


def test_onnx_model_with_external_data_outside_the_file_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])],
        [weight],
    )
    model = helper.make_model(graph)
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="../../etc/passwd")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(CheckFailed, match="external files"):
        load("onnx", path, "onnx")


def external(tensor: Any, location: str) -> Any:
    import onnx

    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=16)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return tensor


def onnx_reading_a_side_file(folder: Path, where: str) -> Path:
    """A model whose constant lives in `secret.bin` beside it, the tensor in `where`:
    a local function's body, or a sparse initializer."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    np.arange(4, dtype=np.float32).tofile(folder / "secret.bin")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    zeros = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "c")
    opsets = [helper.make_opsetid("", 17)]
    if where == "function":
        body = [
            helper.make_node("Constant", [], ["k"], value=external(zeros, "secret.bin")),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ]
        function = helper.make_function("local", "AddC", ["x"], ["y"], body, opsets)
        graph = helper.make_graph(
            [helper.make_node("AddC", ["x"], ["y"], domain="local")], "g", [x], [y]
        )
        model = helper.make_model(
            graph, functions=[function], opset_imports=[*opsets, helper.make_opsetid("local", 1)]
        )
    else:
        indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_indices")
        sparse = helper.make_sparse_tensor(external(zeros, "secret.bin"), indices, [4])
        graph = helper.make_graph(
            [helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y], sparse_initializer=[sparse]
        )
        model = helper.make_model(graph, opset_imports=opsets)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("where", ["function", "sparse"])
def test_control_onnx_external_data_is_read_by_onnxruntime(where: str, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    path = onnx_reading_a_side_file(tmp_path, where)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.zeros(4, dtype=np.float32)})
    # the output is the side file's bytes: data the artifact's digest never covered
    assert y.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("where", "named"), [("function", "function local.AddC"), ("sparse", "sparse initializer")]
)
def test_onnx_external_data_in_a_function_or_sparse_initializer_is_refused(
    where: str, named: str, tmp_path: Path
) -> None:
    path = onnx_reading_a_side_file(tmp_path, where)
    with pytest.raises(CheckFailed, match="external files") as info:
        load("onnx", path, "onnx")
    assert named in str(info.value)


def test_onnx_sparse_tensor_that_densifies_to_gigabytes_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    values = numpy_helper.from_array(np.ones(1, dtype=np.float32), "big")
    indices = numpy_helper.from_array(np.zeros(1, dtype=np.int64), "big_indices")
    sparse = helper.make_sparse_tensor(values, indices, [1 << 20, 1 << 20])  # 4 TiB dense
    graph = helper.make_graph(
        [helper.make_node("Identity", ["big"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        sparse_initializer=[sparse],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert path.stat().st_size < 1000
    with pytest.raises(CheckFailed, match="would expand when loaded"):
        load("onnx", path, "onnx")


# --- conversion options ------------------------------------------------------------------------


def torch_manifest(folder: Path, options: dict[str, Any]) -> Path:
    """A TorchScript model and a manifest whose conversion options are `options`."""
    import torch
    import yaml

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 4)), str(folder / "model.pt"))
    doc = {
        "apiVersion": "mlops-ci/v1",
        "kind": "Model",
        "metadata": {"name": "tiny", "version": "1.0.0", "owners": ["@a"], "risk": "low"},
        "spec": {
            "framework": "pytorch",
            "artifact": {"path": "model.pt", "sha256": sha256_file(folder / "model.pt")},
            "signature": {
                "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                "outputs": [
                    {"name": "y", "dtype": "float32", "shape": [-1, 3], "role": "prediction"}
                ],
            },
            "conversion": {"options": options},
        },
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(doc))
    return folder / "model.yaml"


def test_control_torch_export_option_writes_files_where_it_is_told(tmp_path: Path) -> None:
    import torch

    written = tmp_path / "written"
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    torch.onnx.export(
        model, (torch.zeros(2, 4),), dynamo=True, report=True, artifacts_dir=str(written)
    )
    assert written.is_dir() and any(written.iterdir())


def test_conversion_option_that_takes_a_path_is_refused_before_loading(tmp_path: Path) -> None:
    from mlops_ci import cli

    written = tmp_path / "written"
    manifest = torch_manifest(tmp_path, {"report": True, "artifacts_dir": str(written)})
    out = tmp_path / "out"
    assert cli.main(["convert", str(manifest), "--out", str(out)]) == 1
    report = json.loads((out / "convert.json").read_text())
    assert "artifacts_dir, report are not accepted for pytorch" in report["error"]
    assert not written.exists()


def test_allowed_conversion_options_are_checked_by_type(tmp_path: Path) -> None:
    from mlops_ci import cli

    manifest = torch_manifest(tmp_path, {"do_constant_folding": "/tmp/x"})
    out = tmp_path / "out"
    assert cli.main(["convert", str(manifest), "--out", str(out)]) == 1
    assert (
        "do_constant_folding: '/tmp/x' is not a valid value"
        in json.loads((out / "convert.json").read_text())["error"]
    )
    manifest = torch_manifest(tmp_path, {"do_constant_folding": True})
    assert cli.main(["convert", str(manifest), "--out", str(out)]) == 0


def test_digest_is_verified_before_the_loader_reads_a_byte(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    path.write_bytes(PAYLOADS["os.system"](marker))
    artifact = frameworks.Artifact(path, "0" * 64, "skops")
    with pytest.raises(CheckFailed, match="digest mismatch"):
        frameworks.get("sklearn").load(artifact)
    assert not marker.exists()


# --- XGBoost -------------------------------------------------------------------------------------


def genuine_xgboost_doc(rounds: int = 5, *, depth: int = 3) -> dict[str, Any]:
    """A genuine binary XGBoost model's JSON document (deep trees: a label they do not fit)."""
    import numpy as np
    import xgboost

    x = np.random.default_rng(0).normal(size=(300, 4))
    label = x[:, 0] > 0 if depth <= 3 else np.random.default_rng(1).random(300) > 0.5
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": depth},
        xgboost.DMatrix(x, label=label.astype(int)),
        num_boost_round=rounds,
    )
    doc: dict[str, Any] = json.loads(booster.save_raw(raw_format="json"))
    return doc


def ubj(value: Any) -> bytes:
    """UBJSON as XGBoost's reader takes it: int64 lengths, counted arrays, int64 / float64."""
    if isinstance(value, dict):
        items = b"".join(ubj_key(k) + ubj(v) for k, v in value.items())
        return b"{" + items + b"}"
    if isinstance(value, list):
        return b"[#L" + struct.pack(">q", len(value)) + b"".join(ubj(v) for v in value)
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    return b"S" + ubj_key(str(value))


def ubj_key(key: str) -> bytes:
    return b"L" + struct.pack(">q", len(key.encode())) + key.encode()


def crafted_xgboost(kind: str, path: Path) -> Path:
    """A genuine XGBoost model whose JSON points outside its own arrays (second tree), or
    whose index arrays the loader itself follows (parents, category segments, leaf sizes)."""
    doc = genuine_xgboost_doc()
    model = doc["learner"]["gradient_booster"]["model"]
    tree = model["trees"][1]
    if kind == "child":
        tree["left_children"][0] = 10**6
    elif kind == "feature":
        tree["split_indices"][0] = 10**6
    elif kind == "cycle":
        tree["left_children"][0] = tree["right_children"][0] = 0
    elif kind == "iteration_indptr":  # the first iteration starts a million trees early
        model["iteration_indptr"][0] = -(10**6)
    elif kind == "parent":  # read while loading, before anything could check the result
        tree["parents"][1] = 10**9
    elif kind == "category segment":
        tree["split_type"][0] = 1
        tree.update(categories=[1], categories_nodes=[0], categories_sizes=[3])
        tree["categories_segments"] = [10**9]
    elif kind == "vector leaves":  # the loader then reads leaf weights the trees lack
        for each in model["trees"]:
            each["tree_param"]["size_leaf_vector"] = "1000000"
    else:
        model["tree_info"][1] = 10**6
    path.write_text(json.dumps(doc))
    return path


XGBOOST_ATTACKS = {
    "child": r"tree 1 whose node 0 has children 1000000 and \d+ of \d+",
    "feature": r"tree 1 whose node 0 splits on feature 1000000 of 4",
    "cycle": r"tree 1 whose node 0 has children 0 and 0 of \d+",
    "output group": r"assigns its 5 trees to output groups outside its 1",
    "iteration_indptr": (
        r"has an iteration_indptr \(\[-1000000, 1, 2, 3, 4, 5\]\) that does not divide its "
        r"5 trees into iterations"
    ),
    "parent": r"tree 1 whose node 1 has parent 1000000000 of \d+",
    "category segment": r"tree 1 whose categorical split at node 0 lies outside its categories",
    "vector leaves": r"tree 0 with vector leaves \(size_leaf_vector 1000000\)",
}


@pytest.mark.parametrize("kind", XGBOOST_ATTACKS)
def test_control_crafted_xgboost_json_crashes_the_process_that_predicts(
    kind: str, tmp_path: Path
) -> None:
    path = crafted_xgboost(kind, tmp_path / "model.json")
    code = (
        "import numpy as np, xgboost\n"
        f"booster = xgboost.Booster(model_file={str(path)!r})\n"
        "x = np.random.default_rng(1).normal(size=(2000, 4))\n"
        "booster.predict(xgboost.DMatrix(x))\n"
        "print('finished')\n"
    )
    _crashes_or_hangs(code, hangs=False, timeout_s=60)


@pytest.mark.parametrize("kind", XGBOOST_ATTACKS)
def test_crafted_xgboost_json_is_refused(kind: str, tmp_path: Path) -> None:
    path = crafted_xgboost(kind, tmp_path / "model.json")
    with pytest.raises(CheckFailed, match=XGBOOST_ATTACKS[kind]) as info:
        load("xgboost", path, "xgboost-json")
    assert str(info.value).startswith(f"{path}: refusing to load: the model ")


def test_genuine_xgboost_models_pass_the_structure_checks(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    import xgboost

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    three = (np.abs(x[:, 0]) * 2).astype(int) % 3
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(three.astype(str))})
    cases: list[tuple[dict[str, Any], Any, Any, str]] = [
        ({"objective": "binary:logistic"}, x, (x[:, 0] > 0).astype(int), "json"),
        ({"objective": "multi:softprob", "num_class": 3}, x, three, "ubj"),
        ({"objective": "reg:squarederror", "booster": "dart"}, x, x[:, 1], "json"),
        ({"objective": "reg:squarederror", "booster": "gblinear"}, x, x[:, 1], "json"),
        ({"objective": "reg:squarederror", "max_cat_to_onehot": 1}, frame, x[:, 1], "json"),
    ]
    for i, (params, data, label, suffix) in enumerate(cases):
        matrix = xgboost.DMatrix(data, label=label, enable_categorical=True)
        booster = xgboost.train(params, matrix, num_boost_round=4)
        path = tmp_path / f"{i}.{suffix}"
        booster.save_model(str(path))
        loaded = load("xgboost", path, f"xgboost-{suffix}")
        assert np.allclose(loaded.predict(matrix), booster.predict(matrix))


def crafted_ubj(kind: str, path: Path) -> Path:
    """The 'parent' attack in XGBoost's binary format (the first tree with the second's
    parents): plainly, or hidden behind a genuine
    value of the same key, which XGBoost's UBJSON reader drops (it keeps a key's first value;
    a reader that keeps the last would check the genuine one)."""
    doc = genuine_xgboost_doc()
    tree = doc["learner"]["gradient_booster"]["model"]["trees"][1]
    crafted = [*tree["parents"][:1], 10**9, *tree["parents"][2:]]
    data = ubj(doc)
    genuine = ubj_key("parents") + ubj(tree["parents"])
    assert data.count(genuine) >= 1
    index = data.index(genuine)
    evil = ubj_key("parents") + ubj(crafted)
    data = (
        data[:index]
        + evil
        + (genuine if kind == "shadowed" else b"")
        + data[index + len(genuine) :]
    )
    path.write_bytes(data)
    return path


UBJ_ATTACKS = {
    "plain": r"tree 0 whose node 1 has parent 1000000000 of \d+",
    "shadowed": r"an object holds the key 'parents' twice",
}


@pytest.mark.parametrize("kind", UBJ_ATTACKS)
def test_control_crafted_xgboost_ubj_crashes_the_process_that_loads_it(
    kind: str, tmp_path: Path
) -> None:
    path = crafted_ubj(kind, tmp_path / "model.ubj")
    code = f"import xgboost\nxgboost.Booster(model_file={str(path)!r})\nprint('finished')\n"
    _crashes_or_hangs(code, hangs=False, timeout_s=60)


@pytest.mark.parametrize("kind", UBJ_ATTACKS)
def test_crafted_xgboost_ubj_is_refused_before_xgboost_reads_it(kind: str, tmp_path: Path) -> None:
    path = crafted_ubj(kind, tmp_path / "model.ubj")
    with pytest.raises(CheckFailed, match=UBJ_ATTACKS[kind]) as info:
        load("xgboost", path, "xgboost-ubj")
    assert str(info.value).startswith(f"{path}: refusing to load: the model ")


_MEMORY_CAPPED = """
import re, resource, numpy as np, xgboost
x = np.random.default_rng(1).normal(size=(1000, 4))
genuine = xgboost.Booster(model_file={genuine!r})
genuine.set_param({{"nthread": 1}})
genuine.predict(xgboost.DMatrix(x))
status = open("/proc/self/status").read()
size = int(re.search(r"VmSize:\\s+(\\d+)", status).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (384 << 20),) * 2)
genuine.predict(xgboost.DMatrix(x))  # a genuine model still runs within the cap
print("genuine ran", flush=True)
booster = xgboost.Booster(model_file={crafted!r})
booster.set_param({{"nthread": 1}})
booster.predict(xgboost.DMatrix(x))
print("finished")
"""


def crafted_xgboost_bomb(kind: str, folder: Path) -> tuple[Path, Path]:
    """(genuine, crafted): a model of a few kilobytes that claims gigabytes, by outputs no
    tree feeds (each row of a prediction holds one value per output) or by category bitsets
    as wide as a category XGBoost allows (2 MB per split, allocated while loading)."""
    doc = genuine_xgboost_doc(rounds=40, depth=6)
    genuine = folder / "genuine.json"
    genuine.write_text(json.dumps(doc))
    if kind == "outputs":
        doc["learner"]["learner_model_param"]["num_target"] = str(10**6)
    else:
        for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
            inner = [i for i, left in enumerate(tree["left_children"]) if left != -1]
            tree["split_type"] = [1 if i in inner else 0 for i in range(len(tree["split_type"]))]
            tree.update(categories=[2**24 - 1] * len(inner), categories_nodes=inner)
            tree.update(categories_segments=list(range(len(inner))))
            tree["categories_sizes"] = [1] * len(inner)
    crafted = folder / "model.json"
    crafted.write_text(json.dumps(doc))
    assert crafted.stat().st_size < 1 << 20
    return genuine, crafted


XGBOOST_BOMBS = {
    "outputs": r"has 1000000 outputs, but its trees feed only 1",
    "category bitsets": r"whose category bitsets would take far more memory than the file holds",
}


@pytest.mark.parametrize("kind", XGBOOST_BOMBS)
def test_control_xgboost_model_claiming_gigabytes_exhausts_memory(
    kind: str, tmp_path: Path
) -> None:
    # the child's address space is capped a little above what it uses, so the claim fails
    # there (std::bad_alloc) instead of taking the machine's memory
    genuine, crafted = crafted_xgboost_bomb(kind, tmp_path)
    code = _MEMORY_CAPPED.format(genuine=str(genuine), crafted=str(crafted))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert "genuine ran" in done.stdout, done.stderr[-2000:]
    assert "finished" not in done.stdout
    assert "bad_alloc" in done.stderr or "MemoryError" in done.stderr or done.returncode < 0


@pytest.mark.parametrize("kind", XGBOOST_BOMBS)
def test_xgboost_model_claiming_gigabytes_is_refused(kind: str, tmp_path: Path) -> None:
    _, crafted = crafted_xgboost_bomb(kind, tmp_path)
    with pytest.raises(CheckFailed, match=XGBOOST_BOMBS[kind]) as info:
        load("xgboost", crafted, "xgboost-json")
    assert str(info.value).startswith(f"{crafted}: refusing to load: the model ")


# --- LightGBM ------------------------------------------------------------------------------------


def lightgbm_lines(linear: bool = False) -> list[str]:
    """A genuine LightGBM text model's lines (linear trees: leaves that list features)."""
    import lightgbm
    import numpy as np

    x = np.random.default_rng(0).normal(size=(300, 4))
    if linear:
        params = {"objective": "regression", "linear_tree": True, "num_leaves": 4}
        data = lightgbm.Dataset(x, x[:, 1] * 2 + x[:, 0])
    else:
        params = {"objective": "binary", "num_leaves": 4}
        data = lightgbm.Dataset(x, (x[:, 0] > 0).astype(int))
    booster = lightgbm.train({**params, "verbose": -1}, data, 5)
    lines: list[str] = booster.model_to_string().splitlines()
    return lines


def with_tree_sizes(lines: list[str]) -> str:
    """The model text with `tree_sizes` recomputed, as LightGBM writes it: each tree's bytes
    (LightGBM finds trees by these sizes, and one that lands elsewhere aborts the process)."""
    text = "\n".join(lines) + "\n"
    starts = [m.start() for m in re.finditer(r"(?m)^Tree=", text)]
    ends = [*starts[1:], text.index("end of trees")]
    sizes = " ".join(str(len(text[a:b].encode())) for a, b in zip(starts, ends, strict=True))
    return re.sub(r"(?m)^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1)


def crafted_lightgbm(kind: str, path: Path) -> Path:
    """A genuine LightGBM text model whose first tree points outside its own arrays, hides
    a crafted value from a parser that reads the text differently from LightGBM, or whose
    header contradicts its trees."""
    lines = lightgbm_lines(linear=kind == "linear feature")

    def index(key: str, tree: int = 0) -> int:  # the line of `key` in tree `tree`
        trees = [i for i, line in enumerate(lines) if line.startswith("Tree=")]
        return next(i for i in range(trees[tree], len(lines)) if lines[i].startswith(f"{key}="))

    def first(key: str, value: str, tree: int = 0) -> None:  # the first value of `key`
        i = index(key, tree)
        lines[i] = f"{key}={' '.join([value, *lines[i].split('=', 1)[1].split()[1:]])}"

    if kind == "child":  # far enough that no mapping is there (10**6 read a mapped page once)
        first("left_child", "1000000000")
    elif kind == "leaf":
        first("left_child", "-1000000000")
    elif kind == "feature":
        first("split_feature", "1000000")
    elif kind == "cycle":
        first("left_child", "0")
        first("right_child", "0")
    elif kind == "linear feature":  # tree 1's first leaf adds 10**8th feature of the row
        first("leaf_features", "100000000", tree=1)
    elif kind == "objective classes":  # softmax over 10**5 scores, in a buffer for one
        i = next(i for i, line in enumerate(lines) if line.startswith("objective="))
        lines[i] = "objective=multiclass num_class:100000"
    elif kind == "no classes":  # trees per iteration divide the tree count
        lines[lines.index("num_class=1")] = "num_class=0"
        lines[lines.index("num_tree_per_iteration=1")] = "num_tree_per_iteration=0"
    elif kind == "tab":  # Python splits on a tab, LightGBM reads 0 for every later child
        i = index("left_child")
        lines[i] = lines[i].replace(" ", "\t", 1)
    else:  # a cycle LightGBM reads, then the genuine value where only a lenient parser looks
        i = index("left_child")
        genuine, lines[i] = lines[i], "left_child=0 -1 -2"
        end = lines.index("", i)
        if kind == "line 23":  # LightGBM reads 22 lines of a tree at most
            tree_lines = end - index("num_leaves")
            lines[end:end] = [f"pad{n}=0" for n in range(22 - tree_lines)] + [genuine]
        else:  # "blank line": a tree ends at its first empty line
            lines[end + 1 : end + 1] = [genuine]
    path.write_text(with_tree_sizes(lines))
    return path


LIGHTGBM_ATTACKS = {
    "child": r"tree 0 whose node 0 has child 1000000000 of 3 nodes",
    "leaf": r"tree 0 whose node 0 has child -1000000000 of 3 nodes",
    "feature": r"tree 0 whose node 0 splits on feature 1000000 of 4",
    "cycle": r"tree 0 whose node 0 has child 0 of 3 nodes",
    "linear feature": r"tree 1 whose linear leaves read feature 100000000 of 4",
    "objective classes": r"has an objective \(multiclass num_class:100000\) for another number",
    "no classes": r"has 0 classes",
    "tab": r"cannot be checked: left_child holds something other than integers",
    "line 23": r"tree 0 whose node 0 has child 0 of 3 nodes",
    "blank line": r"tree 0 whose node 0 has child 0 of 3 nodes",
}
#: The attacks that make LightGBM loop forever rather than crash.
LIGHTGBM_HANGS = {"cycle", "tab", "line 23", "blank line"}


@pytest.mark.parametrize("kind", LIGHTGBM_ATTACKS)
def test_control_crafted_lightgbm_model_kills_or_hangs_the_process_that_predicts(
    kind: str, tmp_path: Path
) -> None:
    path = crafted_lightgbm(kind, tmp_path / "model.txt")
    code = (
        "import numpy as np, lightgbm\n"
        f"booster = lightgbm.Booster(model_file={str(path)!r})\n"
        "booster.predict(np.random.default_rng(1).normal(size=(2000, 4)))\n"
        "print('finished')\n"
    )
    _crashes_or_hangs(code, hangs=kind in LIGHTGBM_HANGS, timeout_s=60)


@pytest.mark.parametrize("kind", LIGHTGBM_ATTACKS)
def test_crafted_lightgbm_model_is_refused(kind: str, tmp_path: Path) -> None:
    path = crafted_lightgbm(kind, tmp_path / "model.txt")
    with pytest.raises(CheckFailed, match=LIGHTGBM_ATTACKS[kind]) as info:
        load("lightgbm", path, "lightgbm-text")
    assert str(info.value).startswith(f"{path}: refusing to load: the model ")


def test_control_lightgbm_tree_sizes_off_by_one_abort_the_process_that_loads(
    tmp_path: Path,
) -> None:
    # LightGBM finds trees by the header's byte sizes, in parallel threads, where a tree it
    # cannot read ends the process (std::terminate) instead of raising
    text = with_tree_sizes(lightgbm_lines())
    sizes = re.search(r"(?m)^tree_sizes=(\d+)", text)
    assert sizes
    path = tmp_path / "model.txt"
    path.write_text(text.replace(sizes.group(0), f"tree_sizes={int(sizes.group(1)) + 1}", 1))
    code = f"import lightgbm\nlightgbm.Booster(model_file={str(path)!r})\nprint('finished')\n"
    _crashes_or_hangs(code, hangs=False, timeout_s=60)


def test_lightgbm_loads_the_text_it_checked_tree_by_tree_whatever_tree_sizes_says(
    tmp_path: Path,
) -> None:
    import lightgbm
    import numpy as np

    text = with_tree_sizes(lightgbm_lines())
    sizes = re.search(r"(?m)^tree_sizes=(\d+)", text)
    assert sizes
    path = tmp_path / "model.txt"
    path.write_text(text.replace(sizes.group(0), f"tree_sizes={int(sizes.group(1)) + 1}", 1))
    loaded = load("lightgbm", path, "lightgbm-text")
    x = np.random.default_rng(1).normal(size=(200, 4))
    assert loaded.num_trees() == 5
    assert np.allclose(loaded.predict(x), lightgbm.Booster(model_str=text).predict(x))


def test_genuine_lightgbm_models_pass_the_structure_checks(tmp_path: Path) -> None:
    import lightgbm
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    x[:, 3] = (np.abs(x[:, 3]) * 3).astype(int)
    three = (np.abs(x[:, 0]) * 2).astype(int) % 3
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"objective": "binary"}, (x[:, 0] > 0).astype(int)),
        ({"objective": "multiclass", "num_class": 3}, three),
        ({"objective": "regression", "linear_tree": True}, x[:, 1]),
        ({"objective": "regression", "min_data_in_leaf": 1000}, x[:, 1]),  # one-leaf trees
        (  # categorical splits, with their bitsets
            {"objective": "regression", "min_data_per_group": 5, "max_cat_to_onehot": 1},
            x[:, 1] + 5 * (x[:, 3] % 2),
        ),
    ]
    for i, (params, label) in enumerate(cases):
        data = lightgbm.Dataset(x, label, categorical_feature=[3])
        booster = lightgbm.train({**params, "verbose": -1, "num_leaves": 8}, data, 4)
        path = tmp_path / f"{i}.txt"
        booster.save_model(str(path))
        if i == len(cases) - 1:
            assert "num_cat=1" in path.read_text()
        loaded = load("lightgbm", path, "lightgbm-text")
        assert np.allclose(loaded.predict(x), booster.predict(x))
