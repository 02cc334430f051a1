"""What the reusable workflow (.github/workflows/mlops-ci.yml) and the example caller make of
GitHub's events: the commits `plan` compares, and which runs GitHub may drop.

The plan step's bash is run for real, with the expressions of its `env:` resolved from a
`pull_request` or `push` payload in GitHub's shape, in a git repository whose history is the
everyday one: the base branch moved on after the pull request's branch was cut. The event's
`pull_request.base.sha` is then the base branch's tip, not the commit the branch started from, so
comparing the pull request's head with it counts every model changed on the base branch since
as changed by the pull request, backwards (shown to fire on the step as it was).

Concurrency is GitHub's, not something a test can run: the rules it documents are applied to
the workflows' `concurrency:` blocks instead. With the default `queue: single`, a group holds one
running and one pending run, and a newer one cancels the pending one: a deploy or a rollback
waiting its turn must never be dropped that way. Jobs' `if:` are read the same way: an `edited`
pull request (moved to another base branch, whose policy the gate must apply) runs the gate.

And what the actions and `plan --format github` print from text they were given: a refused
input is named on one line (never a second line the runner would run as a workflow command),
a rollback's model name and reason are never read as options, and the plan's job summary keeps
the pull request's names inside a code block they cannot close. Each is shown to fire first.

The jobs that deploy or publish the catalog run for the default branch itself (`refs/heads/…`,
never a tag of the same name), the catalog on GitHub's real `schedule` payload (which holds no
`repository`), and the deploy and rollback actions refuse an empty environment (a job whose
`environment:` is empty runs unprotected).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "mlops-ci.yml"
CALLER = ROOT / "examples" / "model-repo" / ".github" / "workflows" / "mlops-ci.yml"
EXAMPLE = ROOT / "examples" / "model-repo"
BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def load(path: Path = WORKFLOW) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


# --- the plan step, run for real ----------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return done.stdout.strip()


def _bump(repo: Path, model: str, version: str, *, artifact: bool = False) -> None:
    manifest = repo / "models" / model / "model.yaml"
    text, n = re.subn(
        r"(?m)^(  version: )\S+", rf"\g<1>{version}", manifest.read_text(encoding="utf-8"), count=1
    )
    assert n == 1
    manifest.write_text(text, encoding="utf-8")
    if artifact:  # plan compares blob ids; the digest is validate's business, not plan's
        with (repo / "models" / model / "model.skops").open("ab") as fh:
            fh.write(b"\0")
    _git(repo, "commit", "-qam", f"{model} {version}")


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    """main: the example models. The pull request's branch bumps tumor-classifier; after it was
    cut, main published a new diabetes-risk (new artifact, version 1.1.0). The pull request has
    not merged main since, as GitHub allows unless branches must be up to date."""
    import shutil

    repo = tmp_path_factory.mktemp("behind") / "repo"
    shutil.copytree(EXAMPLE / "models", repo / "models")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "models")
    cut = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-qb", "feature")
    _bump(repo, "tumor-classifier", "1.1.0")
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    _bump(repo, "diabetes-risk", "1.1.0", artifact=True)
    tip = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "--detach", head)
    return {"repo": repo, "cut": cut, "head": head, "tip": tip}


def _lookup(context: Mapping[str, Any], path: str) -> str:
    value: Any = context
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _resolve(text: str, context: Mapping[str, Any]) -> str:
    """`${{ a.b || c.d }}` as GitHub evaluates it: the first non-empty value, else ''."""

    def one(match: re.Match[str]) -> str:
        parts = [p.strip() for p in match.group(1).split("||")]
        return next((v for v in (_lookup(context, p) for p in parts) if v), "")

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def _run_plan(
    repo: Path, context: Mapping[str, Any], tmp_path: Path, doc: dict[Any, Any] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run the plan job's plan step in `repo`; its outputs as GitHub would read them."""
    (step,) = [s for s in (doc or load())["jobs"]["plan"]["steps"] if s.get("id") == "plan"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update({name: _resolve(str(value), context) for name, value in step["env"].items()})
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "github_output"
    output.touch()
    env.update(GITHUB_OUTPUT=str(output), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-c", step["run"]],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    outputs: dict[str, str] = {}
    lines = iter(output.read_text(encoding="utf-8").splitlines())
    for line in lines:
        name, _, delimiter = line.partition("<<")
        value = []
        for more in lines:
            if more == delimiter:
                break
            value.append(more)
        outputs[name] = "\n".join(value)
    return done, outputs


def _pull_request(base: str, head: str) -> dict[str, Any]:
    return {
        "github": {
            "event_name": "pull_request",
            # GITHUB_SHA of a pull_request run: the test-merge commit (not in this repository)
            "sha": "f" * 40,
            "event": {"pull_request": {"base": {"sha": base}, "head": {"sha": head}}},
        }
    }


def _names(outputs: Mapping[str, str]) -> list[str]:
    import json

    return [m["name"] for m in json.loads(outputs["matrix"])["include"]]


def test_a_pull_request_behind_its_base_plans_only_the_models_it_changed(
    behind: dict[str, Any], tmp_path: Path
) -> None:
    context = _pull_request(behind["tip"], behind["head"])
    done, outputs = _run_plan(behind["repo"], context, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _names(outputs) == ["tumor-classifier"], done.stdout
    assert "diabetes-risk" not in done.stdout


def test_the_naive_base_blames_the_pull_request_for_the_base_branch_moving(
    behind: dict[str, Any], tmp_path: Path
) -> None:
    # The step as it was: the event's base.sha (the base branch's tip) against the head.
    doc = load()
    (step,) = [s for s in doc["jobs"]["plan"]["steps"] if s.get("id") == "plan"]
    naive = copy.deepcopy(doc)
    (naive_step,) = [s for s in naive["jobs"]["plan"]["steps"] if s.get("id") == "plan"]
    naive_step["run"] = 'mlops-ci plan --base "$BASE_SHA" --head "$HEAD_SHA" --format github'
    context = _pull_request(behind["tip"], behind["head"])
    done, outputs = _run_plan(behind["repo"], context, tmp_path, naive)
    assert done.returncode == 1
    assert "diabetes-risk" in done.stdout and "1.1.0 -> 1.0.0" in done.stdout
    assert sorted(_names(outputs)) == ["diabetes-risk", "tumor-classifier"]
    assert step["env"] == naive_step["env"]  # only the script differs


def test_a_branch_cut_after_the_model_change_makes_its_checks_green_under_its_own_name(
    behind: dict[str, Any], tmp_path: Path
) -> None:
    """The checks attack, through the real plan step: head N (a README edit) on top of M (the
    tumor-classifier change, which fails its thresholds). Into main, the model is planned and
    its job fails; into `evil`, a branch cut at M, no model changed, the model job is skipped
    and the checks job's verdict is success. Both land on N: only the context tells them
    apart (with one context, the later green one is what main's pull request shows)."""
    import shutil

    from mlops_ci import checks

    repo = tmp_path / "repo"
    shutil.copytree(behind["repo"], repo)
    (repo / "README.md").write_text("N\n", encoding="utf-8")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-qm", "N")
    head = _git(repo, "rev-parse", "HEAD")
    found: dict[str, tuple[str, bool]] = {}
    for base, tip in (("main", behind["tip"]), ("evil", behind["head"])):
        done, outputs = _run_plan(repo, _pull_request(str(tip), head), tmp_path / base)
        assert done.returncode == 0, done.stdout + done.stderr
        changed = outputs["changed"] == "true"
        needs = {
            "validate": {"result": "success"},
            "plan": {"result": "success", "outputs": outputs},
            "model": {"result": "failure" if changed else "skipped"},
        }
        pull = {"base": {"ref": base, "repo": {"default_branch": "main"}}}
        found[base] = (checks.context(pull), checks.verdict(needs).passed)
    assert found == {
        "main": ("mlops-ci/checks", False),
        "evil": ("mlops-ci/checks (evil)", True),
    }


def test_a_pull_request_up_to_date_with_its_base_and_a_push_plan_as_before(
    behind: dict[str, Any], tmp_path: Path
) -> None:
    repo = behind["repo"]
    up_to_date = _pull_request(behind["cut"], behind["head"])
    done, outputs = _run_plan(repo, up_to_date, tmp_path / "pr")
    assert done.returncode == 0 and _names(outputs) == ["tumor-classifier"], done.stdout
    push = {
        "github": {
            "event_name": "push",
            "sha": behind["tip"],
            "event": {"before": behind["cut"]},
        }
    }
    done, outputs = _run_plan(repo, push, tmp_path / "push")
    assert done.returncode == 0 and _names(outputs) == ["diabetes-risk"], done.stdout


def test_a_pull_request_without_a_common_history_is_a_clear_error(
    behind: dict[str, Any], tmp_path: Path
) -> None:
    repo = behind["repo"]
    _git(repo, "checkout", "-q", "--orphan", "unrelated")
    _git(repo, "commit", "-qm", "unrelated history")
    orphan = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "--detach", behind["head"])
    done, _ = _run_plan(repo, _pull_request(behind["tip"], orphan), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "::error title=mlops-ci plan::" in done.stdout
    assert "no common history" in done.stdout


# --- concurrency: which runs GitHub may drop ------------------------------------------------------

_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z_][\w.-]*))"
)


def _evaluate(expr: str, context: Mapping[str, Any]) -> Any:
    """The expressions of the concurrency blocks: context names, string literals, `==`, `!=`,
    `!`, `&&`, `||` and parentheses, with GitHub's semantics (`a || b` is a if truthy, else b;
    `==` on strings ignores case)."""
    tokens: list[tuple[str, str]] = []
    pos, expr = 0, expr.strip()
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        assert m is not None and m.lastgroup is not None, f"cannot read {expr[pos:]!r}"
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    at = 0

    def peek() -> str:
        return tokens[at][1] if at < len(tokens) else ""

    def take() -> tuple[str, str]:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def atom() -> Any:
        kind, text = take()
        if text == "(":
            value = either()
            assert take()[1] == ")"
            return value
        if text == "!":
            return not atom()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if peek() == "(":  # a status function, or format('{0}…', args)
            take()
            args = []
            while peek() != ")":
                args.append(either())
                if peek() == ",":
                    take()
            take()
            if text == "format":
                return re.sub(r"\{(\d+)\}", lambda m: _text(args[int(m.group(1)) + 1]), args[0])
            assert not args, f"arguments in {expr!r}"
            return {"always": True, "success": True, "cancelled": False, "failure": False}[text]
        value: Any = context
        for part in text.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    def compare() -> Any:
        left = atom()
        while peek() in ("==", "!="):
            op = take()[1]
            right = atom()
            same = str(left).lower() == str(right).lower()
            left = same if op == "==" else not same
        return left

    def chained(operand: Callable[[], Any], op: str, pick: Callable[[Any, Any], Any]):
        """`operand op operand op …`, left to right, as GitHub's && and || (their values,
        not booleans)."""

        def parse() -> Any:
            left = operand()
            while peek() == op:
                take()
                left = pick(left, operand())
            return left

        return parse

    both = chained(compare, "&&", lambda left, right: right if left else left)
    either = chained(both, "||", lambda left, right: left if left else right)

    value = either()
    assert at == len(tokens), f"trailing tokens in {expr!r}"
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _group(block: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: _text(_evaluate(m.group(1), context)), str(block["group"])
    )


def _cancels_in_progress(block: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    raw = block.get("cancel-in-progress", False)
    if isinstance(raw, str):
        raw = _evaluate(raw.strip().removeprefix("${{").removesuffix("}}"), context)
    return bool(raw)


def _dropped(block: Mapping[str, Any] | None, runs: list[Mapping[str, Any]]) -> list[int]:
    """Which of `runs` (arriving in this order, each before the one before it finished) GitHub
    cancels under `block`: a running one when a newer run of its group cancels in progress; a
    pending one when a newer run of its group arrives and the group queues only one."""
    if block is None:
        return []
    dropped: list[int] = []
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        group = _group(block, run).lower()  # GitHub's group names ignore case
        waiting = groups.setdefault(group, [])
        if waiting and _cancels_in_progress(block, run):
            dropped.extend(waiting)
            waiting.clear()
        elif len(waiting) >= 2 and block.get("queue", "single") != "max":
            dropped.append(waiting.pop(1))  # the one pending, replaced by the newcomer
        waiting.append(i)
    return dropped


def _runs(event_name: str, count: int = 3, **github: Any) -> list[dict[str, Any]]:
    """`count` runs of one event on the default branch, as their contexts differ."""
    return [
        {
            "github": {
                "event_name": event_name,
                "ref": "refs/heads/main",
                "repository": "acme/models",
                "run_id": str(1000 + i),
                "sha": f"{i:040x}",
                "event": {},
                **github,
            },
            "inputs": {"registry": "s3://acme-models/prod", "rollback-model": f"m{i}"},
        }
        for i in range(count)
    ]


def _deploying_jobs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The jobs that change what serves: they record a GitHub Deployment."""
    return {
        name: job
        for name, job in doc["jobs"].items()
        if (job.get("permissions") or {}).get("deployments") == "write"
    }


def test_the_evaluator_reads_the_blocks_as_github_does() -> None:
    ctx = _runs("pull_request", 1, event={"pull_request": {"number": 7}})[0]
    assert _evaluate("github.event.pull_request.number || github.ref", ctx) == 7
    assert _evaluate("github.event.missing || github.ref", ctx) == "refs/heads/main"
    assert _evaluate("github.event_name == 'PULL_REQUEST'", ctx) is True
    assert _evaluate("(github.event_name == 'push' && github.ref) || github.run_id", ctx) == "1000"
    naive = {"group": "g", "cancel-in-progress": False}
    assert _dropped(naive, _runs("push")) == [1]  # the pending one, replaced by the third
    assert _dropped({**naive, "queue": "max"}, _runs("push")) == []
    assert _dropped({**naive, "cancel-in-progress": True}, _runs("push")) == [0, 1]


def test_no_deploy_or_rollback_waiting_its_turn_is_dropped() -> None:
    jobs = _deploying_jobs(load())
    assert sorted(jobs) == ["publish", "rollback"]
    # A publish runs (or waits for the environment's reviewers) while a rollback and then another
    # publish (the next push, or another repository's, sharing the registry) line up behind it.
    runs = [*_runs("push", 1), *_runs("workflow_dispatch", 1), *_runs("push", 1)]
    for name, job in jobs.items():
        assert _dropped(job.get("concurrency"), runs) == [], f"{name}: a waiting deploy is dropped"


def test_no_registry_s_monitor_run_is_dropped_by_another_registry_s() -> None:
    """A caller that monitors staging, production and a third registry from one schedule: one
    group for all kept one run waiting and dropped it when the third arrived."""
    block = load()["jobs"]["monitor"]["concurrency"]
    runs = _runs("schedule")
    for run, registry in zip(runs, ["s3://m/staging", "s3://m/prod", "s3://m/eu"], strict=True):
        run["inputs"]["registry"] = registry
    assert _dropped(block, runs) == []
    assert _dropped({**block, "group": "mlops-ci-monitor-${{ github.repository }}"}, runs) == [1]
    assert _dropped(block, _runs("schedule")) == [1]  # one registry's runs: one waits, as before


def test_the_registry_group_as_it_was_drops_the_job_in_the_middle() -> None:
    # Both jobs were in `mlops-ci-registry-<registry>`, never cancelled in progress: the rollback
    # waiting behind the publish was dropped when the next publish arrived (and a publish
    # waiting behind a rollback, when the next rollback arrived).
    block = {"group": "mlops-ci-registry-${{ inputs.registry }}", "cancel-in-progress": False}
    runs = [*_runs("push", 1), *_runs("workflow_dispatch", 1), *_runs("push", 1)]
    assert _dropped(block, runs) == [1]
    runs = [*_runs("workflow_dispatch", 1), *_runs("push", 1), *_runs("workflow_dispatch", 1)]
    assert _dropped(block, runs) == [1]


def test_act_and_older_github_servers_can_read_the_workflows() -> None:
    # `concurrency.queue` (GitHub, May 2026) would queue instead of drop, but act's schema and
    # GitHub Enterprise Server releases before it refuse the whole workflow.
    from act_harness import act_binary

    for path in (WORKFLOW, CALLER):
        assert "queue" not in (load(path).get("concurrency") or {}), path
        for name, job in load(path)["jobs"].items():
            assert "queue" not in (job.get("concurrency") or {}), (path, name)
    act = act_binary()
    if act is None:
        pytest.skip("act is not installed")
    for path in (WORKFLOW, CALLER):
        done = subprocess.run(
            [str(act), "--list", "--workflows", str(path)],
            cwd=path.parents[2],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_caller_never_drops_a_rollback_and_still_cancels_superseded_checks() -> None:
    block = load(CALLER)["concurrency"]
    # Three rollbacks (or a rollback, then two manual monitor runs) dispatched while one runs:
    # each reaches its job, where the registry's group queues them.
    assert _dropped(block, _runs("workflow_dispatch")) == []
    assert _dropped(block, _runs("schedule")) == []
    # A newer push to a pull request cancels the checks of the older one (docs/actions.md).
    pushes = _runs("pull_request", event={"pull_request": {"number": 7}})
    assert _dropped(block, pushes) == [0, 1]
    # Reviews are judged one after the other, none cancelled half-way.
    reviews = _runs("pull_request_review", event={"pull_request": {"number": 7}})
    assert 0 not in _dropped(block, reviews)
    # Pushes to the default branch run one after the other, in order (publish, then the next).
    assert len({_group(block, run) for run in _runs("push")}) == 1
    assert not _cancels_in_progress(block, _runs("push", 1)[0])


def test_the_caller_as_it_was_drops_a_dispatched_rollback() -> None:
    block = {
        "group": "mlops-ci-${{ github.event_name }}-"
        "${{ github.event.pull_request.number || github.ref }}",
        "cancel-in-progress": "${{ github.event_name == 'pull_request' }}",
    }
    assert _dropped(block, _runs("workflow_dispatch")) == [1]


# --- an action's refusal never prints a workflow command of the caller's text ------------------

EVIL = "1\n::warning title=injected::from a manifest\r::add-mask::x"
ACTIONS = ROOT / "actions"

# (action, step id, its variables) whose value the step refuses and names in its error: setup's
# extras come from the matrix, i.e. a manifest's `framework` (plan reads any string there).
REFUSALS = {
    "setup cache": ("setup", "key", {"MLOPS_CI_CACHE": EVIL}),
    "setup extras": ("setup", "install", {"MLOPS_CI_EXTRAS": EVIL, "MLOPS_CI_REUSE": "true"}),
    "gate pull-request": ("gate", "gate", {"MLOPS_CI_PR": EVIL}),
    "report pull-request": ("report", "report", {"MLOPS_CI_PR": EVIL}),
    "report mode": ("report", "report", {"MLOPS_CI_MODE": EVIL}),
}


def _run_action_step(
    action: str,
    step_id: str,
    values: Mapping[str, str],
    tmp_path: Path,
    *,
    key: str = "id",
    stub_script: str = "#!/bin/sh\nexit 0\n",
) -> subprocess.CompletedProcess[str]:
    """Run the bash of the step of `action` whose `key` is `step_id`, with `values` set and a
    stand-in `mlops-ci` (`stub_script`) first on the PATH."""
    doc = yaml.safe_load((ACTIONS / action / "action.yml").read_text(encoding="utf-8"))
    (step,) = [s for s in doc["runs"]["steps"] if s.get(key) == step_id]
    stub = tmp_path / "bin"
    stub.mkdir(parents=True)
    (stub / "mlops-ci").write_text(stub_script)
    (stub / "mlops-ci").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "AWS_"))}
    env.update(dict.fromkeys(step.get("env", {}), ""))
    env.update(
        MLOPS_CI_SOURCE=str(ROOT),
        MLOPS_CI_CHECK=str(ACTIONS / "setup" / "installed.py"),
        RUNNER_TEMP=str(tmp_path),
        GITHUB_OUTPUT=str(tmp_path / "output"),
        GITHUB_PATH=str(tmp_path / "path"),
        PATH=f"{stub}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(values)
    return subprocess.run(
        ["bash", "-c", step["run"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_input_is_named_on_one_line(case: str, tmp_path: Path) -> None:
    action, step_id, values = REFUSALS[case]
    done = _run_action_step(action, step_id, values, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    # The runner reads a command from any line that starts with `::` (after spaces), and it
    # splits lines at \n, \r and \r\n.
    lines = re.split(r"\r\n|\r|\n", done.stdout + done.stderr)
    commands = [line for line in lines if line.lstrip().startswith("::")]
    assert len(commands) == 1 and commands[0].startswith("::error title=mlops-ci"), lines
    assert "injected" in commands[0]  # the value is still shown, escaped


def test_a_refused_input_printed_as_it_was_becomes_a_command(tmp_path: Path) -> None:
    # The step as it was: the value between quotes, as typed.
    done = subprocess.run(
        ["bash", "-c", "echo \"::error title=mlops-ci gate::got '$MLOPS_CI_PR'\"; exit 2"],
        env={**os.environ, "MLOPS_CI_PR": EVIL},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = re.split(r"\r\n|\r|\n", done.stdout)
    assert "::warning title=injected::from a manifest" in lines


# --- rollback: the dispatcher's text is data, never an option ------------------------------------


def _rollback(model: str, reason: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    doc = yaml.safe_load((ACTIONS / "rollback" / "action.yml").read_text(encoding="utf-8"))
    (step,) = doc["runs"]["steps"]
    registry = tmp_path / "registry"
    registry.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "AWS_"))}
    env.update(dict.fromkeys(step["env"], ""))
    env.update(
        MLOPS_CI_MODEL=model,
        MLOPS_CI_TO="1",
        MLOPS_CI_REASON=reason,
        MLOPS_CI_REGISTRY=str(registry),
        MLOPS_CI_ENVIRONMENT="production",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return subprocess.run(
        ["bash", "-c", step["run"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("model", ["-h", "--help"])
def test_a_rollback_of_a_model_named_like_an_option_fails(model: str, tmp_path: Path) -> None:
    # Typed into workflow_dispatch's rollback-model, it was read as --help: the job printed the
    # usage and went green, with nothing rolled back and nothing recorded.
    done = _rollback(model, "bad release", tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no model named '{model}'" in done.stderr


def test_a_rollback_reason_that_starts_with_dashes_is_kept_as_the_reason(tmp_path: Path) -> None:
    done = _rollback("iris", "--to=9 was wrong", tmp_path)
    # past argument parsing: the (empty) registry has no such model
    assert done.returncode == 2 and "no model named 'iris'" in done.stderr, done.stderr


# --- the plan's job summary: the pull request's names and paths stay text -----------------------

HOSTILE_NAME = (
    "x\n````\n<img src=x onerror=alert(1)> @acme/everyone\n# ✅ approved by @acme/admins\n```"
)


def _rendered_summary(name: str, tmp_path: Path) -> tuple[str, str]:
    """Plan a commit that adds a manifest named `name`; (summary source, its HTML as GitHub
    renders it, raw HTML kept so that any that escapes shows)."""
    import cmarkgfm
    from cmarkgfm.cmark import Options

    repo = tmp_path / "repo"
    folder = repo / "models" / "x"
    folder.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    base = _git(repo, "rev-parse", "HEAD")
    (folder / "model.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "mlops-ci/v1",
                "kind": "Model",
                "metadata": {"name": name, "version": "1.0.0", "risk": "low"},
                "spec": {"framework": "onnx", "artifact": {"path": "m.onnx", "sha256": "0" * 64}},
            }
        ),
        encoding="utf-8",
    )
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "add x")
    summary = tmp_path / "summary.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(tmp_path / "output"))
    subprocess.run(
        [str(BIN / "mlops-ci"), "plan", "--base", base, "--head", "HEAD", "--format", "github"],
        cwd=repo,
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    source = summary.read_text(encoding="utf-8")
    html = cmarkgfm.github_flavored_markdown_to_html(source, options=Options.CMARK_OPT_UNSAFE)
    return source, html


def test_the_plan_summary_keeps_a_hostile_model_name_in_its_code_block(tmp_path: Path) -> None:
    _, html = _rendered_summary(HOSTILE_NAME, tmp_path)
    assert "<img" not in html and "<h1" not in html, html
    assert html.count("<pre") == 1 and "&lt;img src=x" in html, html
    assert "@acme/everyone" in html.split("<pre", 1)[1].split("</pre>", 1)[0]  # text, shown whole


def test_a_fence_as_it_was_lets_the_name_out(tmp_path: Path) -> None:
    import cmarkgfm
    from cmarkgfm.cmark import Options

    text = f"1 changed\n  added {HOSTILE_NAME} 1.0.0  models/x/model.yaml"
    naive = "### mlops-ci plan\n\n```\n" + text + "\n```"
    html = cmarkgfm.github_flavored_markdown_to_html(naive, options=Options.CMARK_OPT_UNSAFE)
    assert "<img" in html and "<h1" in html


# --- a pull request moved to another base branch is judged again ---------------------------------


def _jobs_that_run(doc: Mapping[str, Any], context: Mapping[str, Any]) -> set[str]:
    """The jobs whose `if:` holds for `context` (jobs after a skipped one see empty needs)."""
    found = set()
    for name, job in doc["jobs"].items():
        condition = str(job.get("if", "success()"))
        condition = condition.strip().removeprefix("${{").removesuffix("}}")
        if _evaluate(condition, context):
            found.add(name)
    return found


def _pr_event(action: str, **event: Any) -> dict[str, Any]:
    return {
        "github": {
            "event_name": "pull_request",
            "ref": "refs/pull/7/merge",
            "repository": "acme/models",
            "run_id": "2000" if action == "edited" else "1000",
            "event": {"action": action, "pull_request": {"number": 7}, **event},
        },
        "inputs": {"registry": "s3://acme-models/prod", "rollback-model": ""},
        "needs": {},
    }


def test_a_pull_request_moved_to_another_base_is_judged_again() -> None:
    # The gate reads the policy at the base. Moved from a branch with a lenient policy to main
    # (an `edited` event with `changes.base`), a pull request kept the `mlops-ci/governance`
    # success it had earned there: statuses belong to the head commit, which did not change.
    caller = load(CALLER)
    assert "edited" in caller[True]["pull_request"]["types"]  # YAML 1.1 reads `on` as True
    retarget = _pr_event("edited", changes={"base": {"ref": {"from": "lenient"}}})
    # ... and its changes now count from another merge base: checked again, not only judged
    assert {"validate", "plan", "gate", "checks"} <= _jobs_that_run(load(), retarget)
    # A title edit too re-judges (cheap: the API only) and runs nothing else.
    assert _jobs_that_run(load(), _pr_event("edited", changes={"title": {"from": "x"}})) == {"gate"}
    assert {"validate", "plan", "gate", "checks"} <= _jobs_that_run(load(), _pr_event("opened"))


def test_an_edit_does_not_cancel_the_checks_of_a_push() -> None:
    block = load(CALLER)["concurrency"]
    runs = [_pr_event("synchronize"), _pr_event("edited", changes={"title": {"from": "x"}})]
    assert _dropped(block, runs) == []
    # a move to another base supersedes the checks of the old one
    moved = _pr_event("edited", changes={"base": {"ref": {"from": "lenient"}}})
    assert _dropped(block, [_pr_event("synchronize"), moved]) == [0]
    # and a push still cancels the checks of the one before
    assert _dropped(block, [_pr_event("synchronize"), _pr_event("synchronize")]) == [0]


# --- the default branch: a branch named so, never a tag; a schedule is always on it -------------

#: The jobs that deploy (build, publish) or publish the catalog only from the default branch.
DEFAULT_BRANCH_JOBS = ("build", "publish", "catalog")
#: What each `if:` said as it was: a tag pushed as `main` has the ref_name `main` too.
_AS_IT_WAS = "github.ref_name == github.event.repository.default_branch"
_BRANCH_ONLY = "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"


def _trusted_run(event_name: str, ref: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """A run of a push, schedule or dispatch whose upstream jobs all did their part."""
    return {
        "github": {
            "event_name": event_name,
            "ref": ref,
            "ref_name": ref.split("/", 2)[-1],
            "repository": "acme/models",
            "run_id": "3000",
            "event": event,
        },
        "inputs": {"registry": "s3://acme-models/prod", "rollback-model": "", "catalog": True},
        "needs": {
            "plan": {"result": "success", "outputs": {"changed": "true"}},
            "build": {"result": "success"},
            "monitor": {"result": "success"},
            "publish": {"result": "success"},
        },
    }


_REPOSITORY = {"full_name": "acme/models", "default_branch": "main"}


def _push(ref: str) -> dict[str, Any]:
    return _trusted_run("push", ref, {"ref": ref, "repository": _REPOSITORY})


#: GitHub's `schedule` payload names the cron line and the workflow, and no repository (so no
#: `default_branch`); GITHUB_REF is the default branch, the only one a schedule runs on.
SCHEDULE = _trusted_run(
    "schedule",
    "refs/heads/main",
    {"schedule": "17 5 * * *", "workflow": ".github/workflows/mlops-ci.yml"},
)


def _if(doc: Mapping[str, Any], job: str) -> str:
    return str(doc["jobs"][job]["if"]).strip()


def test_only_the_default_branch_deploys_and_publishes_the_catalog() -> None:
    doc = load()
    for job in DEFAULT_BRANCH_JOBS:
        assert _evaluate(_if(doc, job), _push("refs/heads/main")), job
        # A tag named like the default branch (refs/tags/main: ref_name `main` as well), e.g.
        # on an unreviewed commit, by a caller whose `on: push` has no branch filter.
        assert not _evaluate(_if(doc, job), _push("refs/tags/main")), job
        assert not _evaluate(_if(doc, job), _push("refs/heads/feature")), job
    assert _jobs_that_run(doc, _push("refs/tags/main")) == {"validate", "plan"}


def test_a_tag_named_like_the_default_branch_deployed_as_it_was() -> None:
    doc = load()
    for job in DEFAULT_BRANCH_JOBS:
        condition = _if(doc, job)
        assert _BRANCH_ONLY in condition, job
        assert _evaluate(condition.replace(_BRANCH_ONLY, _AS_IT_WAS), _push("refs/tags/main"))


def test_the_scheduled_catalog_runs_on_github_s_schedule_payload() -> None:
    doc = load()
    assert "repository" not in SCHEDULE["github"]["event"]
    assert {"monitor", "catalog"} <= _jobs_that_run(doc, SCHEDULE)
    # As it was, the catalog compared `main` with the payload's missing default_branch: the
    # daily catalog (with the monitor's verdicts) was never published.
    as_it_was = _if(doc, "catalog").replace(
        "(github.event_name == 'schedule' || " + _BRANCH_ONLY + ")", _AS_IT_WAS
    )
    assert _AS_IT_WAS in as_it_was
    assert not _evaluate(as_it_was, SCHEDULE)


# --- publish and rollback run only in a named environment ---------------------------------------

#: A recorder standing in for `mlops-ci`: it notes each call, so a test sees whether it ran.
_RECORDER = '#!/bin/sh\necho "$@" >> "$MLOPS_CI_CALLS"\nexit 0\n'


def _run_step_named(
    action: str, name: str, values: Mapping[str, str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the bash of step `name` of `action` with a recording `mlops-ci`: (result, calls)."""
    calls = tmp_path / "calls"
    done = _run_action_step(
        action,
        name,
        {"MLOPS_CI_CALLS": str(calls), **values},
        tmp_path,
        key="name",
        stub_script=_RECORDER,
    )
    return done, calls.read_text() if calls.exists() else ""


_DEPLOYING_STEPS = {
    "deploy": ("Deploy", {"MLOPS_CI_REGISTRY": "s3://acme-models/prod", "MLOPS_CI_BUILDS": "b"}),
    "rollback": (
        "Roll back",
        {
            "MLOPS_CI_REGISTRY": "s3://acme-models/prod",
            "MLOPS_CI_MODEL": "iris",
            "MLOPS_CI_TO": "1",
        },
    ),
}


@pytest.mark.parametrize("action", list(_DEPLOYING_STEPS))
@pytest.mark.parametrize("environment", ["", " \t"])
def test_an_empty_environment_deploys_nothing(
    action: str, environment: str, tmp_path: Path
) -> None:
    # `environment: ${{ vars.UNSET }}` in a caller gives the input '': the job then runs in no
    # environment at all (no required reviewers, no deployment-branch rule), and a write key
    # kept as a repository secret would publish unreviewed.
    step, values = _DEPLOYING_STEPS[action]
    done, calls = _run_step_named(
        action, step, {**values, "MLOPS_CI_ENVIRONMENT": environment}, tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert calls == "", "mlops-ci ran"
    assert "::error title=mlops-ci" in done.stdout and "environment" in done.stdout


@pytest.mark.parametrize("action", list(_DEPLOYING_STEPS))
def test_a_named_environment_deploys(action: str, tmp_path: Path) -> None:
    step, values = _DEPLOYING_STEPS[action]
    done, calls = _run_step_named(
        action, step, {**values, "MLOPS_CI_ENVIRONMENT": "production"}, tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "production" in calls
