"""`convattn theory`: Q1 and Q2.1 as Markdown (or --json); --stack for any conv/pool/linear stack."""

from __future__ import annotations

import json
from pathlib import Path

from convattn.common import io
from convattn.report import templating
from convattn.theory import STUDY_CNN, STUDY_MLP
from convattn.theory.answer import answer
from convattn.theory.stack import parse_input


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "theory",
        description="Answer the study's theory questions by computation. With --stack, "
                    "derive the shapes and parameters of any conv/pool/linear stack; conv and "
                    "pool sizes floor like torch, and the formula says where.")
    parser.add_argument("--input", default="28x28x3", help="input shape HxWxC (default: 28x28x3)")
    parser.add_argument("--stack", default=None,
                        help='layers "conv:OUT:K[:STRIDE[:PAD]] pool:K[:STRIDE] linear:N" '
                             f'(default: the study\'s CNN "{STUDY_CNN}" and MLP "{STUDY_MLP}")')
    parser.add_argument("--strict", action="store_true",
                        help="refuse a conv or pool whose stride does not tile its input, instead "
                             "of flooring like torch (default: floor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random instances (default: 0)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--out", default=None,
                        help="also write theory.md and theory.json to this folder")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    result = answer(parse_input(args.input), args.stack, args.seed, strict=args.strict)
    markdown = templating.render("stack.md.j2" if args.stack is not None else "theory.md.j2", result=result)
    if args.out:
        io.write_text(Path(args.out) / "theory.md", markdown)
        io.write_json(Path(args.out) / "theory.json", result)
    print(json.dumps(result, indent=2) if args.json else markdown, end="\n" if args.json else "")
    return 0
