"""Artifacts kept in Git LFS: git stores a small pointer ("oid sha256:…", "size …") and only a
checkout where git-lfs ran holds the content.

- `validate` on a checkout that did not fetch LFS files names each pinned file that is still a
  pointer, instead of a bare "digest mismatch".
- Deploy compares the pushed git blobs with what was reviewed or published. An LFS artifact's
  blob is its pointer, and release.json keeps the content's sha256: the pointer's oid is that
  digest. A pull request that only bumps the manifest over a deployed LFS artifact therefore
  deploys on the registry's evidence, as it does for any other artifact.

The repositories here use a stand-in for git-lfs (no git-lfs binary on the machine): a git
clean/smudge filter pair that stores content by sha256 and writes the same pointer text
git-lfs writes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from deploy_models import git, write_model
from test_deploy_range import REPO, Main, _serving, new_main
from test_deploy_reviewed import _deploy, _refusals, manifest_version

from mlops_ci import digest
from mlops_ci.cli import main as cli_main

SPEC = "https://git-lfs.github.com/spec/v1"


def pointer(data: bytes) -> bytes:
    """The pointer git-lfs writes for `data`."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version {SPEC}\noid sha256:{oid}\nsize {len(data)}\n".encode()


# --- the pointer format ----------------------------------------------------------------------


def test_a_pointer_names_its_contents_digest_and_size() -> None:
    data = b"weights" * 1000
    found = digest.lfs_pointer(pointer(data))
    assert found == digest.LfsPointer(hashlib.sha256(data).hexdigest(), len(data))
    assert digest.content_sha256(pointer(data)) == hashlib.sha256(data).hexdigest()
    assert digest.content_sha256(data) == hashlib.sha256(data).hexdigest()  # content is content
    oid = hashlib.sha256(data).hexdigest()
    with_extension = (
        f"version {SPEC}\next-0-foo sha256:{'1' * 64}\noid sha256:{oid}\nsize 7000\n".encode()
    )
    assert digest.lfs_pointer(with_extension) == digest.LfsPointer(oid, 7000)
    legacy = pointer(data).replace(SPEC.encode(), b"https://hawser.github.com/spec/v1")
    assert digest.lfs_pointer(legacy) is not None


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"version https://git-lfs.github.com/spec/v1\n",
        b"oid sha256:" + b"a" * 64 + b"\nversion https://git-lfs.github.com/spec/v1\nsize 3\n",
        b"version https://example.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 3\n",
        b"version https://git-lfs.github.com/spec/v1\nsize 3\noid sha256:" + b"a" * 64 + b"\n",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"A" * 64 + b"\nsize 3\n",
        b"version https://git-lfs.github.com/spec/v1\noid md5:" + b"a" * 32 + b"\nsize 3\n",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize -3\n",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 3",
        b"version https://git-lfs.github.com/spec/v1\nfoo bar\noid sha256:"
        + b"a" * 64
        + b"\nsize 3\n",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:"
        + b"a" * 64
        + b"\nsize 3\n"
        + b"#" * 1024
        + b"\n",
    ],
    ids=[
        "empty",
        "version only",
        "version not first",
        "unknown version",
        "size before oid",
        "upper-case oid",
        "not sha256",
        "negative size",
        "no final newline",
        "unknown key",
        "too long",
    ],
)
def test_what_git_lfs_would_not_take_for_a_pointer_is_content(text: bytes) -> None:
    assert digest.lfs_pointer(text) is None
    assert digest.content_sha256(text) == hashlib.sha256(text).hexdigest()


# --- validate --------------------------------------------------------------------------------


def test_validate_names_a_pointer_left_by_a_checkout_without_lfs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_model(tmp_path, "iris", "1.0.0")
    artifact = manifest.parent / "model.skops"
    content = artifact.read_bytes()
    artifact.write_bytes(pointer(content))  # what a checkout without git-lfs holds
    code = cli_main(["validate", "--format", "json", "--root", str(tmp_path), str(manifest)])
    (result,) = json.loads(capsys.readouterr().out)["manifests"]
    assert code == 1
    [error] = result["errors"]
    line = manifest.read_text().splitlines()[error["line"] - 1]
    assert line.strip().startswith("path: model.skops"), line
    assert error["message"] == (
        "spec.artifact.path: 'model.skops' is a Git LFS pointer, not the file: this checkout did "
        "not fetch Git LFS files (run `git lfs pull`, or set the reusable workflow's `lfs: true`)"
    )
    # A pointer to other content is that too, and says which.
    other = b"other weights"
    artifact.write_bytes(pointer(other))
    assert cli_main(["validate", "--format", "json", "--root", str(tmp_path), str(manifest)]) == 1
    (result,) = json.loads(capsys.readouterr().out)["manifests"]
    assert (
        f"pointer (of another file, sha256 {hashlib.sha256(other).hexdigest()})"
        in (result["errors"][0]["message"])
    )
    artifact.write_bytes(content)  # once fetched, it is valid
    assert cli_main(["validate", "--root", str(tmp_path), str(manifest)]) == 0


# --- deploy ----------------------------------------------------------------------------------

_FILTER = """
import hashlib, re, sys
from pathlib import Path

mode, store = sys.argv[1], Path(sys.argv[2])
data = sys.stdin.buffer.read()
found = re.fullmatch(rb"version \\S+\\noid sha256:([0-9a-f]{64})\\nsize [0-9]+\\n", data)
if mode == "clean" and not found:
    oid = hashlib.sha256(data).hexdigest()
    store.mkdir(parents=True, exist_ok=True)
    (store / oid).write_bytes(data)
    data = b"version %s\\noid sha256:%s\\nsize %d\\n" % (SPEC, oid.encode(), len(data))
elif mode == "smudge" and found:
    data = (store / found.group(1).decode()).read_bytes()
sys.stdout.buffer.write(data)
"""


def _with_fake_lfs(repo: Path, tmp: Path) -> None:
    """git-lfs's clean and smudge filters, stood in for by a script (same pointer text)."""
    script = tmp / "fake_lfs.py"
    script.write_text(f"SPEC = {SPEC.encode()!r}\n" + _FILTER)
    run = f"'{sys.executable}' '{script}'"
    store = tmp / "lfs-objects"
    git(repo, "config", "filter.lfs.clean", f"{run} clean '{store}'")
    git(repo, "config", "filter.lfs.smudge", f"{run} smudge '{store}'")
    git(repo, "config", "filter.lfs.required", "true")


def _add_lfs_model(repo: Path) -> None:
    (repo / ".gitattributes").write_text(
        "models/tulip/*.skops filter=lfs diff=lfs merge=lfs -text\n"
    )
    write_model(repo, "tulip", "0.1.0", salt="tulip")


@pytest.fixture
def lfs_main(ghserver, monkeypatch, tmp_path: Path) -> Main:
    main = new_main(ghserver, monkeypatch, tmp_path)
    _with_fake_lfs(main.repo, tmp_path)
    return main


def test_a_manifest_bump_over_a_deployed_lfs_artifact_deploys(lfs_main: Main, capsys) -> None:
    """#1 brings tulip with its artifact in LFS; #2 bumps only the manifest. The pushed blob is
    the pointer, release.json has the content's sha256: the pointer's oid says they are the
    same bytes, and #2 deploys on the registry's evidence, with no GitHub call for #1."""
    main, registry = lfs_main, lfs_main.tmp / "registry"
    base = main.head
    first = main.merge(1, _add_lfs_model)
    blob = git(main.repo, "cat-file", "blob", f"{first}:models/tulip/model.skops")
    content = (main.repo / "models" / "tulip" / "model.skops").read_bytes()
    assert blob.startswith("version https://git-lfs") and content.startswith(b"PK")
    assert _deploy(main, registry, base, first, ["tulip"]) == 0, capsys.readouterr()
    second = main.merge(2, manifest_version("tulip", "0.2.0"))
    assert _deploy(main, registry, first, second, ["tulip"]) == 0, capsys.readouterr()
    assert _serving(registry)["tulip"] == ("0.2.0", 2)
    assert len(main.gh.server.calls("GET", rf"/repos/{REPO}/commits/{first}/pulls")) == 1
    assert _refusals(registry) == []
