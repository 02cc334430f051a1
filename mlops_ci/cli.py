"""The `mlops-ci` command line: arguments only; each command calls one function of the package.

Heavy modules are imported inside the command handlers, so `mlops-ci validate` starts fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from mlops_ci import __version__
from mlops_ci.errors import EXIT_USAGE, MlopsCiError, UsageError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line on a usage error, as every mlops-ci error does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _check_out(args: argparse.Namespace) -> None:
    """`--out` is a folder (a file for `report`): a file in its place, or above it, is a usage
    error now, rather than an OSError after the work is done."""
    out: Path | None = getattr(args, "out", None)
    if out is None:
        return
    if args.command == "report":
        if out.is_dir():
            raise UsageError(f"--out {out} is a folder, not a file")
        out = out.parent
    for existing in (out, *out.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "" if existing == args.out else f"{args.out}: "
                raise UsageError(f"--out {where}{existing} is a file, not a folder")
            return


# --- validate ---------------------------------------------------------------------------------


def _add_validate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check manifests against the schema and the repository",
        description="Validate model manifests: schema, artifact digests, paths, unique names. "
        "PATH is a model.yaml or a folder searched recursively (default: the current folder).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", type=Path, default=[Path()])
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--root",
        type=Path,
        help="repository root that artifact paths must stay inside "
        "(default: the enclosing git checkout, else the current folder)",
    )
    p.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from mlops_ci import validate

    return validate.main(args.paths, fmt=args.format, root=args.root)


# --- plan -------------------------------------------------------------------------------------


def _add_plan(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "plan",
        help="list the models changed between two commits, as a job matrix",
        description="The models whose manifest, artifact or data changed between BASE and HEAD: "
        "a list for a person by default; --format json for machines, --format github for the "
        "workflow (the strategy.matrix output). Exit 1 when a changed artifact lacks a higher "
        "version.",
    )
    p.add_argument("--base", required=True, help="base commit or ref")
    p.add_argument("--head", default="HEAD", help="head commit or ref (default HEAD)")
    p.add_argument("--repo", type=Path, default=Path(), help="the git checkout (default: .)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--registry",
        metavar="URI",
        help="on a push: start at the last commit this repository deployed into URI (its audit "
        "log), as deploy does, instead of --base (kept when it records none)",
    )
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from mlops_ci import plan

    return plan.main(
        args.repo, base=args.base, head=args.head, fmt=args.format, registry=args.registry
    )


# --- run --------------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline locally",
        description="Run every stage on every model of a repository, locally: no GitHub, "
        "no cloud. Prints progress stage by stage and model by model, then a table; deploys "
        "the models that pass into a local registry (no approvals checked) and writes its "
        "catalog. Exit 1 when a check failed, 2 when a model could not be checked at all.",
    )
    p.add_argument("repo", nargs="?", type=Path, default=Path(), metavar="REPO")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where reports and ONNX files go (default: REPO/.mlops-ci/run)",
    )
    p.add_argument(
        "--stages",
        metavar="LIST",
        help="comma-separated stages to run, of validate, convert, test, bench, deploy "
        "(default: all; validate always runs)",
    )
    p.add_argument(
        "--registry",
        metavar="URI",
        help="where the deploy stage publishes, checking no approvals; its catalog then goes "
        "to OUT/catalog (default: REPO/.mlops-ci/registry, catalog in REPO/.mlops-ci/catalog)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mlops_ci import pipeline

    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    return pipeline.main(args.repo, out=args.out, stages=stages, registry=args.registry)


# --- test, bench, report ---------------------------------------------------------------------


def _add_model_stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="the model.yaml")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--onnx", type=Path, metavar="PATH", help="the ONNX model to check")
    source.add_argument(
        "--convert-dir",
        type=Path,
        metavar="DIR",
        help="the output folder of `mlops-ci convert` (model.onnx, convert.json); default: --out",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where reports go")


def _add_test(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "test",
        help="run a model's declared test cases and metric thresholds on its ONNX model",
        description="Run the manifest's test cases and metric thresholds (on the evaluation data, "
        "digest verified first) on the ONNX model, and report the conversion's parity verdict. "
        "Writes DIR/test.json; exit 1 when any check fails.",
    )
    _add_model_stage_args(p)
    p.set_defaults(handler=_test)


def _test(args: argparse.Namespace) -> int:
    from mlops_ci import evaluate

    convert_dir = args.convert_dir or (None if args.onnx else args.out)
    return evaluate.main(args.manifest, onnx=args.onnx, convert_dir=convert_dir, out=args.out)


def _add_bench(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency and throughput, check budgets and regression against a baseline",
        description="Latency p50/p95/p99 and throughput of the native and ONNX model at the "
        "manifest's batch sizes; budget checks; with --baseline, a regression check against "
        "that ONNX model, timed interleaved in this process. Writes DIR/bench.json; exit 1 on "
        "a missed budget or a regression.",
    )
    _add_model_stage_args(p)
    p.add_argument(
        "--baseline", type=Path, metavar="PATH", help="ONNX model of the deployed version"
    )
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="seconds per measured configuration (default: the manifest's, else 1.0)",
    )
    p.add_argument("--no-native", action="store_true", help="measure only the ONNX model")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from mlops_ci import bench

    if args.time_budget is not None and not 0 < args.time_budget <= 600:
        raise UsageError("--time-budget must be between 0 and 600 seconds")
    convert_dir = args.convert_dir or (None if args.onnx else args.out)
    return bench.main(
        args.manifest,
        onnx=args.onnx,
        convert_dir=convert_dir,
        out=args.out,
        baseline=args.baseline,
        time_budget_s=args.time_budget,
        native=not args.no_native,
    )


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "report",
        help="render the pull-request report from stage results; post it as one sticky comment",
        description="Gather the per-model JSON reports under DIR (validate/convert/test/bench "
        ".json, e.g. downloaded workflow artifacts) and render one Markdown report: printed, "
        "written to --out, added to the job summary, failing checks as annotations. With --pr N "
        "--post, create or edit the pull request's sticky comment; when the token cannot "
        "comment (fork pull requests), write DIR/pr-comment.json for a workflow_run job to post "
        "with --post-prepared.",
    )
    p.add_argument("--dir", type=Path, metavar="REPORTS_DIR", help="folder with the JSON reports")
    p.add_argument(
        "--pr", type=int, metavar="N", help="the pull request (default: the event's, on a runner)"
    )
    p.add_argument("--post", action="store_true", help="create or update the sticky PR comment")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the Markdown here")
    p.add_argument(
        "--post-prepared",
        type=Path,
        metavar="FILE",
        help="post a pr-comment.json written by a fork's run (from a workflow_run job); the pull "
        "request must have the event's head SHA",
    )
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from mlops_ci.report import comment

    if args.post_prepared is not None:
        return comment.post_prepared(args.post_prepared)
    if args.dir is None:
        raise UsageError("--dir REPORTS_DIR is required (or --post-prepared FILE)")
    return comment.main(args.dir, pr=args.pr, post=args.post, out=args.out)


# --- gate ----------------------------------------------------------------------------------------


def _add_gate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "gate",
        help="decide whether a pull request has the approvals its models need",
        description="Read the pull request through the GitHub REST API (GITHUB_API_URL, "
        "GITHUB_TOKEN, GITHUB_REPOSITORY; MLOPS_CI_TEAMS_TOKEN for team membership), apply "
        ".mlops/policy.yaml as of the base commit, and set the commit status "
        "mlops-ci/governance on the head commit ('mlops-ci/governance (B)' for a pull request "
        "into a branch B other than the default one, judged by B's policy). Exit 0 approved, "
        "1 not approved, 2 error (fails closed). Nothing from the pull request is checked out "
        "or run.",
    )
    p.add_argument(
        "--pr",
        type=int,
        metavar="N",
        help="pull request number (default: from the event in GITHUB_EVENT_PATH)",
    )
    p.add_argument("--repo", metavar="OWNER/NAME", help="repository (default: GITHUB_REPOSITORY)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--no-status",
        action="store_true",
        help="decide and print, but post no commit status (a dry run)",
    )
    p.set_defaults(handler=_gate)


def _gate(args: argparse.Namespace) -> int:
    from mlops_ci import gate

    if args.pr is not None and args.pr < 1:
        raise UsageError("--pr must be a positive pull request number")
    return gate.main(args.pr, fmt=args.format, repository=args.repo, post_status=not args.no_status)


def _add_checks(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "checks",
        help="post mlops-ci/checks: whether every model job of the pull request passed",
        description="Judge the workflow's jobs (MLOPS_CI_NEEDS, set to ${{ toJSON(needs) }}) "
        "and set the commit status mlops-ci/checks on the pull request's head commit: success "
        "only when every job succeeded (the model job may be skipped when no model changed). "
        "A pull request into a branch B other than the default one gets "
        "'mlops-ci/checks (B)' instead. Exit 0 passed, 1 not passed, 2 error.",
    )
    p.add_argument("--sha", metavar="SHA", help="commit to mark (default: the event's PR head)")
    p.add_argument("--no-status", action="store_true", help="judge and print, post nothing")
    p.set_defaults(handler=_checks)


def _checks(args: argparse.Namespace) -> int:
    from mlops_ci import checks

    return checks.main(sha=args.sha, post_status=not args.no_status)


# --- convert -------------------------------------------------------------------------------------


def _add_convert(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "convert",
        help="convert one model to ONNX and prove parity with the native model",
        description="Convert the model of MANIFEST to ONNX: writes OUT/model.onnx, "
        "OUT/convert.json and OUT/convert.md. Exit 0 when the ONNX model passes the checker, "
        "matches the signature and agrees with the native model on the evaluation data; "
        "1 when it does not (or the artifact is refused); 2 on usage errors.",
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="the model.yaml")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, e.g. one that registers a custom skl2onnx converter "
        "(repeatable)",
    )
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from mlops_ci import convert

    return convert.main(args.manifest, out=args.out, plugins=args.plugin, debug=args.debug)


# --- serve ---------------------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the registry's models over the Open Inference Protocol (v2 REST)",
        description="Serve every model of the registry at the version its config.pbtxt names "
        "(and any published version by path) over the Open Inference Protocol v2 REST API, "
        "with the binary tensor extension, Prometheus /metrics and the prediction log. "
        "Follows deploys and rollbacks without a restart. SIGTERM drains, then exits 0.",
    )
    from mlops_ci.serve.defaults import DEFAULTS as D  # the one place serve's defaults live

    _add_registry(p)
    p.add_argument("--host", default=D.host, help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=int, default=D.port, help="port (default %(default)s; 0: any free one)"
    )
    p.add_argument(
        "--workers", type=int, default=D.workers, help="processes sharing the port (%(default)s)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=D.threads,
        metavar="N",
        help="onnxruntime intra-op threads per model version (default %(default)s; more shortens "
        "large batches, costs small requests a thread hand-off)",
    )
    p.add_argument(
        "--version-cache",
        type=int,
        default=D.version_cache,
        metavar="N",
        help="versions other than the serving ones that each worker keeps loaded after a "
        "request by path, least recently used out first (default %(default)s; 0: none)",
    )
    p.add_argument(
        "--prediction-log",
        metavar="URI",
        help="folder or s3:// prefix for the prediction log (default: REGISTRY/.mlops/"
        "predictions); 'off' writes none",
    )
    p.add_argument(
        "--sample-rate",
        type=float,
        default=D.sample_rate,
        metavar="RATE",
        help="share of requests logged for a model whose manifest sets no "
        "spec.serving.prediction_log.sample_rate (default %(default)g)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=D.max_body_mb,
        metavar="MB",
        help="request body limit (%(default)g)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=D.poll_s,
        metavar="SECONDS",
        help="registry poll interval (%(default)g)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=D.idle_timeout_s,
        metavar="SECONDS",
        help="close a connection idle (or stalled inside a request's headers) this long "
        "(%(default)g); a request body that stalls twice as long gets 408, and a client "
        "that reads nothing of its reply that long is disconnected",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from mlops_ci import serve
    from mlops_ci.serve.defaults import max_body_bytes

    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if not 1 <= args.threads <= 256:
        raise UsageError("--threads must be between 1 and 256")
    if not 0 <= args.version_cache <= 1000:
        raise UsageError("--version-cache must be between 0 and 1000")
    if not 0 <= args.sample_rate <= 1:
        raise UsageError("--sample-rate must be between 0 and 1")
    if not 0 < args.max_body_mb <= 4096:
        raise UsageError("--max-body-mb must be between 0 and 4096")
    if not 0.05 <= args.poll <= 60:
        raise UsageError("--poll must be between 0.05 and 60 seconds")
    if not 0.1 <= args.idle_timeout <= 3600:
        raise UsageError("--idle-timeout must be between 0.1 and 3600 seconds")
    log = args.prediction_log
    return serve.main(
        args.registry,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        version_cache=args.version_cache,
        prediction_log="" if log == "off" else log,
        max_body_bytes=max_body_bytes(args.max_body_mb),
        poll_s=args.poll,
        sample_rate=args.sample_rate,
        idle_timeout_s=args.idle_timeout,
        access_log=args.access_log,
    )


# --- catalog -------------------------------------------------------------------------------------


def _add_catalog(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "catalog",
        help="write the static site of every model in the registry (for GitHub Pages)",
        description="Write a static site to DIR: an index of every model (owners, risk, serving "
        "version, who shipped and approved it, tests, latency, drift and staleness), one page "
        "per model (audit timeline, what served when, charts of metrics, latency and drift) and "
        "catalog.json with the same facts. It opens from disk; a previous catalog in DIR is "
        "replaced as a whole.",
    )
    _add_registry(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the site's folder")
    p.add_argument(
        "--repo",
        type=Path,
        metavar="PATH",
        help="a checkout of the model repository: its models not yet deployed are listed too",
    )
    p.set_defaults(handler=_catalog)


def _catalog(args: argparse.Namespace) -> int:
    from mlops_ci import catalog

    return catalog.main(args.registry, args.out, repo=args.repo)


# --- monitor ------------------------------------------------------------------------------------


def _add_monitor(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "monitor",
        help="staleness, data and prediction drift, and decay of every deployed model",
        description="Judge the serving version of every model in the registry: staleness "
        "against the deployed manifest's deadlines, data drift of production inputs against "
        "the reference data (from this checkout, digest checked), prediction drift and decay. "
        "Writes <registry>/.mlops/monitor/<model>/<time>.json; with --issues, one GitHub issue "
        "per model that needs attention. Exit 1 when a model needs attention, 2 on errors.",
    )
    _add_registry(p)
    p.add_argument(
        "--repo", type=Path, default=Path(), help="checkout of the model repository (default .)"
    )
    p.add_argument(
        "--since",
        default="7d",
        metavar="DURATION",
        help="how far back the prediction log is read: 24h, 7d, 2w (default 7d)",
    )
    p.add_argument(
        "--data",
        metavar="PATH|URI",
        help="production inputs instead of the prediction log: Parquet or CSV file, folder "
        "or s3:// prefix (one model: with --model)",
    )
    p.add_argument(
        "--labels", metavar="PATH|URI", help="ground truth by request_id (default: manifest's)"
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME", help="only this model (repeatable)"
    )
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--issues",
        action="store_true",
        help="open, update or close one GitHub issue per model (GITHUB_TOKEN, GITHUB_REPOSITORY)",
    )
    p.add_argument(
        "--no-record", action="store_true", help="do not write verdict files into the registry"
    )
    p.set_defaults(handler=_monitor)


def _monitor(args: argparse.Namespace) -> int:
    from mlops_ci.monitor import command

    return command.main(
        args.registry,
        repo=args.repo,
        since=args.since,
        data=args.data,
        labels=args.labels,
        models=args.model,
        fmt=args.format,
        issues=args.issues,
        record=not args.no_record,
    )


# --- deploy, rollback, audit ------------------------------------------------------------------


def _add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        required=True,
        metavar="URI",
        help="the registry: a folder, file:///path or s3://bucket/prefix (AWS_ENDPOINT_URL and "
        "the usual AWS variables pick the store)",
    )


def _add_deploy(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "deploy",
        help="publish the models a push to the default branch changed, approvals re-verified",
        description="For a push to the default branch (in a checkout of it): for every model "
        "changed since the last commit whose deploy the registry records (--base when none), "
        "find the merged pull requests that changed it, re-run the gate's decision for each, "
        "require its manifest and artifact to be the last one's approved blobs, then publish "
        "each such model's "
        "ONNX (from --builds DIR/<model>/) into the registry, record it in the audit log, "
        "create a GitHub Deployment and smoke-test it. Exit 0 deployed, 1 refused or the smoke "
        "test failed (rolled back), 2 usage or unreachable.",
    )
    _add_registry(p)
    p.add_argument(
        "--builds",
        type=Path,
        required=True,
        metavar="DIR",
        help="convert/test outputs, one folder per model name",
    )
    p.add_argument("--repo", type=Path, default=Path(), help="the checkout (default: .)")
    p.add_argument("--sha", help="the pushed commit (default: the push event's `after`)")
    p.add_argument(
        "--base",
        help="the commit before the push (default: the event's `before`): the start when the "
        "registry records no earlier deploy",
    )
    p.add_argument(
        "--environment",
        default="production",
        help="the GitHub Deployment environment (default: production)",
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="no GitHub: publish with source `local`, checking no approvals",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from mlops_ci import deploy_push

    return deploy_push.main(
        args.registry,
        repo=args.repo,
        builds=args.builds,
        base=args.base,
        sha=args.sha,
        environment=args.environment,
        local=args.local,
        fmt=args.format,
    )


def _add_rollback(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "rollback",
        help="serve an earlier version of a model again",
        description="Serve version VERSION (the registry's number n) of NAME again: it must "
        "exist and its model.onnx must match its release.json. Rewrites config.pbtxt's version "
        "policy after an audit record with the actor and the reason; on a runner also a GitHub "
        "Deployment.",
    )
    p.add_argument("name", metavar="NAME")
    _add_registry(p)
    p.add_argument(
        "--to",
        type=int,
        required=True,
        metavar="VERSION",
        help="the registry version n to serve (1, 2, …; `audit show NAME` lists them), not the "
        "semver",
    )
    p.add_argument(
        "--reason", required=True, metavar="TEXT", help="why, for the audit record (not empty)"
    )
    p.add_argument(
        "--environment",
        default="production",
        help="the GitHub Deployment environment (default: production)",
    )
    p.add_argument("--local", action="store_true", help="no GitHub Deployment")
    p.set_defaults(handler=_rollback)


def _rollback(args: argparse.Namespace) -> int:
    from mlops_ci import deploy_push

    if args.to < 1:
        raise UsageError("--to must be a registry version (1, 2, …)")
    return deploy_push.rollback_main(
        args.registry,
        args.name,
        args.to,
        args.reason,
        environment=args.environment,
        local=args.local,
    )


def _add_baseline(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "baseline",
        help="fetch the serving ONNX model of each changed model, for the regression check",
        description="For each model of plan's matrix, write OUT/<name>/baseline.onnx (the "
        "version the registry serves now, digest-checked) and OUT/<name>/baseline.json (its "
        "release, or why there is nothing to compare with). Never fails on a missing baseline.",
    )
    _add_registry(p)
    p.add_argument("--matrix", required=True, help="plan's JSON matrix of changed models")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.set_defaults(handler=_baseline)


def _baseline(args: argparse.Namespace) -> int:
    from mlops_ci import baseline

    return baseline.main(args.registry, args.matrix, args.out)


def _add_audit(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "audit",
        help="verify the registry's audit log, or show what served when",
        description="`audit verify`: check the hash chain of .mlops/audit.jsonl against its "
        "head and every release.json; exit 1 naming the first bad record. `audit show NAME "
        "[--at TIME]`: what served NAME then, approved by whom, with which results.",
    )
    actions = p.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    verify = actions.add_parser("verify", help="check the audit log's hash chain")
    _add_registry(verify)
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.set_defaults(handler=_audit_verify)
    show = actions.add_parser("show", help="what served a model, when, approved by whom")
    show.add_argument("name", metavar="NAME")
    _add_registry(show)
    show.add_argument("--at", metavar="TIME", help="ISO 8601 time (default: now)")
    show.add_argument("--format", choices=["text", "json"], default="text")
    show.set_defaults(handler=_audit_show)


def _audit_verify(args: argparse.Namespace) -> int:
    from mlops_ci import deploy_push

    return deploy_push.verify_main(args.registry, args.format)


def _audit_show(args: argparse.Namespace) -> int:
    from mlops_ci import deploy_push

    return deploy_push.show_main(args.registry, args.name, args.at, args.format)


# --- the parser -------------------------------------------------------------------------------

# In the order of the pipeline, as `--help` lists them.
_COMMANDS = (
    _add_validate,
    _add_plan,
    _add_convert,
    _add_test,
    _add_bench,
    _add_report,
    _add_gate,
    _add_checks,
    _add_deploy,
    _add_rollback,
    _add_audit,
    _add_baseline,
    _add_run,
    _add_serve,
    _add_monitor,
    _add_catalog,
)


def build_parser() -> _Parser:
    parser = _Parser(
        prog="mlops-ci",
        description="GitOps CI/CD for machine-learning models on GitHub.",
        epilog="Exit codes: 0 success, 1 the check said no, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"mlops-ci {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of internal errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    commands = list(sub.choices.values())
    for command in commands:
        # `mlops-ci convert --debug` as well as `mlops-ci --debug convert`; also after the
        # actions of a command that has them (`mlops-ci audit show NAME --debug`).
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands.extend(action.choices.values())
    for command in commands:
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
        # the innermost command's parser reports unknown flags, with its own usage line
        command.set_defaults(command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mlops_ci import gha

    # Names, messages and values from pull requests are printed in many places: on a runner,
    # none of them may become a workflow command, so both streams are guarded here, once.
    with gha.guarded_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "command_parser", parser).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    handler: Handler = args.handler
    try:
        _check_out(args)
        return handler(args)
    except MlopsCiError as exc:
        print(f"mlops-ci {args.command}: error: {exc}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlops-ci: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        # A library of an extra that is not installed (uvicorn for serve, jinja2 for catalog):
        # a setup mistake to name, not an internal error to report.
        if args.debug:
            traceback.print_exc()
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "mlops_ci":
            return _internal_error(args, exc)
        extra = _EXTRA_OF.get(args.command, "all")
        print(
            f"mlops-ci {args.command}: error: {missing} is not installed: "
            f"pip install 'mlops-ci[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as exc:  # the last line of defence: one message, never a traceback
        if args.debug:
            traceback.print_exc()
            return EXIT_USAGE
        return _internal_error(args, exc)


#: The extra that holds the libraries of each command (pyproject.toml); `all` otherwise.
_EXTRA_OF = {
    "serve": "serve",
    "catalog": "catalog",
    "monitor": "monitor",
    "deploy": "deploy",
    "rollback": "deploy",
    "audit": "deploy",
    "baseline": "deploy",
}


def _internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    if not args.debug:
        print(
            f"mlops-ci {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "(run again with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
