"""`convattn classify`: the Fashion-MNIST CNN, the study's protocol by default.

Every field of ClassifyConfig is a flag; its default comes from --preset, and --help
lists each preset's value.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from convattn.classify.presets import PRESETS, ClassifyConfig
from convattn.common.errors import UserError

CHOICES = {"optimizer": ["sgd", "adamw"], "schedule": ["constant", "onecycle"],
           "augment": ["none", "flip", "shift-flip"]}
HELP = {
    "lrs": "learning rates to sweep; the best on dev is reported",
    "epochs": "training epochs per learning rate",
    "batch_size": "training batch size",
    "optimizer": "optimizer",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "weight decay (L2 for SGD, decoupled for AdamW)",
    "schedule": "learning-rate schedule per step: constant, or one-cycle (warm-up, cosine)",
    "warmup": "one-cycle warm-up as a fraction of all steps",
    "label_smoothing": "label smoothing of the training loss",
    "augment": "training augmentation: horizontal flip, and/or shift by up to 2 px",
    "dropout": "dropout after the first linear layer",
    "seed": "seed of initialisation, shuffling and dropout (the dev split is fixed)",
    "train_limit": "train on the first N training images only (0: all)",
    "eval_limit": "score the first N dev and N test images only (0: all)",
    "eval_batch_size": "evaluation batch size (speed only)",
    "jobs": "learning rates trained at once, one process each; 0: all, up to two per CPU core "
            "(speed only)",
    "threads": "CPU threads per run, 0: one per core (speed only; 1 avoids OpenMP stalls at batch 8 "
               "on a busy machine)",
}


def _defaults_text(name: str) -> str:
    def show(v):
        return " ".join(f"{x:g}" for x in v) if isinstance(v, tuple) else str(v)
    return "; ".join(f"{p} {show(getattr(c, name))}" for p, c in PRESETS.items())


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "classify", help="Q2: Fashion-MNIST CNN, learning-rate sweep, curves and kernels",
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
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs in --out and continue unfinished ones from their "
                             "last completed epoch")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore and overwrite earlier runs in --out")
    parser.add_argument("--pdf", action="store_true", help="also write every figure as PDF")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars; plain per-epoch log lines only")
    group = parser.add_argument_group("training recipe (defaults per preset)")
    for f in fields(ClassifyConfig):
        if f.name == "preset":
            continue
        flag = "--lr" if f.name == "lrs" else "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "default": None,
                  "help": f"{HELP[f.name]} (default: {_defaults_text(f.name)})"}
        if f.name == "lrs":
            kwargs.update(type=float, nargs="+", metavar="LR")
        elif f.type in ("bool", bool):
            kwargs.update(action=argparse.BooleanOptionalAction)
        else:
            kwargs.update(type={"int": int, "float": float, "str": str}[str(f.type)])
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
        group.add_argument(flag, **kwargs)
    parser.set_defaults(func=main)


def config_from_args(args) -> ClassifyConfig:
    base = PRESETS[args.preset]
    changes = {f.name: getattr(args, f.name) for f in fields(ClassifyConfig)
               if f.name != "preset" and getattr(args, f.name, None) is not None}
    if "lrs" in changes:
        changes["lrs"] = tuple(changes["lrs"])
    config = base.with_(**changes)
    checks = [
        (all(lr > 0 for lr in config.lrs), "--lr", "learning rates must be > 0"),
        (len(set(config.lrs)) == len(config.lrs), "--lr", "learning rates must be distinct"),
        (config.epochs >= 1, "--epochs", "must be >= 1"),
        (config.batch_size >= 1, "--batch-size", "must be >= 1"),
        (config.eval_batch_size >= 1, "--eval-batch-size", "must be >= 1"),
        (config.threads >= 0, "--threads", "must be >= 0"),
        (config.jobs >= 0, "--jobs", "must be >= 0"),
        (0 <= config.dropout < 1, "--dropout", "must be in [0, 1)"),
        (0 <= config.label_smoothing < 1, "--label-smoothing", "must be in [0, 1)"),
        (0 <= config.warmup < 1, "--warmup", "must be in [0, 1)"),
        (config.momentum >= 0, "--momentum", "must be >= 0"),
        (config.weight_decay >= 0, "--weight-decay", "must be >= 0"),
        (config.train_limit >= 0 and config.eval_limit >= 0, "--train-limit/--eval-limit",
         "must be >= 0"),
        (not config.nesterov or (config.optimizer == "sgd" and config.momentum > 0),
         "--nesterov", "needs --optimizer sgd and --momentum > 0"),
    ]
    for ok, flag, why in checks:
        if not ok:
            raise UserError(f"{flag}: {why}")
    return config


def main(args) -> int:
    from pathlib import Path

    from convattn.classify import train

    config = config_from_args(args)
    if args.resume and args.fresh:
        raise UserError("--resume and --fresh contradict each other; pass one")
    out = Path(args.out or f"runs/classify-{config.preset}")
    if not args.resume and not args.fresh and any(out.glob("runs/lr-*.pt")):
        raise UserError(f"--out {out} already holds classify runs; pass --resume to reuse and "
                        "continue them, or --fresh to start over")
    summary = train.run(config, out, data_dir=args.data, device=args.device, quiet=args.quiet,
                        fresh=args.fresh, pdf=args.pdf, strict=args.resume)
    best = summary["best"]
    for r in summary["runs"]:
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        dev = "-" if not r["val_acc"] or r["val_acc"][-1] is None else f"{r['val_acc'][-1]:.4f}"
        loss = "-" if not r["train_loss"] or r["train_loss"][-1] is None else f"{r['train_loss'][-1]:.4f}"
        print(f"lr {r['lr']:<6g} {r['status']:<8} train loss {loss}  dev acc {dev}  "
              f"test acc {test}  {r['seconds']:.0f} s")
    if best:
        print(f"best lr {best['lr']:g}: dev acc {best['val_acc']:.4f}, test acc "
              f"{best['test_acc']:.4f}; summary in {out / 'summary.json'}")
    else:
        print(f"no run finished without diverging; summary in {out / 'summary.json'}")
    return 0
