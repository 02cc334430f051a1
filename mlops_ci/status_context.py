"""The commit-status contexts of the gate and the checks: one per base branch.

A commit status belongs to a commit, not to a pull request: GitHub shows the latest status of
each context on the head commit for every pull request with that head. A status earned by a pull
request into a branch its author controls (its policy, its manifests, or simply no difference)
would count for a pull request of the same head into the default branch. So the context names
the base: a pull request into the default branch posts exactly `mlops-ci/governance` and
`mlops-ci/checks` (the names branch protection rules already require), one into any other branch
B posts `mlops-ci/governance (B)` and `mlops-ci/checks (B)`, which only B's rule can require.

GitHub compares contexts case-insensitively and accepts at most 255 characters, while branch
names are case-sensitive, so the name is written such that two branches never share a context:
lowercase ASCII letters, digits and `._-/+=@,#` stand for themselves; an uppercase ASCII letter X
is written `^x` (`^` cannot be part of a branch name); every other byte of its UTF-8 (including
`%`) is written `%XX`. A context that would still be too long keeps the start of the name and
ends with a space (never part of a branch name either) and 20 hex digits of the name's SHA-256.
"""

from __future__ import annotations

import hashlib

from mlops_ci.errors import MlopsCiError

GOVERNANCE = "mlops-ci/governance"
CHECKS = "mlops-ci/checks"
#: GitHub's limit on a status context ("context is too long (maximum is 255 characters)").
MAX_CONTEXT = 255
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/+=@,#")
_HASH_HEX = 20  # 80 bits: no second branch name can be made to share a context


def _escaped(base: str) -> list[str]:
    """The branch name's characters as they appear in the context, one token per character."""
    tokens: list[str] = []
    for char in base:
        if char in _SAFE:
            tokens.append(char)
        elif "A" <= char <= "Z":
            tokens.append("^" + char.lower())
        else:
            tokens.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return tokens


def for_base(name: str, base: str, default: str) -> str:
    """The context `name` (GOVERNANCE or CHECKS) takes for a pull request into `base`, in a
    repository whose default branch is `default`. Both must be known: guessing either could
    write the default branch's context for a pull request into another branch."""
    if not base or not default:
        missing = "base branch" if not base else "default branch"
        raise MlopsCiError(f"GitHub did not name the pull request's {missing}; no status is set")
    if base == default:
        return name
    tokens = _escaped(base)
    room = MAX_CONTEXT - len(name) - len(" ()")
    if sum(map(len, tokens)) > room:
        digest = hashlib.sha256(base.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
        room -= len(digest) + 1
        kept: list[str] = []
        for token in tokens:  # whole escapes only, so what is kept still reads back
            if sum(map(len, kept)) + len(token) > room:
                break
            kept.append(token)
        tokens = [*kept, " ", digest]
    return f"{name} ({''.join(tokens)})"


def branch_words(base: str, default: str) -> str:
    """How a report names the base: "the default branch (main)" or "develop"."""
    if not base:
        return "a branch the API did not name"
    return f"the default branch ({default})" if base == default else base
