"""The one entry point: `convattn theory | classify | caption | reproduce | download`.

Each subcommand lives in its own module, which exposes `register(subparsers)`; that adds
its parser and sets `func(args) -> int`. Errors meant for people (UserError) print one
line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from convattn import __version__
from convattn.common.errors import UserError

# module paths of the registered subcommands, in the order --help lists them
SUBCOMMANDS = [
    "convattn.theory.cli",
    "convattn.classify.cli",
    "convattn.caption.cli",
    "convattn.report.reproduce",
    "convattn.data.download",
    "convattn.serve.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convattn",
        description="CNNs and attention, reproduced: theory, Fashion-MNIST classification, "
                    "remote-sensing captioning, and the study's report.",
    )
    parser.add_argument("--version", action="version", version=f"convattn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"convattn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("convattn: interrupted; finished work is saved, rerun with --resume to continue",
              file=sys.stderr)
        return 130
