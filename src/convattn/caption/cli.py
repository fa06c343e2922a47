"""`convattn caption`: train and evaluate; `convattn caption predict`: caption image files.

    convattn caption --data DIR [--preset homework|fast|smoke] [--out DIR] [--runs POLICY] [flags]
    torchrun --nproc-per-node N -m convattn caption ...   (or caption --nproc N: data parallel)
    convattn caption predict --model RUN/model.pt IMAGE... [--beam K] [--rerank N] [--attention-maps DIR]
    convattn caption compare A_OUT:MODEL B_OUT:MODEL [--json]

Every training flag overrides one field of the preset (caption/presets.py); --help lists
each preset's value.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from convattn.caption.compare import compare_summaries, load_model_summary
from convattn.caption.encoders import DEFAULT_LAYER, ENCODER_LAYERS
from convattn.caption.ensemble import score_ensemble
from convattn.caption.experiment import run
from convattn.caption.predict import predict
from convattn.caption.protocol import format_protocol, protocol_table, read_summaries
from convattn.caption.presets import PRESETS, CaptionConfig
from convattn.common import distributed
from convattn.common.config import add_flags, flag_of, from_args
from convattn.common.errors import UserError
from convattn.common.runs import add_policy_flags
from convattn.common.runtime import choose_device


def register(subparsers) -> None:
    # allow_abbrev=False: argparse classifies every argument before choosing the subcommand, so
    # an abbreviation could clash with predict's own flags (predict --model vs --models, --model-dim)
    parser = subparsers.add_parser(
        "caption", allow_abbrev=False,
        description="Train LSTM caption decoders without and with additive attention on frozen "
                    "CNN region features of a Karpathy-style dataset; report BLEU-4 (the study's "
                    "metric), corpus BLEU, ROUGE-L, CIDEr-D, over several seeds. "
                    "`convattn caption predict --help` captions image files with a trained model.")
    parser.add_argument("--data", help="dataset folder with a Karpathy-style dataset.json")
    parser.add_argument("--images", default=None, help="image folder (default: DATA/images)")
    parser.add_argument("--out", default="runs/caption", help="output folder (default: runs/caption)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="homework",
                        help="protocol whose values the flags below override (default: homework)")
    add_flags(parser, CaptionConfig, PRESETS, "training and evaluation (each help ends with every preset's value)",
              skip=("preset",))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="train data parallel in N processes on this machine, as `torchrun "
                             "--nproc-per-node N -m convattn caption ...` does (gloo on CPU, NCCL on "
                             "GPUs, one GPU each); --batch-size stays the global batch, split over "
                             "the processes; not under torchrun, which reads it as its own "
                             "--nproc-per-node (default: 1)")
    add_policy_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_train)

    sub = parser.add_subparsers(dest="caption_command", metavar="{predict,compare,ensemble,maps,protocol}")
    pred = sub.add_parser("predict", help="caption image files with a trained model.pt",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pred.add_argument("--model", required=True, action="append", metavar="MODEL_PT",
                      help="a model.pt from a run (OUT/runs/<layer>/<model>/seed<N>/model.pt); repeated "
                           "(seeds of one run), the models decode as one ensemble, their word "
                           "probabilities averaged")
    pred.add_argument("images", nargs="+", metavar="IMAGE")
    pred.add_argument("--beam", type=int, default=None,
                      help="beam size (1 = greedy); when unset, the run's beam, as the web page")
    # its own dest: the training parser's --rerank (default None) shares the namespace
    pred.add_argument("--rerank", dest="predict_rerank", type=int, default=None, metavar="N",
                      help="consensus reranking of the beam over the N nearest training images, as the "
                           "run did for its test captions (a model.pt trained with --rerank carries "
                           "them; when unset, its N); 0 = off")
    pred.add_argument("--attention-maps", default=None, metavar="DIR",
                      help="write one attention heat-map figure per image here (attention models)")
    pred.add_argument("--device", default="auto", help="auto, cpu or cuda")
    pred.set_defaults(func=_predict)

    comp = sub.add_parser("compare", help="paired bootstrap of test CIDEr-D between two recipes: "
                          "decoders of two experiments on the same dataset")
    comp.add_argument("a", metavar="A_OUT:MODEL", help="an experiment's --out folder (or its summary.json) "
                      "and one of its decoders, e.g. runs/rsicd:attention")
    comp.add_argument("b", metavar="B_OUT:MODEL", help="the other; the difference is B - A")
    comp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    comp.set_defaults(func=_compare)

    ens = sub.add_parser("ensemble", help="score the seeds of one experiment's decoder as one ensemble "
                         "(word probabilities averaged): validation and test, paired against the seeds")
    ens.add_argument("spec", metavar="OUT:MODEL", help="an experiment's --out folder and one of its "
                     "decoders trained with 2 or more seeds, e.g. runs/rsicd-best:attention")
    ens.add_argument("--data", dest="ensemble_data", default=None,
                     help="the dataset folder (default: the one in OUT/summary.json)")
    ens.add_argument("--device", dest="ensemble_device", default="auto", help="auto, cpu or cuda")
    ens.add_argument("--json", dest="ensemble_json", action="store_true", help="print the result as JSON")
    ens.set_defaults(func=_ensemble)

    maps = sub.add_parser("maps", help="where an experiment's attention decoder looks: per seed, the maps "
                          "of its captions of a split (greedy by default), their outer-ring share, peak, "
                          "entropy and shift")
    maps.add_argument("spec", metavar="OUT:MODEL", help="an experiment's --out folder and one of its "
                      "attention decoders, e.g. runs/best:attention")
    maps.add_argument("--split", dest="maps_split", choices=("val", "test"), default="test")
    maps.add_argument("--beam", dest="maps_beam", type=int, default=1, help="beam size (1 = greedy)")
    maps.add_argument("--data", dest="maps_data", default=None,
                      help="the dataset folder (default: the one in OUT/summary.json)")
    maps.add_argument("--device", dest="maps_device", default="auto", help="auto, cpu or cuda")
    maps.add_argument("--json", dest="maps_json", action="store_true", help="print the result as JSON")
    maps.set_defaults(func=_maps)
    _register_protocol(sub)


def _register_protocol(sub) -> None:
    prot = sub.add_parser("protocol", help="what the protocol does to a number: test CIDEr-D of each "
                          "captioner on the official split and on random re-splits, checkpoints chosen on "
                          "validation and picked on test, from experiments' summaries")
    prot.add_argument("outs", nargs="+", metavar="OUT", help="experiments' --out folders (or summary.json "
                      "files) of one dataset: official split and --split random-N runs")
    prot.add_argument("--json", dest="protocol_json", action="store_true", help="print the table as JSON")
    prot.set_defaults(func=_protocol)


def config_from_args(args) -> CaptionConfig:
    """The preset with the given flags; another --encoder without --feature-layer gets that
    encoder's default layer when the preset's is not one of its layers."""
    preset = PRESETS[args.preset]
    if args.encoder in ENCODER_LAYERS and args.feature_layer is None \
            and preset.feature_layer not in (*ENCODER_LAYERS[args.encoder], "auto"):
        args.feature_layer = DEFAULT_LAYER[args.encoder]
    return from_args(args, PRESETS)


def _train(args) -> int:
    if not args.data:
        raise UserError("caption: --data DIR is required (a folder with dataset.json and images/); "
                        "see `convattn caption --help`")
    config = config_from_args(args)  # bad flags fail here, before any process starts
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: must be at least 1 (1 = this process alone)")
    if args.nproc > 1 and not distributed.launched():
        distributed.launch(args.nproc, worker_argv(args))
        return 0
    summary = run(config, args.data, args.out, device=args.device, quiet=args.quiet,
                  policy=args.runs, images_dir=args.images)
    if summary is None:  # a data-parallel rank other than 0: rank 0 prints
        return 0
    print(format_table(summary))
    print(f"summary: {args.out}/summary.json")
    return 0


def worker_argv(args) -> list[str]:
    """The command line, after `python -m convattn`, that each --nproc process runs: the
    flags that were given, rebuilt from `args` (so it works however main() was called).
    Not --nproc itself: torchrun's parser reads it as its own --nproc-per-node."""
    argv = ["--debug"] if args.debug else []
    argv += ["caption", f"--data={args.data}", f"--out={args.out}", f"--preset={args.preset}",
             f"--device={args.device}", f"--runs={args.runs}"]
    argv += [f"--images={args.images}"] if args.images else []
    argv += ["--quiet"] if args.quiet else []
    for f in fields(CaptionConfig):
        value, flag = getattr(args, f.name, None), flag_of(CaptionConfig, f.name)
        if f.name == "preset" or value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv.append(f"{flag}={value}")
    return argv


def format_table(summary: dict) -> str:
    seeds = len(summary["seeds"])
    lines = [f"test scores, mean ± std over {seeds} seed{'s' if seeds > 1 else ''} "
             f"(bleu4 = the study's metric; corpus BLEU-4, ROUGE-L, CIDEr-D as named):",
             f"{'model':<14}{'bleu4':>18}{'bleu4 best-val':>18}{'corpus BLEU-4':>18}"
             f"{'ROUGE-L':>18}{'CIDEr-D':>18}"]
    references = [m for m, s in summary["models"].items() if s.get("deterministic")]
    if references:
        lines.insert(1, f"(reference captioners {', '.join(references)}: one deterministic run each, no spread)")
    for model, m in summary["models"].items():
        cells = [f"{m[k + '_mean']:.4f} ± {m[k + '_std']:.4f}"
                 for k in ("test_bleu4", "test_bleu4_best", "corpus_bleu4", "rouge_l", "cider")]
        lines.append(f"{model:<14}" + "".join(f"{c:>18}" for c in cells))
    lines.append("coco-caption metrics (pycocoevalcap), mean ± std:")
    lines.append(f"{'model':<14}" + "".join(f"{k:>18}" for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")))
    for model, m in summary["models"].items():
        cells = [f"{v['mean']:.4f} ± {v['std']:.4f}" if v["mean"] is not None else "—"
                 for v in (m["coco"][k] for k in ("bleu1", "bleu4", "meteor", "rouge_l", "cider"))]
        lines.append(f"{model:<14}" + "".join(f"{c:>18}" for c in cells))
    for model, m in summary["models"].items():
        if "border_mass" in m:
            sentinel = f"; {m['sentinel_weight']:.3f} on the sentinel" if m["sentinel_weight"] > 0 else ""
            lines.append(f"{model}: {m['border_mass']:.3f} of the attention on the grid's outer ring, which is "
                         f"{m['border_area_share']:.3f} of the area: {m['border_ratio']:.2f}x{sentinel}"
                         + (f"; peak weight {m['attention_peak']:.1f}x uniform, entropy "
                            f"{m['attention_entropy']:.2f} of uniform's" if "attention_peak" in m else "")
                         + (f"; maps move {m['attention_shift']:.2f} (total variation) between a caption's "
                            "words" if "attention_shift" in m else ""))
    comp = summary.get("comparison")
    if comp:
        lines.append(f"attention - no attention, bleu4: {comp['difference']:+.4f}, 95% paired bootstrap "
                     f"interval over {comp['images']} test images [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}]")
    for c in summary.get("against_reference", []):
        lines.append(f"{c['pair']} (the strongest reference captioner by validation), {c['metric']}: "
                     f"{c['difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]")
    return "\n".join(lines + specificity_lines(summary))


def specificity_lines(summary: dict) -> list[str]:
    """How specific each model's test captions are (metrics.specificity), mean over seeds."""
    lines = []
    for model, m in summary["models"].items():
        if "specificity" not in m:
            continue
        sp = {k: v["mean"] for k, v in m["specificity"].items() if k != "seeds"}
        if not lines:
            lines.append(f"test captions (references: {sp['references_length_mean']:.1f} tokens, "
                         f"{sp['references_vocabulary']:,.0f} words):")
        lines.append(f"  {model}: {sp['distinct_per_image']:.2f} distinct per image, "
                     f"{100 * sp['copied_from_training']:.0f}% a training caption word for word, "
                     f"{sp['vocabulary']:.0f} words used, {sp['length_mean']:.1f} tokens long")
    return lines


def _predict(args) -> int:
    # None: the run's beam, as the run decoded its test captions
    for path, caption in predict(args.model, args.images, choose_device(args.device), beam=args.beam,
                                 attention_maps=args.attention_maps, rerank=args.predict_rerank):
        print(f"{path}\t{caption}")
    return 0


def _ensemble(args) -> int:
    out = score_ensemble(args.spec, choose_device(args.ensemble_device), args.ensemble_data)
    if args.ensemble_json:
        print(json.dumps({k: v for k, v in out.items() if k != "test"} | {"test": {
            k: v for k, v in out["test"].items() if k != "cider_per_image"}}, indent=2))
        return 0
    seeds, v = out["val"]["seeds_cider"], out["vs_seeds"]
    print(f"{out['model']}, {len(seeds)} seeds as one ensemble: validation CIDEr-D {out['val']['cider']:.4f} "
          f"(each seed alone, decoded the same way: {', '.join(f'{c:.4f}' for c in seeds)})")
    print(f"test CIDEr-D {out['test']['coco']['cider']:.4f}, BLEU-4 {out['test']['coco']['bleu4']:.4f}; "
          f"ensemble - seeds: {v['difference']:+.4f}, 95% paired bootstrap interval over {v['images']} test "
          f"images [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]")
    return 0


def _maps(args) -> int:
    from convattn.caption.maps import MEASURES, map_statistics

    if args.maps_beam < 1:
        raise UserError(f"--beam {args.maps_beam}: must be at least 1 (1 = greedy)")
    out = map_statistics(args.spec, choose_device(args.maps_device), args.maps_split, args.maps_beam, args.maps_data)
    if args.maps_json:
        print(json.dumps(out, indent=2))
        return 0
    decoding = "greedy" if out["beam"] == 1 else f"beam {out['beam']}"
    print(f"{out['model']}, {out['split']} captions ({decoding}), every generated word's map on the "
          f"{out['grid'][0]}x{out['grid'][1]} grid:")
    names = {"border_ratio": "outer ring / area", "attention_peak": "peak / uniform",
             "attention_entropy": "entropy / uniform", "attention_shift": "shift"}
    for s in out["seeds"]:
        print(f"  seed {s['seed']}: " + ", ".join(f"{names[m]} {s[m]:.3f}" for m in MEASURES))
    print("  mean ± std: " + ", ".join(f"{names[m]} {out['mean'][m][0]:.3f} ± {out['mean'][m][1]:.3f}"
                                       for m in MEASURES))
    return 0


def _protocol(args) -> int:
    table = protocol_table(read_summaries(args.outs))
    print(json.dumps(table, indent=2) if args.protocol_json else format_protocol(table))
    return 0


def _compare(args) -> int:
    out = compare_summaries(load_model_summary(args.a), load_model_summary(args.b))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['pair']}, test CIDEr-D: {out['difference']:+.4f}, 95% paired bootstrap interval over "
          f"{out['images']} test images [{out['ci_low']:+.4f}, {out['ci_high']:+.4f}] "
          f"({'excludes' if out['excludes_zero'] else 'includes'} 0; seeds {out['seeds'][0]} and "
          f"{out['seeds'][1]}, each image's score the mean over seeds)")
    return 0
