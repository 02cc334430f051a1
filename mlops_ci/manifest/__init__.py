"""Model manifests: safe YAML with positions, schema and semantic checks, problems as values.

`safe_yaml` reads, `schema` explains schema errors, `rules` holds the semantic checks, `model`
the `Manifest` accessors, `check` the entry points. Nothing here imports an ML framework.
"""

from __future__ import annotations

from mlops_ci.digest import sha256_file
from mlops_ci.manifest.check import (
    Checked,
    check_file,
    check_unique_names,
    load,
    parse_document,
)
from mlops_ci.manifest.model import (
    CLASSIFICATION_METRICS,
    EXTRA_BY_FRAMEWORK,
    FORMAT_BY_SUFFIX,
    FORMATS_BY_FRAMEWORK,
    REGRESSION_METRICS,
    Manifest,
    Signature,
    TensorSpec,
    artifact_format,
    infer_task,
    semver_key,
)
from mlops_ci.manifest.paths import (
    MANIFEST_NAMES,
    MODEL_NAME,
    display_path,
    find_manifests,
    find_repo_root,
)
from mlops_ci.manifest.problem import Problem
from mlops_ci.manifest.rules import referenced_paths
from mlops_ci.manifest.safe_yaml import MAX_DEPTH, MAX_FILE_BYTES, locate

__all__ = [
    "CLASSIFICATION_METRICS",
    "EXTRA_BY_FRAMEWORK",
    "FORMATS_BY_FRAMEWORK",
    "FORMAT_BY_SUFFIX",
    "MANIFEST_NAMES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MODEL_NAME",
    "REGRESSION_METRICS",
    "Checked",
    "Manifest",
    "Problem",
    "Signature",
    "TensorSpec",
    "artifact_format",
    "check_file",
    "check_unique_names",
    "display_path",
    "find_manifests",
    "find_repo_root",
    "infer_task",
    "load",
    "locate",
    "parse_document",
    "referenced_paths",
    "semver_key",
    "sha256_file",
]
