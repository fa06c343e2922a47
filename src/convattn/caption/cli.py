"""`convattn caption`: train and evaluate; `convattn caption predict`: caption image files.

    convattn caption --data DIR [--preset homework|fast|smoke] [--out DIR] [flags]
    convattn caption predict --model RUN/model.pt IMAGE... [--beam K] [--attention-maps DIR]

Every training flag overrides one field of the preset; --help shows the homework values.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from convattn.caption.presets import HOMEWORK, PRESETS

# flag -> (config field, type, help); defaults shown are the homework preset's
FLAGS = [
    ("--encoder", "encoder", str, "frozen ImageNet CNN: efficientnet-lite0 or resnet18 (needs torchvision)"),
    ("--encoder-weights", "encoder_weights", str, "weights file for --encoder resnet18"),
    ("--feature-layer", "feature_layer", str,
     "encoder layer giving the region features (efficientnet-lite0: head = 1280 channels, "
     "blocks = 320), or auto: train one seed on each and keep the best on validation BLEU-4"),
    ("--image-size", "image_size", int, "resize images to NxN first (default: each at its own size)"),
    ("--models", "models", str, "decoders to train: no_attention and/or attention"),
    ("--embed-dim", "embed_dim", int, "word embedding size"),
    ("--hidden-dim", "hidden_dim", int, "LSTM hidden size"),
    ("--attention-dim", "attention_dim", int, "additive attention size"),
    ("--attention-act", "attention_act", str, "attention nonlinearity: tanh, or relu (the study's)"),
    ("--dropout", "dropout", float, "dropout on the LSTM output"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "(image, caption) pairs per batch"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--grad-clip", "grad_clip", float, "clamp every gradient entry to [-x, x]"),
    ("--seed", "seed", int, "first seed"),
    ("--seeds", "seeds", int, "seeds per model (seed, seed+1, ...)"),
    ("--beam", "beam", int, "beam size for the test captions (1 = greedy)"),
    ("--max-steps", "max_steps", int, "longest caption generated (default: the longest training caption)"),
    ("--show", "show", str, "images whose captions and attention maps are drawn"),
    ("--bootstrap", "bootstrap", int, "bootstrap resamples for the attention vs no-attention interval"),
    ("--threads", "threads", int, "torch CPU threads; 1 is fastest when other work shares the cores"),
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption", help="Q3: remote-sensing image captioning (LSTM decoders, with/without attention)",
        description="Train LSTM caption decoders without and with additive attention on frozen "
                    "CNN region features of a Karpathy-style dataset; report BLEU-4 (the study's "
                    "metric), corpus BLEU, ROUGE-L, CIDEr-D, over several seeds. "
                    "`convattn caption predict --help` captions image files with a trained model.")
    parser.add_argument("--data", help="dataset folder with a Karpathy-style dataset.json")
    parser.add_argument("--images", default=None, help="image folder (default: DATA/images)")
    parser.add_argument("--out", default="runs/caption", help="output folder (default: runs/caption)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="homework",
                        help="protocol whose values the flags below override (default: homework)")
    for flag, name, type_, help_ in FLAGS:
        default = getattr(HOMEWORK, name)
        if isinstance(default, tuple):
            parser.add_argument(flag, dest=name, type=type_, nargs="+", default=None,
                                help=f"{help_} (homework: {' '.join(default)})")
        else:
            shown = "" if default is None else f" (homework: {default})"
            parser.add_argument(flag, dest=name, type=type_, default=None, help=help_ + shown)
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR even when Java is present")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue unfinished runs in --out from their last epoch")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain every run in --out (cached features are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_train)

    sub = parser.add_subparsers(dest="caption_command", metavar="predict")
    pred = sub.add_parser("predict", help="caption image files with a trained model.pt",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pred.add_argument("--model", required=True,
                      help="a model.pt from a run (OUT/runs/<layer>/<model>/seed<N>/model.pt)")
    pred.add_argument("images", nargs="+", metavar="IMAGE")
    pred.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    pred.add_argument("--attention-maps", default=None, metavar="DIR",
                      help="write one attention heat-map figure per image here (attention models)")
    pred.add_argument("--device", default="auto", help="auto, cpu or cuda")
    pred.set_defaults(func=_predict)


def config_from_args(args) -> "CaptionConfig":
    from convattn.caption.encoders import DEFAULT_LAYER, ENCODER_LAYERS

    config = PRESETS[args.preset]
    known = {f.name for f in fields(config)}
    overrides = {name: getattr(args, name) for _, name, _, _ in FLAGS
                 if name in known and getattr(args, name, None) is not None}
    for name in ("models", "show"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    if args.no_meteor:
        overrides["meteor"] = False
    # another encoder without --feature-layer: that encoder's default layer
    encoder = overrides.get("encoder", config.encoder)
    if "feature_layer" not in overrides and encoder in ENCODER_LAYERS \
            and config.feature_layer not in (*ENCODER_LAYERS[encoder], "auto"):
        overrides["feature_layer"] = DEFAULT_LAYER[encoder]
    return replace(config, **overrides)


def _train(args) -> int:
    from convattn.caption.train import run
    from convattn.common.errors import UserError

    if not args.data:
        raise UserError("caption: --data DIR is required (a folder with dataset.json and images/); "
                        "see `convattn caption --help`")
    summary = run(config_from_args(args), args.data, args.out, device=args.device, quiet=args.quiet,
                  fresh=args.fresh, resume=args.resume, images_dir=args.images)
    print(format_table(summary))
    print(f"summary: {args.out}/summary.json")
    return 0


def format_table(summary: dict) -> str:
    seeds = len(summary["seeds"])
    lines = [f"test scores, mean ± std over {seeds} seed{'s' if seeds > 1 else ''} "
             f"(bleu4 = the study's metric; corpus BLEU-4, ROUGE-L, CIDEr-D as named):",
             f"{'model':<14}{'bleu4':>18}{'bleu4 best-val':>18}{'corpus BLEU-4':>18}"
             f"{'ROUGE-L':>18}{'CIDEr-D':>18}"]
    for model, m in summary["models"].items():
        cells = [f"{m[k + '_mean']:.4f} ± {m[k + '_std']:.4f}"
                 for k in ("test_bleu4", "test_bleu4_best", "corpus_bleu4", "rouge_l", "cider")]
        lines.append(f"{model:<14}" + "".join(f"{c:>18}" for c in cells))
    comp = summary.get("comparison")
    if comp:
        lines.append(f"attention - no attention, bleu4: {comp['difference']:+.4f}, 95% paired bootstrap "
                     f"interval over {comp['images']} test images [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}]")
    return "\n".join(lines)


def _predict(args) -> int:
    from convattn.caption.predict import predict
    from convattn.common.runtime import choose_device

    # `or 1`: the training parser's --beam (default None) shares this attribute
    for path, caption in predict(args.model, args.images, choose_device(args.device), beam=args.beam or 1,
                                 attention_maps=args.attention_maps):
        print(f"{path}\t{caption}")
    return 0
