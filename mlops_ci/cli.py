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
from mlops_ci.errors import EXIT_USAGE, MlopsCiError

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


# --- the parser -------------------------------------------------------------------------------

_COMMANDS = (_add_validate, _add_plan, _add_run)


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
