"""Paired bootstrap comparisons over test images: between the decoders of one experiment
(`compare`, `compare_pairs`) and between two experiments, i.e. two recipes scored on the
same test split (`compare_summaries`, `convattn caption compare`).

Each image's score is averaged over a model's seeds first, so the interval covers the
sampling of test images, not of seeds (the seeds' spread is reported beside it as std).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convattn.caption import metrics
from convattn.caption.result import RunResult
from convattn.common import io
from convattn.common.errors import UserError


def compare(no_attention: list[RunResult], attention: list[RunResult], samples: int) -> dict:
    """Paired bootstrap over test images of (attention - no attention) BLEU-4, each image's
    score averaged over seeds first (so the interval covers image sampling, not seeds)."""
    a = np.mean([r.test_bleu4_per_image for r in no_attention], axis=0)
    b = np.mean([r.test_bleu4_per_image for r in attention], axis=0)
    out = metrics.paired_bootstrap(a, b, samples=samples)
    out.update(metric="bleu4", pair="attention - no_attention",
               seeds=len(attention), per_image="mean over seeds")
    return out


def compare_pairs(results: dict, samples: int) -> list[dict]:
    """Every pair of trained decoders (a, b), in --models order, on the study's bleu4 and on
    CIDEr-D (and, after self-critical training, on the cross-entropy models' CIDEr-D):
    paired bootstrap over test images of b - a, each image's score averaged over seeds first
    (as in `compare`). Each run's per-image CIDEr-D (metrics.all_metrics) is scored against
    the test references with idf over the whole test split, so its mean is the run's CIDEr-D."""

    def per_image(run: RunResult, metric: str) -> list[float]:
        if metric == "bleu4":
            return run.test_bleu4_per_image
        if metric == "cider_before_scst":  # the cross-entropy models, before self-critical training
            return run.before_scst["cider_per_image"]
        return run.cider_per_image

    compared = ("bleu4", "cider")
    if all(r.before_scst is not None for runs_of_m in results.values() for r in runs_of_m):
        compared += ("cider_before_scst",)
    scores = {(m, metric): np.mean([per_image(r, metric) for r in runs_of_m], axis=0)
              for m, runs_of_m in results.items() for metric in compared}
    out = []
    models = list(results)
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            for metric in compared:
                test = metrics.paired_bootstrap(scores[a, metric], scores[b, metric], samples=samples)
                out.append({"pair": f"{b} - {a}", "metric": metric, **test,
                            "excludes_zero": test["ci_low"] > 0 or test["ci_high"] < 0,
                            "seeds": min(len(results[a]), len(results[b])), "per_image": "mean over seeds"})
    return out


def against_reference(decoders: dict, results: dict, samples: int) -> list[dict]:
    """Each trained decoder against the strongest reference captioner of `results` (the one
    with the highest validation CIDEr-D: chosen on validation, like everything else): paired
    bootstrap over test images of decoder - reference, CIDEr-D and the study's bleu4."""
    references = [m for m in results if m not in decoders]
    if not references or not decoders:
        return []
    strongest = max(references, key=lambda m: results[m][0].best_val_cider)
    pairs = {m: results[m] for m in (strongest, *decoders)}
    return [{**c, "reference": strongest, "chosen_by": "validation CIDEr-D"}
            for c in compare_pairs(pairs, samples) if c["pair"].endswith(f" - {strongest}")]


def compare_summaries(a: tuple[dict, str], b: tuple[dict, str], samples: int = 10000) -> dict:
    """(summary, model) of two experiments on the same test images -> paired bootstrap of
    CIDEr-D, b - a, over test images (each image's score the mean over the model's seeds)."""
    (sa, ma), (sb, mb) = a, b
    if sa["data"]["fingerprint"] != sb["data"]["fingerprint"]:
        raise UserError("caption compare: the two summaries are of different datasets "
                        f"({sa['dataset']['path']} and {sb['dataset']['path']}); compare runs on the same data")
    splits = [s["dataset"].get("split", "official") for s in (sa, sb)]
    if splits[0] != splits[1]:
        raise UserError(f"caption compare: the two summaries are of different splits ({splits[0]} and "
                        f"{splits[1]}), so of different test images; compare runs on the same --split")
    per_image = [s["models"][m]["cider_per_image"] for s, m in ((sa, ma), (sb, mb))]
    out = metrics.paired_bootstrap(*per_image, samples=samples)
    out.update(metric="cider", pair=f"{sb['config']['preset']}:{mb} - {sa['config']['preset']}:{ma}",
               seeds=[len(sa["seeds"]), len(sb["seeds"])], per_image="mean over seeds",
               excludes_zero=out["ci_low"] > 0 or out["ci_high"] < 0)
    return out


def load_model_summary(spec: str, command: str = "caption compare") -> tuple[dict, str]:
    """'OUT:model' (an experiment's output folder, or its summary.json, and one of its
    decoders) -> (summary, model)."""
    where, _, model = spec.rpartition(":")
    if not where:
        raise UserError(f"{command}: {spec!r}: expected OUT:MODEL, e.g. runs/rsicd:attention")
    path = Path(where)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{command}: {path}: no summary.json; run `convattn caption --out {where}` first")
    summary = io.read_json(path)
    if model not in summary.get("models", {}):
        raise UserError(f"{command}: {path} has no model {model!r} (it has "
                        f"{', '.join(summary.get('models', {}))})")
    if "cider_per_image" not in summary["models"][model]:
        raise UserError(f"{command}: {path} predates per-image scores in summary.json; rerun it")
    return summary, model
