"""`convattn classify`: the Fashion-MNIST CNN, the study's protocol by default.

Every field of ClassifyConfig is a flag; its default comes from --preset, and --help
lists each preset's value. Stored runs in --out follow --runs (resume by default).
"""

from __future__ import annotations

from pathlib import Path

from convattn.classify import sweep
from convattn.classify.presets import PRESETS, ClassifyConfig
from convattn.common.config import add_flags, from_args
from convattn.common.runs import add_policy_flags


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "classify",
        description="Train the study's Fashion-MNIST CNN (769,930 parameters) for each "
                    "learning rate, choose the best on dev, report test accuracy, and draw the "
                    "curves and kernels. Writes summary.json, figures/ and runs/*.pt to --out.")
    parser.add_argument("--preset", choices=list(PRESETS), default="homework",
                        help="homework: the study's protocol (default); fast: a better recipe for "
                             "the same network; smoke: a tiny quick check")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/classify-PRESET)")
    parser.add_argument("--data", default=None,
                        help="folder with the four Fashion-MNIST IDX files, .gz or raw "
                             "(default: /usr/share/datasets/fashion-mnist, then the cache)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--pdf", action="store_true", help="also write every figure as PDF")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars; plain per-epoch log lines only")
    add_policy_flags(parser)
    add_flags(parser, ClassifyConfig, PRESETS, "training recipe (defaults per preset)",
              skip=("preset",))
    parser.set_defaults(func=main)


def main(args) -> int:
    config = from_args(args, PRESETS)
    out = Path(args.out or f"runs/classify-{config.preset}")
    summary = sweep.run(config, out, data_dir=args.data, device=args.device, quiet=args.quiet,
                        policy=args.runs, pdf=args.pdf)
    for r in summary["runs"]:
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        dev = "-" if not r["val_acc"] or r["val_acc"][-1] is None else f"{r['val_acc'][-1]:.4f}"
        loss = ("-" if not r["train_loss"] or r["train_loss"][-1] is None
                else f"{r['train_loss'][-1]:.4f}")
        print(f"lr {r['lr']:<6g} {r['status']:<8} train loss {loss}  dev acc {dev}  "
              f"test acc {test}  {r['seconds']:.0f} s")
    best = summary["best"]
    if best:
        print(f"best lr {best['lr']:g}: dev acc {best['val_acc']:.4f}, test acc "
              f"{best['test_acc']:.4f}; summary in {out / 'summary.json'}")
    else:
        print(f"no run finished without diverging; summary in {out / 'summary.json'}")
    return 0
