"""`convattn caption maps OUT:MODEL`: where a trained attention decoder looks, measured.

Each seed's model.pt captions a split (greedy by default: every generated word's map as
the decoder saw it) and metrics.border_mass measures the maps: the outer ring's share
over its area share, the peak weight over uniform, the entropy over uniform's, and the
shift between a caption's words. The experiments' own summaries measure the maps of the
test captions as the runs decoded them (beam and reranking); this measures any split,
any beam, after the fact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from convattn.caption import metrics
from convattn.caption.checkpoint import encoder_spec, load_decoder, max_steps
from convattn.caption.compare import load_model_summary
from convattn.caption.data import Data
from convattn.caption.features import dataset_features
from convattn.caption.inference import caption_split
from convattn.caption.run import run_dir
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset

MEASURES = ("border_ratio", "attention_peak", "attention_entropy", "attention_shift")


def stored_runs(spec: str, command: str, device, data_dir=None, images_dir=None) -> tuple:
    """'OUT:MODEL' -> (summary, model, OUT, the seeds' model.pt paths, Data of the dataset the
    runs were trained on, with their features; the first seed's checkpoint)."""
    summary, model = load_model_summary(spec, command=command)
    out = Path(spec.rpartition(":")[0])
    out = out.parent if out.suffix == ".json" else out
    paths = [run_dir(out, summary["encoder"]["layer"], model, seed) / "model.pt" for seed in summary["seeds"]]
    ckpt = load_decoder(paths[0], device)[1]
    dataset = load_dataset(data_dir or summary["dataset"]["path"], images_dir)
    if dataset.fingerprint != summary["data"]["fingerprint"]:
        raise UserError(f"{command}: {dataset.root} is not the dataset {out} was trained on; "
                        "pass that one with --data")
    features, grid, _ = dataset_features(dataset, encoder_spec(ckpt), device, quiet=True)
    return summary, model, out, paths, Data(dataset, features, grid, device), ckpt


def map_statistics(spec: str, device, split: str = "test", beam: int = 1, data_dir=None) -> dict:
    """-> {"model", "split", "beam", "seeds": [{seed, *MEASURES, tokens}], "mean": {m: (mean, std)}}."""
    summary, model, _, paths, data, ckpt = stored_runs(spec, "caption maps", device, data_dir)
    seeds = []
    with torch.inference_mode():
        for seed, path in zip(summary["seeds"], paths):
            decoder = load_decoder(path, device)[0]
            if not decoder.uses_attention:
                raise UserError(f"caption maps: {model} has no attention maps; name an attention decoder")
            _, alphas = caption_split(decoder, data, split, max_steps(ckpt), beam, with_alphas=True)
            border = metrics.border_mass(alphas, data.grid)
            seeds.append({"seed": seed, **{m: border[m] for m in MEASURES}, "tokens": border["tokens"]})
    return {"model": model, "split": split, "beam": beam, "grid": list(data.grid), "seeds": seeds,
            "mean": {m: metrics.mean_std([s[m] for s in seeds]) for m in MEASURES}}
