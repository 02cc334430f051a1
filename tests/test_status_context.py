"""The per-base commit-status contexts (`mlops_ci.status_context`): readable, at most 255
characters, and never shared by two branches as GitHub compares them (case-insensitively)."""

from __future__ import annotations

import itertools

import pytest

from mlops_ci.errors import MlopsCiError
from mlops_ci.status_context import CHECKS, GOVERNANCE, MAX_CONTEXT, for_base

# Branch names git accepts (no space, ~ ^ : ? * [ \ or control characters), chosen to collide.
NAMES = [
    "develop",
    "Develop",
    "DEVELOP",
    "dEvelop",
    "release/1.2",
    "Release/1.2",
    "%5Edevelop",  # what "^develop" would read as, were "^" a character of branch names
    "%5edevelop",
    "déjà-vu",
    "de%CC%81ja%CC%80-vu",
    "d%C3%A9j%C3%A0-vu",  # "déjà-vu" as its escapes would read
    "d%c3%a9j%c3%a0-vu",  # the same, as GitHub compares contexts
    "DÉJÀ-VU",
    "feature/ä",
    "feature/Ä",
    "feature/a%CC%88",
    "x)",
    "x) (y",
    "main(develop)",
    "ﬁx",  # a ligature: some collations fold it to "fi"
    "fix",
    "a" * 300,
    "a" * 299 + "A",
    "A" + "a" * 299,
    "é" * 200,
    "É" * 200,
]


def test_the_default_branch_keeps_the_contexts_branch_protection_names() -> None:
    assert for_base(GOVERNANCE, "main", "main") == "mlops-ci/governance"
    assert for_base(CHECKS, "trunk", "trunk") == "mlops-ci/checks"


def test_another_branch_is_named_readably() -> None:
    assert for_base(GOVERNANCE, "develop", "main") == "mlops-ci/governance (develop)"
    assert for_base(CHECKS, "release/1.2", "main") == "mlops-ci/checks (release/1.2)"
    assert for_base(CHECKS, "Release-1", "main") == "mlops-ci/checks (^release-1)"
    assert for_base(CHECKS, "déjà", "main") == "mlops-ci/checks (d%C3%A9j%C3%A0)"
    # the default branch's name on another repository's default is just another branch
    assert for_base(GOVERNANCE, "main", "develop") == "mlops-ci/governance (main)"


@pytest.mark.parametrize("name", [GOVERNANCE, CHECKS])
def test_no_two_branches_share_a_context_as_github_compares_them(name: str) -> None:
    assert len(set(NAMES)) == len(NAMES)
    contexts = {base: for_base(name, base, "main") for base in NAMES}
    folded = [c.casefold() for c in contexts.values()]
    assert len(set(folded)) == len(NAMES), "two branches share a context"
    assert name.casefold() not in folded  # none is the default branch's
    for context in contexts.values():
        assert len(context) <= MAX_CONTEXT
        assert context.isascii() and context.isprintable()  # no accent- or width-folding


def test_a_long_name_keeps_its_start_and_a_digest() -> None:
    context = for_base(GOVERNANCE, "release/" + "x" * 300, "main")
    assert len(context) == MAX_CONTEXT
    assert context.startswith("mlops-ci/governance (release/xxx")
    digest = context.removesuffix(")").rsplit(" ", 1)[1]
    assert len(digest) == 20 and int(digest, 16) >= 0
    # an escape is never cut in half
    long_accents = for_base(GOVERNANCE, "é" * 200, "main")
    head = long_accents.removeprefix("mlops-ci/governance (").rsplit(" ", 1)[0]
    assert len(head) % 6 == 0 and set(head.split("%")) == {"", "C3", "A9"}


def test_pairs_of_nearby_names_stay_apart() -> None:
    bases = ["".join(p) for n in range(1, 4) for p in itertools.product("aA%5^é", repeat=n)]
    bases = [b for b in bases if "^" not in b]  # git refuses ^ in a branch name
    folded = {for_base(CHECKS, b, "main").casefold() for b in bases}
    assert len(folded) == len(bases)


@pytest.mark.parametrize(("base", "default"), [("", "main"), ("develop", ""), ("", "")])
def test_an_unnamed_branch_has_no_context(base: str, default: str) -> None:
    with pytest.raises(MlopsCiError, match="did not name"):
        for_base(GOVERNANCE, base, default)
