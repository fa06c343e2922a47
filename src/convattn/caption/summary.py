"""summary.json's per-model part, built from the runs' results (RunResult): the first seed's
run in full, every seed's scalars with mean and std, the "as published" column, how specific
the test captions are, and each test image's captions.

    summarise_model(results, training_captions) -> models.<name> of summary.json
    captions_by_image(data, results)            -> summary.json's "captions"

A reference captioner (caption/reference.py) is summarised the same way, marked
`"kind": "reference"` and `"deterministic": true` (one run; its std is 0 by construction).
"""

from __future__ import annotations

import numpy as np

from convattn.caption import metrics
from convattn.caption.data import Data
from convattn.caption.reference import CAPTIONERS
from convattn.caption.result import RunResult

SCALARS = ("test_bleu4", "test_bleu4_best", "best_val_bleu4", "final_val_bleu4", "cider",
           "rouge_l", "meteor", "bleu1", "bleu2", "bleu3", "corpus_bleu4", "seconds")
COCO = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l", "meteor")
BORDER = ("border_mass", "border_area_share", "border_ratio", "attention_peak", "attention_entropy",
          "attention_shift", "sentinel_weight")
EPOCHS = ("train_loss", "val_bleu4", "val_cider", "test_cider", "test_coco_bleu4")  # per epoch


def _flat(result: RunResult) -> dict:
    """One run's scalar metrics under the names summary.json uses."""
    out = {k: getattr(result, k) for k in ("test_bleu4", "test_bleu4_best", "best_val_bleu4",
                                           "final_val_bleu4", "cider", "rouge_l", "meteor", "seconds")}
    cb = result.corpus_bleu
    out.update(bleu1=cb["bleu1"], bleu2=cb["bleu2"], bleu3=cb["bleu3"], corpus_bleu4=cb["bleu4"])
    return out


def summarise_model(results: list[RunResult], data: Data) -> dict:
    """The first seed's run in full (the study's seed), every seed's scalars, mean and std,
    and the specificity of each seed's test captions (metrics.specificity) with its mean."""
    first = results[0]
    out = {k: getattr(first, k) for k in ("train_loss", "val_bleu4", "test_bleu4", "test_bleu4_best",
                                          "best_epoch", "best_val_bleu4", "final_val_bleu4",
                                          "corpus_bleu", "cider", "rouge_l", "meteor", "seconds")}
    out["seed"] = first.seed
    out["kind"] = "reference" if first.model in CAPTIONERS else "decoder"
    out["deterministic"] = out["kind"] == "reference"
    if first.choice is not None:
        out["choice"] = first.choice
    out["seeds"] = [{"seed": r.seed, "best_epoch": r.best_epoch, "selected_by": r.selected_by,
                     **_flat(r), "coco": r.coco, **{k: getattr(r, k) for k in EPOCHS},
                     **{k: getattr(r, k) for k in (*BORDER, "scst_reward") if getattr(r, k) is not None}}
                    for r in results]
    for name in SCALARS:
        mean, std = metrics.mean_std([_flat(r)[name] for r in results])
        out[f"{name}_mean"], out[f"{name}_std"] = mean, std
    out["seconds_total"] = sum(r.seconds for r in results)
    # the coco-caption metrics papers report, {mean, std} over seeds
    out["coco"] = {}
    for name in COCO:
        mean, std = metrics.mean_std([r.coco[name] for r in results])
        out["coco"][name] = {"mean": mean, "std": std}
    out["val_cider"], out["best_val_cider"] = first.val_cider, first.best_val_cider
    out["specificity"] = specificity(results, data)
    out["as_published"] = as_published(results)
    # each test image's CIDEr-D, mean over seeds: what a paired bootstrap between two
    # experiments (two recipes on the same test split) needs (compare_summaries)
    out["cider_per_image"] = np.mean([r.cider_per_image for r in results], axis=0).tolist()
    if first.scst_reward is not None:  # self-critical epochs: per epoch, mean sampled reward
        out["scst_reward"] = first.scst_reward
    if first.before_scst is not None:  # the same runs' cross-entropy models, before the self-critical stage
        out["before_scst"] = {"coco": {}}
        for name in COCO[:-1]:  # no METEOR
            mean, std = metrics.mean_std([r.before_scst["coco"][name] for r in results])
            out["before_scst"]["coco"][name] = {"mean": mean, "std": std}
        mean, std = metrics.mean_std([r.before_scst["test_bleu4"] for r in results])
        out["before_scst"]["test_bleu4"] = {"mean": mean, "std": std}
        # paired bootstrap over test images of (after - before) CIDEr-D, seeds averaged per image
        before = np.mean([r.before_scst["cider_per_image"] for r in results], axis=0)
        after = np.mean([r.cider_per_image for r in results], axis=0)
        out["before_scst"]["scst_gain"] = {"metric": "cider", **metrics.paired_bootstrap(before, after)}
    if first.has_attention_maps:  # attention decoders: outer-ring attention, mean over seeds
        out["border_mass"], out["border_mass_std"] = metrics.mean_std([r.border_mass for r in results])
        out["border_area_share"] = first.border_area_share
        out["border_ratio"] = out["border_mass"] / out["border_area_share"]
        out["sentinel_weight"], _ = metrics.mean_std([r.sentinel_weight for r in results])
        for name in ("attention_peak", "attention_entropy", "attention_shift"):
            if getattr(first, name) is not None:  # runs stored before it was measured lack it
                out[name], out[f"{name}_std"] = metrics.mean_std([getattr(r, name) for r in results])
    return out


def specificity(results: list[RunResult], data: Data) -> dict:
    """Each seed's metrics.specificity of its test captions, and {mean, std} of each measure."""
    training = {" ".join(c) for im in data.dataset.split("train") for c in im.captions}
    names = [im.name for im in data.splits["test"]]
    seeds = [metrics.specificity([r.captions[n] for n in names], training, data.references("test"))
             for r in results]
    out = {"seeds": seeds}
    for name in seeds[0]:
        mean, std = metrics.mean_std([s[name] for s in seeds])
        out[name] = {"mean": mean, "std": std}
    return out


def as_published(results: list[RunResult]) -> dict:
    """The same runs scored the way the top papers select: the epoch and the seed with the
    best test CIDEr-D (each epoch's test captions decoded as the run decodes them); for a
    reference captioner with a choice (nearest's k), the candidate with the best test CIDEr-D.
    A reader's measure of how much of a published gap is protocol; it chooses nothing."""
    choice = results[0].choice
    if choice is not None:
        best = max(choice["candidates"], key=lambda c: c["test_cider"])
        return {"cider": best["test_cider"], "bleu4": best["test_bleu4"], "seed": results[0].seed,
                "k": best["k"], "rule": "the k with the best test CIDEr-D"}
    seed, epoch, cider = max(((r.seed, e, c) for r in results for e, c in enumerate(r.test_cider)),
                             key=lambda t: t[2])
    run = next(r for r in results if r.seed == seed)
    return {"cider": cider, "bleu4": run.test_coco_bleu4[epoch], "seed": seed, "epoch": epoch + 1,
            "rule": "the epoch and seed with the best test CIDEr-D (coco BLEU-4 of that epoch)"}


def captions_by_image(data: Data, results: dict) -> dict:
    """Test image name -> references and each model's caption (first seed)."""
    out = {}
    for im in data.splits["test"]:
        out[im.name] = {"filename": im.filename, "references": [" ".join(c) for c in im.captions],
                        **{m: r[0].captions[im.name] for m, r in results.items()}}
    return out
