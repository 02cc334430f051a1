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
        description="The models whose manifest, artifact or data changed between BASE and HEAD, "
        "as JSON for strategy.matrix. Exit 1 when a changed artifact lacks a higher version.",
    )
    p.add_argument("--base", required=True, help="base commit or ref")
    p.add_argument("--head", default="HEAD", help="head commit or ref (default HEAD)")
    p.add_argument("--repo", type=Path, default=Path(), help="the git checkout (default: .)")
    p.add_argument("--format", choices=["json", "text", "github"], default="json")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from mlops_ci import plan

    return plan.main(args.repo, base=args.base, head=args.head, fmt=args.format)


# --- run --------------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline locally",
        description="Run every stage on every model of a repository, locally: no GitHub, "
        "no cloud. Prints progress stage by stage and model by model, then a table.",
    )
    p.add_argument("repo", nargs="?", type=Path, default=Path(), metavar="REPO")
    p.add_argument(
        "--out",
        type=Path,
        help="where reports and ONNX files go (default: REPO/.mlops-ci/run)",
    )
    p.add_argument("--stages", help="comma-separated subset of stages to run (default: all)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mlops_ci import pipeline

    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    return pipeline.main(args.repo, out=args.out, stages=stages)


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
    from mlops_ci import pr_report

    if args.post_prepared is not None:
        return pr_report.post_prepared(args.post_prepared)
    if args.dir is None:
        raise UsageError("--dir REPORTS_DIR is required (or --post-prepared FILE)")
    return pr_report.main(args.dir, pr=args.pr, post=args.post, out=args.out)


# --- gate ----------------------------------------------------------------------------------------


def _add_gate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "gate",
        help="decide whether a pull request has the approvals its models need",
        description="Read the pull request through the GitHub REST API (GITHUB_API_URL, "
        "GITHUB_TOKEN, GITHUB_REPOSITORY; MLOPS_CI_TEAMS_TOKEN for team membership), apply "
        ".mlops/policy.yaml as of the base commit, and set the commit status "
        "mlops-ci/governance on the head commit. Exit 0 approved, 1 not approved, 2 error "
        "(fails closed). Nothing from the pull request is checked out or run.",
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
    _add_run,
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
    for command in sub.choices.values():
        # `mlops-ci convert --debug` as well as `mlops-ci --debug convert`.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
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
    except Exception as exc:  # the last line of defence: one message, never a traceback
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"mlops-ci {args.command}: internal error: {type(exc).__name__}: {exc}\n"
                "(run again with --debug for the traceback, and please report it)",
                file=sys.stderr,
            )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
