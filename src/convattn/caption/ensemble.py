"""Seed ensembles: the decoders of several seeds of one recipe decoding as one model.

At every step each member reads the same region features with its own state, and the
ensemble's word distribution is the mean of the members' probabilities (log of the mean, so
greedy, beam search and reranking run on it unchanged); an attention ensemble's map is the
mean of the members' maps. The members must share the vocabulary, the encoder features and
the grid: the seeds of one run (`convattn caption` with --seeds N) do.

    ensemble, ckpt = load_ensemble([path, ...], device)   # model.pt files -> one decoder
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from convattn.caption.checkpoint import load_decoder
from convattn.common.errors import UserError


class SeedEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.uses_attention = all(m.uses_attention for m in members)

    def _split(self, memory: dict) -> list[dict]:
        """The ensemble's memory ("i/name" keys, one flat dict so beam search can repeat it
        per hypothesis) -> each member's own."""
        parts = [{} for _ in self.members]
        for key, value in memory.items():
            i, name = key.split("/", 1)
            parts[int(i)][name] = value
        return parts

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        return {f"{i}/{name}": value for i, member in enumerate(self.members)
                for name, value in member.prepare(features, grid).items()}

    def init_state(self, memory: dict) -> tuple:
        return tuple(m.init_state(part) for m, part in zip(self.members, self._split(memory)))

    def step(self, words: torch.Tensor, state: tuple, memory: dict):
        """-> (log of the members' mean word probabilities [B, V], their states, the mean
        attention map [B, R] or None)."""
        outs = [m.step(words, s, part) for m, s, part in zip(self.members, state, self._split(memory))]
        logp = torch.stack([logits.log_softmax(dim=-1) for logits, _, _ in outs]).logsumexp(dim=0)
        alpha = torch.stack([a for _, _, a in outs]).mean(dim=0) if self.uses_attention else None
        return logp - math.log(len(outs)), tuple(s for _, s, _ in outs), alpha


def load_ensemble(paths: list, device) -> tuple[nn.Module, dict]:
    """model.pt files -> (one decoder: the model itself for one file, else their SeedEnsemble;
    the first file's checkpoint, which describes the features, vocabulary and decoding)."""
    loaded = [load_decoder(path, device) for path in paths]
    first = loaded[0][1]
    for path, (_, ckpt) in zip(paths[1:], loaded[1:]):
        for what in ("vocab", "grid", "feature_dim", "encoder"):
            if ckpt.get(what) != first.get(what):
                raise UserError(f"--model {path}: its {what} differs from {paths[0]}'s; an ensemble's "
                                "models must be seeds of one run (the same features and vocabulary)")
    if len(loaded) == 1:
        return loaded[0][0], first
    return SeedEnsemble([decoder for decoder, _ in loaded]).eval(), first


def score_ensemble(spec: str, device, data_dir=None, images_dir=None) -> dict:
    """'OUT:MODEL' -> the seed ensemble of that experiment's runs of MODEL, decoded as its runs
    decoded (their beam and reranker), scored on validation (what a choice may read) and on
    test, with a paired bootstrap over test images of the ensemble minus the seeds (each
    image's score the mean over seeds). Written to OUT/ensemble_MODEL.json."""
    from convattn.caption import metrics
    from convattn.caption.checkpoint import max_steps
    from convattn.caption.inference import caption_split
    from convattn.caption.maps import stored_runs
    from convattn.caption.rerank import reranker_for
    from convattn.common import io

    summary, model, out, paths, data, _ = stored_runs(spec, "caption ensemble", device, data_dir, images_dir)
    if len(paths) < 2:
        raise UserError(f"caption ensemble: {out} has one seed of {model}; an ensemble needs a run with --seeds 2 or more")
    decoder, ckpt = load_ensemble(paths, device)
    config, steps = summary["config"], max_steps(ckpt)
    reranker, beam = reranker_for(data, config.get("rerank", 0)), config.get("beam", 1)
    scores = {}
    with torch.inference_mode(), metrics.MeteorScorer() as meteor:
        for split in ("val", "test"):
            hyps = caption_split(decoder, data, split, steps, beam, reranker=reranker)
            scores[split] = metrics.all_metrics(data.references(split), hyps,
                                                meteor if split == "test" and config.get("meteor", True) else None)
        # each seed alone, decoded the same way (the runs' own validation scores are greedy)
        seeds_val = [metrics.cider(data.references("val"), caption_split(load_decoder(path, device)[0], data, "val",
                                                                          steps, beam, reranker=reranker))
                     for path in paths]
    result = {
        "model": model, "seeds": summary["seeds"], "members": [str(p) for p in paths],
        "decoding": {"beam": config.get("beam", 1), "rerank": config.get("rerank", 0)},
        "val": {"cider": scores["val"]["cider"], "bleu4": scores["val"]["coco"]["bleu4"],
                "seeds_cider": seeds_val},
        "test": {"coco": scores["test"]["coco"], "bleu4": scores["test"]["bleu4"],
                 "cider_per_image": scores["test"]["cider_per_image"]},
        "vs_seeds": metrics.paired_bootstrap(summary["models"][model]["cider_per_image"],
                                             scores["test"]["cider_per_image"]),
    }
    io.write_json(out / f"ensemble_{model}.json", result)
    return result
