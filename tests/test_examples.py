"""The example model repository is what a new user copies: its manifests must be true.

Nothing here retrains: digests are checked against the committed files, the data splits are
recomputed (fast) with train.py's own data preparation, and the expected test-case outputs
against the committed artifacts' native predictions.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from mlops_ci import manifest, policy, resources

REPO = Path(__file__).resolve().parents[1] / "examples" / "model-repo"
MANIFESTS = manifest.find_manifests(REPO / "models")
MODEL_NAMES = [p.parent.name for p in MANIFESTS]


@pytest.fixture(scope="module")
def train() -> ModuleType:
    """examples/model-repo/train.py as a module (importing it trains nothing)."""
    spec = importlib.util.spec_from_file_location("example_train", REPO / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _document(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _file_refs(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every {path, sha256} mapping in a manifest, wherever the schema puts it."""
    if isinstance(node, dict):
        if isinstance(node.get("path"), str) and "sha256" in node:
            yield where, node
        for key, value in node.items():
            yield from _file_refs(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _file_refs(value, f"{where}[{index}]")


def test_the_example_repository_covers_every_framework_it_promises() -> None:
    promised = {"diabetes-risk", "digit-recognizer", "disease-progression", "tumor-classifier"}
    assert promised <= set(MODEL_NAMES)
    frameworks = {_document(p)["spec"]["framework"] for p in MANIFESTS}
    assert {"sklearn", "xgboost", "pytorch", "lightgbm"} <= frameworks


@pytest.mark.parametrize("path", MANIFESTS, ids=MODEL_NAMES)
def test_example_manifest_is_valid(path: Path) -> None:
    # manifest.load runs the schema and the semantic checks (paths inside the repo, digests).
    loaded = manifest.load(path, root=REPO)
    assert loaded.name == path.parent.name


@pytest.mark.parametrize("path", MANIFESTS, ids=MODEL_NAMES)
def test_every_digest_in_the_manifest_matches_its_file(path: Path) -> None:
    refs = list(_file_refs(_document(path)))
    where = {w for w, _ in refs}
    # artifact, evaluation data and drift reference: all three pinned in every example
    assert where == {"spec.artifact", "spec.evaluation.data", "spec.monitoring.drift.reference"}
    for _, ref in refs:
        assert manifest.sha256_file(path.parent / ref["path"]) == ref["sha256"], ref["path"]


def test_policy_matches_its_schema_and_the_documented_tiers() -> None:
    text = (REPO / ".mlops" / "policy.yaml").read_text(encoding="utf-8")
    jsonschema.validate(yaml.safe_load(text), resources.load_schema(resources.POLICY_SCHEMA))
    parsed, problems = policy.parse_policy(text)
    assert problems == [] and parsed is not None
    assert (parsed.low.approvals, parsed.low.from_owners) == (1, False)
    assert (parsed.medium.approvals, parsed.medium.from_owners) == (1, True)
    assert (parsed.high.approvals, parsed.high.from_owners) == (2, True)
    assert parsed.high.required_teams == ("@acme/ml-governance",)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_data_files_and_lineage_digest_are_what_train_py_makes(
    train: ModuleType, name: str
) -> None:
    recipes = {r.name: r for r in train.RECIPES}
    assert name in recipes, f"models/{name} has no recipe in train.py"
    recipe = recipes[name]
    data = recipe.data()
    folder = REPO / "models" / name
    spec = _document(folder / "model.yaml")["spec"]
    assert (folder / spec["evaluation"]["data"]["path"]).read_bytes() == train.csv_bytes(data.eval)
    reference = folder / spec["monitoring"]["drift"]["reference"]["path"]
    assert reference.read_bytes() == train.csv_bytes(data.reference)
    lineage = spec["lineage"]["training_data"]["sha256"]
    assert lineage == train.sha256_bytes(train.csv_bytes(data.train))


@pytest.mark.parametrize("path", MANIFESTS, ids=MODEL_NAMES)
def test_signature_columns_are_in_the_data_and_the_test_cases(path: Path) -> None:
    spec = _document(path)["spec"]
    columns = [c for i in spec["signature"]["inputs"] for c in i.get("columns", [i["name"]])]
    header = (path.parent / spec["evaluation"]["data"]["path"]).read_text().split("\n", 1)[0]
    assert header.split(",") == [*columns, spec["evaluation"]["target"]]
    reference = (path.parent / spec["monitoring"]["drift"]["reference"]["path"]).read_text()
    assert reference.split("\n", 1)[0].split(",") == columns
    cases = spec["tests"]["cases"]
    assert 2 <= len(cases) <= 4
    for case in cases:
        assert list(case["input"]) == columns, case["name"]


def _numbers(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("path", MANIFESTS, ids=MODEL_NAMES)
def test_expected_numbers_are_yaml_numbers_not_strings(path: Path) -> None:
    # PyYAML (YAML 1.1) reads 2e-06 as the string "2e-06"; train.py must write 2.0e-06.
    for case in _document(path)["spec"]["tests"]["cases"]:
        for key, value in case["expect"].items():
            for item in _numbers(value):
                assert isinstance(item, int | float), f"{case['name']}: {key} holds {item!r}"


def _native_outputs(name: str, folder: Path, rows: Any, columns: list[str]) -> dict[str, Any]:
    """Predictions of the committed artifact with its own framework (never a pickle load)."""
    if name == "diabetes-risk":
        sio = pytest.importorskip("skops.io")
        model = sio.load(folder / "model.skops", trusted=[])  # nothing beyond skops' defaults
        return {"label": model.predict(rows), "probabilities": model.predict_proba(rows)}
    x = rows[columns].to_numpy(np.float32)
    if name == "tumor-classifier":
        xgb = pytest.importorskip("xgboost")
        clf = xgb.XGBClassifier()
        clf.load_model(folder / "model.json")
        return {"label": clf.predict(x), "probabilities": clf.predict_proba(x)}
    if name == "disease-progression":
        lgb = pytest.importorskip("lightgbm")
        booster = lgb.Booster(model_file=str(folder / "model.txt"))
        return {"variable": booster.predict(rows[columns].to_numpy(np.float64))}
    torch = pytest.importorskip("torch")
    module = torch.export.load(folder / "model.pt2").module()
    with torch.no_grad():
        return {"probabilities": module(torch.tensor(x)).numpy()}


@pytest.mark.parametrize("path", MANIFESTS, ids=MODEL_NAMES)
def test_expected_outputs_are_what_the_committed_artifact_predicts(path: Path) -> None:
    pd = pytest.importorskip("pandas")
    spec = _document(path)["spec"]
    columns = [c for i in spec["signature"]["inputs"] for c in i.get("columns", [i["name"]])]
    cases = spec["tests"]["cases"]
    rows = pd.DataFrame([case["input"] for case in cases])
    outputs = _native_outputs(path.parent.name, path.parent, rows, columns)
    aliases = {"prediction": "variable"}
    for index, case in enumerate(cases):
        for key, expected in case["expect"].items():
            actual = np.asarray(outputs[aliases.get(key, key)][index]).ravel()
            tolerance = 0 if key == "label" else case.get("tolerance", 1e-6)
            np.testing.assert_allclose(actual, _numbers(expected), rtol=0, atol=tolerance)


def test_skops_normalisation_is_a_fixed_point_of_the_committed_file(train: ModuleType) -> None:
    # train.py renumbers skops' id()-based names and fixes zip times; applying it to its own
    # output must change nothing, or retraining would not be byte-reproducible.
    pytest.importorskip("skops")
    blob = (REPO / "models" / "diabetes-risk" / "model.skops").read_bytes()
    assert train.normalize_skops(blob) == blob


def test_examples_stay_small() -> None:
    total = sum(p.stat().st_size for p in (REPO / "models").rglob("*") if p.is_file())
    assert total < 1_000_000


MANIFEST_TEXT = """\
# a comment that must survive
spec:
  artifact:
    path: model.json   # the artifact
    sha256: 1111111111111111111111111111111111111111111111111111111111111111
  tests:
    cases:
      - name: first
        expect: {label: 0, probabilities: [0.5, 0.5]}   # kept
        tolerance: 1.0e-4
      - name: block
        expect:
          label: 1
"""


def test_manifest_edit_changes_only_the_targeted_values(train: ModuleType) -> None:
    digest = "ab" * 32
    edited = train.edit_manifest(
        MANIFEST_TEXT,
        {
            ("spec", "artifact", "sha256"): digest,
            ("spec", "tests", "cases", 0, "expect", "probabilities"): [2e-06, 0.999998],
            ("spec", "tests", "cases", 1, "expect", "label"): 0,
        },
    )
    expected = (
        MANIFEST_TEXT.replace("1" * 64, digest)
        .replace("[0.5, 0.5]", "[2.0e-06, 0.999998]")
        .replace("label: 1", "label: 0")
    )
    assert edited == expected
    first = yaml.safe_load(edited)["spec"]["tests"]["cases"][0]
    assert first["expect"]["probabilities"][0] == 2e-06


def test_manifest_edit_refuses_block_collections_and_missing_keys(train: ModuleType) -> None:
    with pytest.raises(train.ManifestEditError, match=r"expect \(line 13\) must be in flow style"):
        train.edit_manifest(MANIFEST_TEXT, {("spec", "tests", "cases", 1, "expect"): [1]})
    with pytest.raises(train.ManifestEditError, match=r"spec\.evaluation\.data\.sha256 is missing"):
        train.edit_manifest(MANIFEST_TEXT, {("spec", "evaluation", "data", "sha256"): "0" * 64})
