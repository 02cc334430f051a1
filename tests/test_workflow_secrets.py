"""Least-privilege registry keys in the reusable workflow (.github/workflows/mlops-ci.yml).

The defence: no job that a pull request can trigger names the registry's write key, so a pull
request's run never holds a key that can publish to production. The checker reads each job's
`if:` with a small three-valued evaluator (github.event_name is known, everything else may be
either), and finds every reference to the write key (by property, by index, in any case, or the
whole secrets context and `secrets: inherit`) anywhere in the job. It is shown to fire on the
baseline job as it was (holding the write key on pull_request) and on other naive variants.

The bash of the jobs that choose between the two keys is run for real, with a stand-in for
`mlops-ci` that records the AWS variables it was given: each job gets one whole pair or none,
never an id from one key and the secret of the other (which two `||` expressions would give).
And end to end with act: a pull request whose caller passes only the write key gets a baseline
that says there are no read credentials (the workflow as it was read the registry with it).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "mlops-ci.yml"

PR_EVENTS = ("pull_request", "pull_request_review", "pull_request_target")
WRITE_SECRETS = ("registry-access-key-id", "registry-secret-access-key")
READ_SECRETS = ("registry-read-access-key-id", "registry-read-secret-access-key")


def load(text: str | None = None) -> dict[Any, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8") if text is None else text)
    assert isinstance(doc, dict)
    return doc


# --- which events can run a job: its `if:`, read with Kleene's three-valued logic ----------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|,)
      | (?P<ident>[A-Za-z_][\w-]*(?:\.[\w*-]+|\[[^\]]*\])*)
    )""",
    re.VERBOSE,
)

Tri = bool | None  # None: could be either, depending on something other than the event


class _Parser:
    """`if:` grammar: or := and ('||' and)*; and := not ('&&' not)*; not := '!' not | cmp;
    cmp := atom (op atom)?; atom := '(' or ')' | literal | name | name '(' args ')'.
    Values are ("lit", str) for literals, ("ref", name) for context properties, ("tri", Tri)."""

    def __init__(self, text: str, event: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"cannot read the if: expression at {text[pos:]!r}")
            kind = m.lastgroup
            assert kind is not None
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.pos = 0
        self.event = event

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise ValueError("the if: expression ends too early")
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise ValueError(f"expected {expected!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def parse(self) -> Tri:
        value = truth(self.or_())
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.peek()!r} in the if: expression")
        return value

    def or_(self) -> tuple[str, Any]:
        left = self.and_()
        while self.peek() == "||":
            self.take()
            a, b = truth(left), truth(self.and_())
            left = (
                "tri",
                True if True in (a, b) else (False if (a, b) == (False, False) else None),
            )
        return left

    def and_(self) -> tuple[str, Any]:
        left = self.not_()
        while self.peek() == "&&":
            self.take()
            a, b = truth(left), truth(self.not_())
            left = ("tri", False if False in (a, b) else (True if (a, b) == (True, True) else None))
        return left

    def not_(self) -> tuple[str, Any]:
        if self.peek() == "!":
            self.take()
            value = truth(self.not_())
            return ("tri", None if value is None else not value)
        return self.cmp()

    def cmp(self) -> tuple[str, Any]:
        left = self.atom()
        if self.peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take()[1]
            right = self.atom()
            return ("tri", self.compare(left, op, right))
        return left

    def compare(self, left: tuple[str, Any], op: str, right: tuple[str, Any]) -> Tri:
        if op not in ("==", "!="):
            return None
        sides = {left[0]: left[1], right[0]: right[1]}
        # Only github.event_name against a string literal is known (GitHub compares strings
        # case-insensitively); every other comparison may go either way.
        name, literal = sides.get("ref"), sides.get("lit")
        if left[0] == right[0] or name is None or literal is None:
            return None
        if name.lower() != "github.event_name":
            return None
        equal = literal.lower() == self.event.lower()
        return equal if op == "==" else not equal

    def atom(self) -> tuple[str, Any]:
        kind, text = self.take()
        if text == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind == "str":
            return ("lit", text[1:-1].replace("''", "'"))
        if kind == "num":
            return ("lit", text)
        if kind != "ident":
            raise ValueError(f"unexpected {text!r} in the if: expression")
        if self.peek() == "(":  # a function: always(), cancelled(), startsWith(...), ...
            self.take("(")
            while self.peek() != ")":
                self.or_()
                if self.peek() == ",":
                    self.take()
            self.take(")")
            return ("tri", None)
        if text.lower() in ("true", "false"):
            return ("tri", text.lower() == "true")
        return ("ref", text)


def truth(value: tuple[str, Any]) -> Tri:
    kind, v = value
    if kind == "tri":
        return v
    if kind == "lit":
        return v not in ("", "0")
    return None  # a context property: unknown


def events_reaching(condition: Any) -> set[str]:
    """The pull request events under which `condition` (a job's `if:`) can be true."""
    if condition is None:
        return set(PR_EVENTS)
    text = str(condition).strip()
    if isinstance(condition, bool):
        text = str(condition).lower()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.DOTALL)
    if m:
        text = m.group(1)
    return {e for e in PR_EVENTS if _Parser(text, e).parse() is not False}


# --- where a job names the write key ------------------------------------------------------------

_WRITE_REF = re.compile(
    r"secrets\s*(?:\.\s*|\[\s*'\s*)(?:" + "|".join(map(re.escape, WRITE_SECRETS)) + r")(?![\w-])",
    re.IGNORECASE,
)
# The whole secrets context (toJSON(secrets), secrets[format(...)]): every secret, the write key.
_WHOLE_SECRETS = re.compile(r"\bsecrets\b(?!\s*(?:\.\s*[\w-]|\[\s*'))", re.IGNORECASE)


def _expressions(node: Any, where: str, in_if: bool = False) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _expressions(value, f"{where}.{key}", key == "if")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _expressions(value, f"{where}[{i}]")
    elif isinstance(node, str):
        if in_if and "${{" not in node:
            yield where, node  # an if: is an expression without ${{ }}
        for m in re.finditer(r"\$\{\{(.*?)\}\}", node, re.DOTALL):
            yield where, m.group(1)


def write_key_references(job: Mapping[str, Any]) -> list[str]:
    """Where the job names the write key (or every secret), as `path: expression`."""
    found = [
        f"{where}: {expr.strip()}"
        for where, expr in _expressions(job, "job")
        if _WRITE_REF.search(expr) or _WHOLE_SECRETS.search(expr)
    ]
    if job.get("secrets") == "inherit":
        found.append("job.secrets: inherit")
    return found


def pr_jobs_holding_the_write_key(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """The checker: every job a pull request can run that names the write key."""
    return {
        name: refs
        for name, job in doc["jobs"].items()
        if events_reaching(job.get("if")) and (refs := write_key_references(job))
    }


# --- the defence ---------------------------------------------------------------------------------


def test_the_classifier_reads_event_gates() -> None:
    assert events_reaching(None) == set(PR_EVENTS)
    assert events_reaching("github.event_name == 'push'") == set()
    assert events_reaching("${{ github.event_name == 'Pull_Request' }}") == {"pull_request"}
    assert events_reaching("github.event_name != 'push'") == set(PR_EVENTS)
    assert events_reaching("github.event_name != 'pull_request'") == {
        "pull_request_review",
        "pull_request_target",
    }
    assert events_reaching("always() && inputs.registry != ''") == set(PR_EVENTS)
    assert events_reaching("!cancelled() && !(github.event_name == 'schedule')") == set(PR_EVENTS)
    assert events_reaching("!(github.event_name == 'pull_request' || inputs.x)") == {
        "pull_request_review",
        "pull_request_target",
    }
    # Anything the evaluator cannot decide counts as reachable.
    assert events_reaching("startsWith(github.event_name, 'push')") == set(PR_EVENTS)
    assert events_reaching("github.event_name == inputs.event") == set(PR_EVENTS)
    with pytest.raises(ValueError):
        events_reaching("github.event_name == 'push' &&")


def test_no_job_a_pull_request_can_run_names_the_write_key() -> None:
    doc = load()
    reachable = {name for name, job in doc["jobs"].items() if events_reaching(job.get("if"))}
    # The classifier's view, pinned: a job gated wrongly (or read wrongly) shows up here.
    assert reachable == {
        "validate",
        "plan",
        "environment",
        "baseline",
        "model",
        "report",
        "gate",
        "checks",
    }
    assert pr_jobs_holding_the_write_key(doc) == {}


def _baseline_env(doc: dict[str, Any]) -> dict[str, str]:
    (step,) = [
        s for s in doc["jobs"]["baseline"]["steps"] if "AWS_ACCESS_KEY_ID" in s.get("env", {})
    ]
    env: dict[str, str] = step["env"]
    return env


def test_the_baseline_job_as_it_was_is_reported() -> None:
    # Before: the pull request's baseline job read the registry with the write key.
    doc = load()
    env = _baseline_env(doc)
    assert env["AWS_ACCESS_KEY_ID"] == "${{ secrets.registry-read-access-key-id }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.registry-read-secret-access-key }}"
    naive = copy.deepcopy(doc)
    _baseline_env(naive).update(
        AWS_ACCESS_KEY_ID="${{ secrets.registry-access-key-id }}",
        AWS_SECRET_ACCESS_KEY="${{ secrets.registry-secret-access-key }}",
    )
    assert set(pr_jobs_holding_the_write_key(naive)) == {"baseline"}
    # ... and a fallback to it (`read || write`) is caught the same way.
    fallback = copy.deepcopy(doc)
    _baseline_env(fallback)["AWS_ACCESS_KEY_ID"] = (
        "${{ secrets.registry-read-access-key-id || secrets.registry-access-key-id }}"
    )
    assert set(pr_jobs_holding_the_write_key(fallback)) == {"baseline"}


def _gate_step_if(doc: dict[str, Any]) -> None:
    doc["jobs"]["gate"]["steps"][-1]["if"] = "secrets['registry-secret-access-key'] != ''"


def _inherit(doc: dict[str, Any]) -> None:
    doc["jobs"]["nested"] = {"uses": "./.github/workflows/other.yml", "secrets": "inherit"}


NAIVE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "a whole secrets context in a model job": (
        lambda d: (
            d["jobs"]["model"]["steps"][0].setdefault("env", {}).update(S="${{ toJSON(secrets) }}")
        ),
        "model",
    ),
    "another case in the report's with:": (
        lambda d: d["jobs"]["report"]["steps"][-1]["with"].update(
            key="${{ SECRETS.Registry-Access-Key-Id }}"
        ),
        "report",
    ),
    "an index in a step's if:": (_gate_step_if, "gate"),
    "secrets: inherit in a job with no if:": (_inherit, "nested"),
    "the monitor widened to pull requests": (
        lambda d: d["jobs"]["monitor"].update(
            {"if": d["jobs"]["monitor"]["if"] + " || github.event_name == 'pull_request'"}
        ),
        "monitor",
    ),
    "the catalog gated by a prefix the classifier cannot decide": (
        lambda d: d["jobs"]["catalog"].update(
            {"if": "startsWith(github.event_name, 'pu') && inputs.catalog"}
        ),
        "catalog",
    ),
}


@pytest.mark.parametrize("variant", list(NAIVE))
def test_naive_variants_are_reported(variant: str) -> None:
    doc = load()
    change, job = NAIVE[variant]
    change(doc)
    assert set(pr_jobs_holding_the_write_key(doc)) == {job}


def test_only_environment_or_trusted_event_jobs_hold_the_write_key() -> None:
    doc = load()
    jobs = doc["jobs"]
    holders = {name for name, job in jobs.items() if write_key_references(job)}
    assert holders == {"publish", "rollback", "monitor", "catalog"}
    for name in holders:
        # monitor and catalog are gated to trusted events; publish and rollback are too, and run
        # in the protected environment besides.
        assert not events_reaching(jobs[name].get("if")), name
    for name in ("publish", "rollback"):
        assert jobs[name]["environment"] == "${{ inputs.environment }}"
        (deploy,) = [
            s for s in jobs[name]["steps"] if "registry-access-key-id" in s.get("with", {})
        ]
        assert deploy["with"]["registry-access-key-id"] == "${{ secrets.registry-access-key-id }}"
        assert (
            deploy["with"]["registry-secret-access-key"]
            == "${{ secrets.registry-secret-access-key }}"
        )
    # The read key is declared, optional, and baseline names nothing else of the registry.
    declared = doc[True]["workflow_call"]["secrets"]  # YAML 1.1 reads the key `on` as True
    for name in (*WRITE_SECRETS, *READ_SECRETS):
        assert declared[name]["required"] is False
    baseline = yaml.safe_dump(jobs["baseline"])
    assert all(s in baseline for s in READ_SECRETS)


def test_no_expression_is_pasted_into_a_run_script() -> None:
    for name, job in load()["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), (name, step.get("name"))


# --- one whole pair per job: the bash that picks it, run for real --------------------------------

WRITE = {"registry-access-key-id": "WRITE-ID", "registry-secret-access-key": "WRITE-SECRET"}
READ = {"registry-read-access-key-id": "READ-ID", "registry-read-secret-access-key": "READ-SECRET"}
HALF_WRITE = {"registry-access-key-id": "WRITE-ID"}  # the caller passed the id, not the secret
UNSET = ("<unset>", "<unset>")


def _resolve(expr: str, secrets: Mapping[str, str], runner_temp: Path) -> str:
    """The few expressions these steps use; `a || b` is GitHub's: the first non-empty one."""
    for part in expr.split("||"):
        part = part.strip()
        if part.startswith("secrets."):
            value = secrets.get(part.removeprefix("secrets."), "")
        elif part == "inputs.registry":
            value = "s3://acme-models/prod"
        elif part == "runner.temp":
            value = str(runner_temp)
        else:
            value = ""
        if value:
            return value
    return ""


def _run_step(
    job: str, secrets: Mapping[str, str], tmp_path: Path, doc: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Run the job's step that calls mlops-ci with the registry key; what mlops-ci was given."""
    doc = doc or load()
    (step,) = [s for s in doc["jobs"][job]["steps"] if "AWS_ACCESS_KEY_ID" in s.get("env", {})]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    seen = tmp_path / "seen"
    fake = bin_dir / "mlops-ci"
    fake.write_text(
        "#!/bin/bash\n"
        f'{{ echo "${{AWS_ACCESS_KEY_ID-<unset>}}"; echo "${{AWS_SECRET_ACCESS_KEY-<unset>}}";'
        f" env | grep -c '^MLOPS_CI_OTHER_' || true; }} > {shlex.quote(str(seen))}\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        name: re.sub(
            r"\$\{\{(.*?)\}\}", lambda m: _resolve(m.group(1), secrets, tmp_path), str(value)
        )
        for name, value in step["env"].items()
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    subprocess.run(["bash", "-c", step["run"]], env=env, cwd=tmp_path, check=True, timeout=30)
    key_id, secret, others = seen.read_text().splitlines()
    assert others == "0", "the other pair's variables must not reach mlops-ci"
    return key_id, secret


CASES = {
    # secrets given: (baseline, monitor, catalog)
    "both keys": (
        {**WRITE, **READ},
        ("READ-ID", "READ-SECRET"),
        ("WRITE-ID", "WRITE-SECRET"),
        ("READ-ID", "READ-SECRET"),
    ),
    "write key only (a repository secret)": (
        WRITE,
        UNSET,
        ("WRITE-ID", "WRITE-SECRET"),
        ("WRITE-ID", "WRITE-SECRET"),
    ),
    "read key only (the write key environment-only)": (
        READ,
        ("READ-ID", "READ-SECRET"),
        ("READ-ID", "READ-SECRET"),
        ("READ-ID", "READ-SECRET"),
    ),
    "none (a fork's pull request)": ({}, UNSET, UNSET, UNSET),
    # Never an id of one key with the other's secret: the half-given write key stays whole.
    "the write key's id without its secret": (
        {**HALF_WRITE, **READ},
        ("READ-ID", "READ-SECRET"),
        ("WRITE-ID", "<unset>"),
        ("READ-ID", "READ-SECRET"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_job_gets_one_whole_pair(case: str, tmp_path: Path) -> None:
    secrets, *expected = CASES[case]
    for job, want in zip(("baseline", "monitor", "catalog"), expected, strict=True):
        assert _run_step(job, secrets, tmp_path / job) == want, job


def test_two_or_expressions_would_mix_the_pairs(tmp_path: Path) -> None:
    # The naive way: id and secret each `write || read`. With the write key half given, mlops-ci
    # would get the write key's id with the read key's secret.
    doc = load()
    (step,) = [
        s for s in doc["jobs"]["monitor"]["steps"] if "AWS_ACCESS_KEY_ID" in s.get("env", {})
    ]
    step["env"]["AWS_ACCESS_KEY_ID"] = (
        "${{ secrets.registry-access-key-id || secrets.registry-read-access-key-id }}"
    )
    step["env"]["AWS_SECRET_ACCESS_KEY"] = (
        "${{ secrets.registry-secret-access-key || secrets.registry-read-secret-access-key }}"
    )
    step["env"]["MLOPS_CI_OTHER_KEY_ID"] = step["env"]["MLOPS_CI_OTHER_SECRET"] = ""
    mixed = _run_step("monitor", {**HALF_WRITE, **READ}, tmp_path / "naive", doc)
    assert mixed == ("WRITE-ID", "READ-SECRET")
    assert _run_step("monitor", {**HALF_WRITE, **READ}, tmp_path / "ours") == (
        "WRITE-ID",
        "<unset>",
    )


# --- end to end with act: a pull request's baseline job never sees the write key ---------------


def _files_at(repo_path: Path, ref: str) -> dict[str, bytes]:
    import io
    import tarfile

    data = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=repo_path, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: f.read()
            for m in tar.getmembers()
            if m.isfile() and (f := tar.extractfile(m)) is not None
        }


@pytest.mark.act
@pytest.mark.slow
def test_a_pull_request_run_with_only_the_write_key_gets_no_registry_key(
    act_harness: Any, ghserver: Any
) -> None:
    # The caller passes the write key as repository secrets (the setup the docs warn against)
    # and no read key, for an S3 registry: the baseline job must not read it with the write key,
    # so it reports that there are no read credentials and names the secret to set. (With the
    # write key it would have tried the registry and said it could not be read.)
    import json

    from act_harness import TOKEN, pull_request_event

    ghserver.token = TOKEN
    repo = act_harness.model_repo().with_caller(
        {"bench-time-budget": '"0.02"', "registry-endpoint-url": "http://127.0.0.1:9"},
        "A registry on S3",
        replace={"${{ vars.MLOPS_CI_REGISTRY }}": "s3://acme-models/prod"},
    )
    manifest = repo.path / "models" / "diabetes-risk" / "model.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(re.sub(r"(?m)^(  version: )\S+", r"\g<1>9.9.9", text, count=1))
    repo = repo.commit("diabetes-risk 9.9.9")
    remote = ghserver.add_repo(repo.repository)
    remote.add_pull(
        1,
        author="carol",
        base_sha=repo.base,
        head_sha=repo.head,
        base_files=_files_at(repo.path, repo.base),
        head_files=_files_at(repo.path, repo.head),
    )

    run = act_harness.run(
        repo,
        "pull_request",
        pull_request_event(repo, author="carol"),
        api_url=ghserver.url,
        secrets={
            "MLOPS_CI_REGISTRY_ACCESS_KEY_ID": "AKIAWRITEKEYFORTEST01",
            "MLOPS_CI_REGISTRY_SECRET_ACCESS_KEY": "write-secret-for-the-act-test-0123456789",
        },
    )
    print(f"act run (pull request with only the write key): {run.seconds:.2f}s")

    assert run.job_result("baseline") == "success", run.explain()
    assert run.artifacts is not None
    doc = json.loads(
        (run.artifacts / "mlops-ci-baseline" / "diabetes-risk" / "baseline.json").read_text()
    )
    assert "no read credentials" in doc["reason"], doc
    assert "registry-read-access-key-id" in doc["reason"], doc
    assert "could not be read" not in doc["reason"], doc
    comments = [c for c in ghserver.repos[repo.repository].comments if c["_issue"] == 1]
    assert len(comments) == 1 and "no read credentials" in comments[0]["body"], run.explain()
