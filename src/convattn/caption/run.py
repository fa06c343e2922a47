"""One (decoder, seed) run: train or take it from the run store, score the test split.

    train_run(model, seed, data, config, spec, out_dir, device, policy) -> result
    checkpoint.load_decoder(run_dir(out_dir, layer, model, seed) / "model.pt", device)  # its decoder

Files, in `run_dir(out_dir, layer, model, seed)` = OUT/runs/<layer>/<model>/seed<N>/:
    checkpoint.pt  the run store's checkpoint (common.runs), rewritten after every epoch:
                   decoder, optimizer, RNG, history and the best decoder so far; once the
                   test split is scored, status "finished" and the result
    best.pt        {"decoder", "epoch"}: the decoder with the best validation BLEU-4
    model.pt       the final decoder with its vocabulary and encoder, and with --rerank N the
                   reranker's training block (caption/checkpoint.py; what `caption predict`
                   and `convattn serve` load); a stored run's model.pt from before the block
                   existed gets it when the run is reused
    result.json    a readable copy of the result
The run's key is the config's run key with the run's own decoder, seed and feature layer
and the dataset's fingerprint: a stored run is used only when all of them match, and the
policy (resume | reuse | fresh, common.runs) says whether an unfinished one continues.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from convattn.caption import metrics, scst
from convattn.caption.checkpoint import add_reranker, model_checkpoint
from convattn.caption.data import Data
from convattn.caption.decoders import build_decoder
from convattn.caption.encoders import EncoderSpec
from convattn.caption.inference import caption_split
from convattn.caption.loop import train_one_epoch
from convattn.caption.presets import CaptionConfig
from convattn.caption.rerank import reranker_for
from convattn.caption.result import HISTORY, OPTIONAL_HISTORY, RunResult
from convattn.common import distributed, io, runs
from convattn.common.config import require
from convattn.common.progress import log
from convattn.common.runtime import seed_everything



def run_dir(out_dir, layer: str, model: str, seed: int) -> Path:
    """Where a run's files live (its model.pt is what predict and serve load)."""
    return Path(out_dir) / "runs" / layer / model / f"seed{seed}"


def run_key(config: CaptionConfig, model: str, seed: int, spec: EncoderSpec, data: Data) -> dict:
    """Everything the run's numbers depend on (the layer as run, never "auto")."""
    key = {**config.run_key(), "feature_layer": spec.layer, "model": model, "seed": seed,
           "dataset": data.dataset.fingerprint}
    if distributed.size() > 1:  # data parallel: each rank draws its own dropout masks
        key["world_size"] = distributed.size()
    return key


def train_run(model: str, seed: int, data: Data, config: CaptionConfig, spec: EncoderSpec, out_dir,
              device, policy: str = "resume", quiet: bool = False,
              meteor: metrics.MeteorScorer | None = None) -> RunResult:
    """Train one decoder with one seed, or take its finished run from the store -> its result.
    The run's decoder is its model.pt (checkpoint.load_decoder). `meteor`: the scorer to
    share between runs (with config.meteor; else the run starts its own)."""
    folder = run_dir(out_dir, spec.layer, model, seed)
    label, key = f"{model} seed {seed}", run_key(config, model, seed, spec, data)
    # the SCST loop samples through the decoder's steps, which DistributedDataParallel cannot see
    require(config.scst_epochs == 0 or distributed.size() == 1, config, "scst_epochs",
            "self-critical training runs in one process; run it without data parallelism")
    seed_everything(seed)
    # data parallel: rank 0 reads the stored run and sends every rank its copy (on the CPU)
    state = distributed.broadcast(runs.load_state(folder / "checkpoint.pt", key, policy, label,
                                                  device if distributed.size() == 1 else "cpu")
                                  if distributed.is_main() else None)
    if state is not None and state["status"] in runs.FINISHED:
        if config.rerank and distributed.is_main():  # a model.pt from before it carried the reranker
            add_reranker(folder / "model.pt", data, config.rerank)
        return RunResult.from_dict(state["result"])
    decoder = build_decoder(model, len(data.vocab), data.feature_dim, config, data.grid, spec).to(device)
    # fused: one kernel for all parameters instead of a dozen small ops each (8% of a step)
    optimizer = torch.optim.Adam(parameter_groups(decoder, config), lr=config.lr, fused=True)
    if state is not None:
        runs.restore(state, decoder, optimizer)
        distributed.restore_rng(state.get("rank_rng"))
        history, best, start = state["history"], state["best"], state["epoch"]
    else:
        history, best, start = {name: [] for name in HISTORY}, None, 0
        distributed.seed_rank(seed)
    trainer = distributed.wrap(decoder)  # DistributedDataParallel in a data-parallel run

    max_steps = config.max_steps or data.max_len
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        loss = train_one_epoch(trainer, optimizer, data, config, epoch, seed, quiet)
        rank_rng = distributed.rng_states()  # data parallel: every rank's, so a resume is exact
        if not distributed.is_main():
            continue  # rank 0 scores and checkpoints; the others wait in the next all-reduce
        scores = epoch_scores(decoder, data, config, max_steps)
        record(history, train_loss=loss, **scores, epoch_seconds=time.perf_counter() - t0)
        log(f"{label} epoch {epoch + 1}/{config.epochs}: train loss {loss:.4f}, val bleu4 "
            f"{scores['val_bleu4']:.4f}, val CIDEr-D {scores['val_cider']:.4f}{maps_note(scores)} "
            f"({history['epoch_seconds'][-1]:.1f} s)")
        best = end_epoch(folder, key, epoch, history, config, decoder, optimizer, best, rank_rng)

    if config.scst_epochs:  # the self-critical stage (caption/scst.py); its epochs continue the count
        reward, total = scst.training_reward(data), config.epochs + config.scst_epochs
        if "before_scst" not in history:  # the cross-entropy model's test scores (report only)
            history["before_scst"] = test_scores(decoder, data, config, max_steps)
    for epoch in range(max(start, config.epochs), config.epochs + config.scst_epochs):
        t0 = time.perf_counter()
        if epoch == config.epochs:
            scst.start_stage(optimizer, config)
        mean_reward = scst.scst_epoch(decoder, optimizer, data, reward, config, epoch, seed, quiet)
        scores = epoch_scores(decoder, data, config, max_steps)
        record(history, scst_reward=mean_reward, **scores, epoch_seconds=time.perf_counter() - t0)
        log(f"{label} epoch {epoch + 1}/{total} (self-critical): train reward {mean_reward:.4f}, "
            f"val bleu4 {scores['val_bleu4']:.4f}, val CIDEr-D {scores['val_cider']:.4f}{maps_note(scores)} "
            f"({history['epoch_seconds'][-1]:.1f} s)")
        # the best decoder by validation is chosen over both stages
        best = end_epoch(folder, key, epoch, history, config, decoder, optimizer, best)
    if config.select == "val_cider" and distributed.is_main():  # the run's decoder: the chosen epoch's
        decoder.load_state_dict(best["model"])

    if not distributed.is_main():
        return distributed.broadcast(None)  # rank 0's result, once it has scored
    t0 = time.perf_counter()
    io.save_checkpoint(folder / "model.pt", model_checkpoint(decoder, model, data.vocab.words, data.max_len,
                                                             data.grid, spec, config,
                                                             reranker_for(data, config.rerank)))
    result = RunResult(model=model, seed=seed, config=key, **evaluate(decoder, best, data, config, max_steps, meteor),
                       final_val_bleu4=history["val_bleu4"][-1],
                       best_val_bleu4=history["val_bleu4"][best["epoch"] - 1],
                       best_val_cider=history["val_cider"][best["epoch"] - 1],
                       **{name: history[name] for name in (*HISTORY, *OPTIONAL_HISTORY)
                          if name in history},
                       seconds=sum(history["epoch_seconds"]) + time.perf_counter() - t0)
    runs.save_state(folder / "checkpoint.pt", key=key, epoch=config.epochs + config.scst_epochs,
                    status="finished", history=history, model=decoder, optimizer=optimizer, best=best,
                    result=result.to_dict())
    io.write_json(folder / "result.json", result.to_dict())
    border = (f", outer-ring attention {result.border_mass:.3f} ({result.border_ratio:.2f}x its area)"
              if result.has_attention_maps else "")
    log(f"{label}: test bleu4 {result.test_bleu4:.4f} (best-by-val {result.test_bleu4_best:.4f}), "
        f"CIDEr {result.cider:.3f}{border}, {result.seconds:.0f} s")
    return distributed.broadcast(result)


def parameter_groups(decoder, config: CaptionConfig) -> list[dict]:
    """The optimizer's groups: the decoder's own parameters at config.lr, and the tuned
    encoder blocks (if any) at config.encoder_lr."""
    if decoder.top is None:
        return [{"params": list(decoder.parameters())}]
    tuned = {id(p) for p in decoder.top.parameters()}
    return [{"params": [p for p in decoder.parameters() if id(p) not in tuned]},
            {"params": list(decoder.top.parameters()), "lr": config.encoder_lr, "name": "encoder"}]


def epoch_scores(decoder, data: Data, config: CaptionConfig, max_steps: int) -> dict:
    """After an epoch: greedy validation captions' bleu4 and CIDEr-D (what chooses the
    checkpoint) and, for an attention decoder, their maps' outer-ring ratio and peak
    (metrics.border_mass), and the test captions' CIDEr-D and coco BLEU-4 as the run decodes them. The
    test scores feed only the "as published" column (experiment.as_published), never a choice."""
    val_refs, test_refs = data.references("val"), data.references("test")
    val, alphas = caption_split(decoder, data, "val", max_steps, with_alphas=True)
    test = caption_split(decoder, data, "test", max_steps, config.beam,
                         reranker=reranker_for(data, config.rerank))
    maps = {}
    if decoder.uses_attention:  # where the greedy validation captions looked (choosing remedies)
        border = metrics.border_mass(alphas, data.grid)
        maps = {f"val_{name}": border[name] for name in ("border_ratio", "attention_peak", "attention_shift")}
    return {"val_bleu4": metrics.bleu4(val_refs, val), "val_cider": metrics.cider(val_refs, val),
            "test_cider": metrics.cider(test_refs, test),
            "test_coco_bleu4": metrics.coco_bleu(test_refs, test)["bleu4"], **maps}


def maps_note(scores: dict) -> str:
    """The epoch log's words on the validation attention maps ("" without attention)."""
    if "val_attention_peak" not in scores:
        return ""
    return (f", val maps ring {scores['val_border_ratio']:.2f}x peak {scores['val_attention_peak']:.1f}x "
            f"shift {scores['val_attention_shift']:.2f}")


def record(history: dict, **values) -> None:
    for name, value in values.items():
        history.setdefault(name, []).append(value)


def end_epoch(folder: Path, key: dict, epoch: int, history: dict, config: CaptionConfig, decoder,
              optimizer, best: dict | None, rank_rng: list | None = None) -> dict:
    """After epoch index `epoch`: keep the decoder when its validation score is the best so
    far (best.pt; CIDEr-D with --select val_cider, else the study's BLEU-4), checkpoint the
    run -> the best so far. `rank_rng`: every rank's random state in a data-parallel run
    (distributed.rng_states), None otherwise."""
    metric = "val_cider" if config.select == "val_cider" else "val_bleu4"
    val = history[metric][-1]
    if best is None or val > best["val"]:
        best = {"model": copy.deepcopy(decoder.state_dict()), "epoch": epoch + 1, "val": val, "metric": metric}
        io.save_checkpoint(folder / "best.pt", {"decoder": best["model"], "epoch": best["epoch"]})
    runs.save_state(folder / "checkpoint.pt", key=key, epoch=epoch + 1, status="running",
                    history=history, model=decoder, optimizer=optimizer, best=best, rank_rng=rank_rng)
    return best


def test_scores(decoder, data: Data, config: CaptionConfig, max_steps: int) -> dict:
    """The coco-caption scores and per-image CIDEr-D of the decoder's test captions, no
    METEOR: what a self-critical run records of its cross-entropy model before the
    self-critical stage, so the report can say what that stage added on the same seeds."""
    references = data.references("test")
    hyps = caption_split(decoder, data, "test", max_steps, config.beam,
                         reranker=reranker_for(data, config.rerank))
    test = metrics.all_metrics(references, hyps)
    return {"coco": test["coco"], "test_bleu4": test["bleu4"], "cider_per_image": test["cider_per_image"]}


def evaluate(decoder, best: dict, data: Data, config: CaptionConfig, max_steps: int,
             meteor: metrics.MeteorScorer | None = None) -> dict:
    """RunResult's test fields: test scores of the final decoder (every metric, the coco-caption set under "coco",
    and for an attention decoder its outer-ring attention, metrics.border_mass) and of the
    best-by-validation one (the study's bleu4)."""
    references = data.references("test")
    reranker = reranker_for(data, config.rerank)  # None: the beam's (or greedy) caption as it is
    hyps, alphas = caption_split(decoder, data, "test", max_steps, config.beam, with_alphas=True,
                                 reranker=reranker)
    if config.meteor and meteor is None:
        with metrics.MeteorScorer() as own:
            test = metrics.all_metrics(references, hyps, own)
    else:
        test = metrics.all_metrics(references, hyps, meteor if config.meteor else None)
    if config.select == "val_cider":  # the decoder is the chosen epoch's already
        test_best = test["bleu4"]
    else:
        best_decoder = copy.deepcopy(decoder)
        best_decoder.load_state_dict(best["model"])
        test_best = metrics.bleu4(references, caption_split(best_decoder, data, "test", max_steps,
                                                            config.beam, reranker=reranker))
    # where the attention looked while writing the test captions (attention decoders only)
    border = metrics.border_mass(alphas, data.grid) if decoder.uses_attention else {}
    return {
        **border,
        "coco": test["coco"],
        "best_epoch": best["epoch"], "selected_by": best["metric"],
        "test_bleu4": test["bleu4"], "test_bleu4_best": test_best,
        "corpus_bleu": test["corpus_bleu"], "cider": test["cider"], "rouge_l": test["rouge_l"],
        "meteor": test.get("meteor"),
        "test_bleu4_per_image": test["bleu4_per_image"],
        "cider_per_image": test["cider_per_image"],
        "captions": {im.name: " ".join(h) for im, h in zip(data.splits["test"], hyps)},
    }
