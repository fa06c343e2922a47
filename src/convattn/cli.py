"""The one entry point: `convattn theory | classify | caption | reproduce | download | data | serve`.

Each subcommand lives in its own module, which exposes `register(subparsers)`; that adds
its parser and sets `func(args) -> int`. Only the module of the subcommand being run is
imported (the others would load torch, matplotlib and the web stack for nothing); the
others get a bare parser. The one-line help of every subcommand lives here, in
SUBCOMMANDS: `convattn --help` is the only place it is shown.
Errors meant for people (UserError) print one line and exit 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from convattn import __version__
from convattn.common.errors import UserError

# name -> (module exposing register(), one-line help), in the order --help lists them
SUBCOMMANDS = {
    "theory": ("convattn.theory.cli",
               "Q1 and Q2.1: parameter counts, self-attention algebra, equivariance"),
    "classify": ("convattn.classify.cli",
                 "Q2: Fashion-MNIST CNN, learning-rate sweep, curves and kernels"),
    "caption": ("convattn.caption.cli",
                "Q3: remote-sensing image captioning (LSTM decoders, with/without attention)"),
    "reproduce": ("convattn.report.reproduce",
                  "run the whole study and write report.md, report.html, results.json"),
    "download": ("convattn.data.download",
                 "download a dataset into the cache, verified by SHA-256"),
    "data": ("convattn.data.cli",
             "check a caption dataset: duplicates, vocabulary, test refs in training"),
    "serve": ("convattn.serve.cli",
              "a local web page: caption images, explore the test set, read the report"),
}


def build_parser(argv: list[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: the chosen subcommand in full, the others by name and help."""
    parser = argparse.ArgumentParser(
        prog="convattn",
        description="CNNs and attention, reproduced: theory, Fashion-MNIST classification, "
                    "remote-sensing captioning, and the study's report.",
    )
    parser.add_argument("--version", action="version", version=f"convattn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
        print("convattn: interrupted; finished work is saved, run the same command again to continue",
              file=sys.stderr)
        return 130
