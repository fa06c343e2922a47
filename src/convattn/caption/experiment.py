"""The captioning experiment: every (decoder, seed) run, their comparison, summary.json, figures.

    run(config, data_dir, out_dir, *, device="auto", quiet=False, policy="resume",
        images_dir=None) -> summary dict

Region features are computed once per (dataset, encoder, layer, image size) and cached
(features.py); each (decoder, seed) run is trained or taken from `out_dir/runs/` (run.py,
with the run store's policy: resume | reuse | fresh). `--feature-layer auto` first trains
one seed of each decoder on every layer of the encoder and keeps the layer with the higher
mean final validation BLEU-4. Then `out_dir/summary.json` (the source of truth for the
report) and `out_dir/figures/`, drawn from what the first seed's decoders generated.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from convattn.caption import metrics, plots
from convattn.caption.checkpoint import load_decoder
from convattn.caption.compare import against_reference, compare, compare_pairs
from convattn.caption.data import Data, load_data
from convattn.caption.encoders import ENCODER_LAYERS, EncoderSpec, check_spec, load_image
from convattn.caption.inference import caption_images
from convattn.caption.presets import STUDY_SHOWN, CaptionConfig
from convattn.caption.reference import CAPTIONERS, run_captioner, unavailable
from convattn.caption.rerank import reranker_for
from convattn.caption.run import run_dir, train_run
from convattn.caption.summary import captions_by_image, summarise_model
from convattn.common import distributed, io, runs
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import choose_device, environment, torch_threads
from convattn.data.captions import CaptionDataset, CaptionImage, load_dataset

# why a preset's layer is what it is (a run with --feature-layer auto measures it afresh)
LAYER_NOTES = {
    ("efficientnet-lite0", "blocks"):
        "320-channel output of the last MBConv block, before the 1280-channel head conv: it had "
        "the higher validation BLEU-4 when both were trained with --feature-layer auto on "
        "Sydney-Captions (docs/results.md), and its 4x fewer channels make the attention decoder 2x faster",
}



def run(config: CaptionConfig, data_dir, out_dir, *, device="auto", quiet: bool = False,
        policy: str = "resume", images_dir=None) -> dict:
    """Train and evaluate every (model, seed), write summary.json and the figures -> summary
    (None on the ranks other than 0 of a data-parallel run)."""
    runs.check_policy(policy)
    started = time.perf_counter()
    device = choose_device(device) if isinstance(device, str) else device
    # under torchrun: join the process group; rank 0 alone shows progress, scores and writes
    device = distributed.init(device)
    quiet = quiet or not distributed.is_main()
    out_dir = Path(out_dir)
    dataset = load_dataset(data_dir, images_dir, scheme=config.split)
    shown_images = choose_shown(dataset, config.show)
    config = config.replace(show=tuple(im.name for im in shown_images))
    seeds = [config.seed + i for i in range(config.seeds)]
    timing = {"features": {}}

    decoders = [m for m in config.models if m not in CAPTIONERS]
    skipped = {}

    def train_layer(layer: str, seed_list):
        """-> spec, data, {decoder: [result per seed]} for one feature layer."""
        spec = EncoderSpec(config.encoder, layer, config.image_size, config.encoder_weights, config.tune_blocks)
        check_spec(spec)
        data, info = load_data(dataset, spec, config, device, quiet)
        timing["features"][layer] = info
        tasks = [(m, s) for m in decoders for s in seed_list]
        jobs = parallel_jobs(config, device, len(tasks))
        if jobs > 1:  # no_attention last: its runs are the shortest, so they fill in at the end
            done = train_in_processes(config, sorted(tasks, key=lambda t: t[0] == "no_attention"), jobs,
                                      (data_dir, images_dir, spec, out_dir, policy))
        else:
            with metrics.MeteorScorer() as meteor:  # one Java process for every run here
                done = {(m, s): train_run(m, s, data, config, spec, out_dir, device, policy, quiet, meteor)
                        for m, s in tasks}
        return spec, data, {m: [done[(m, s)] for s in seed_list] for m in decoders}

    with torch_threads(config.threads if device.type == "cpu" else 0):
        layer, selection = choose_layer(config, lambda name: train_layer(name, seeds[:1])[2], seeds[0])
        spec, data, trained = train_layer(layer, seeds)
        if not distributed.is_main():
            return None
        results = {**trained, **reference_runs(config, data, seeds[0], skipped, quiet)}
        results = {m: results[m] for m in config.models if m in results}  # in --models order
        max_steps = config.max_steps or data.max_len
        # the shown images' captions by each model's first seed, from its model.pt as predict reads it
        generated = {m: caption_images(load_decoder(run_dir(out_dir, spec.layer, m, seeds[0]) / "model.pt",
                                                    device)[0],
                                       data, shown_images, max_steps, config.beam, reranker_for(data, config.rerank))
                     for m in trained}

    summary = {**describe(dataset, data_dir, data, spec, selection, config, seeds),
               "models": {m: summarise_model(r, data) for m, r in results.items()},
               "captions": captions_by_image(data, results),
               **({"skipped": skipped} if skipped else {}),
               **comparisons(trained, results, config.bootstrap)}
    timing.update(runs_seconds=sum(m["seconds_total"] for m in summary["models"].values()),
                  total_seconds=None)
    base = runs.summary_base("caption", config, {"fingerprint": dataset.fingerprint, **summary["dataset"]},
                             device, timing)
    summary = {**base, **summary, "timing": timing,
               "environment": {**environment(), "device": str(device),
                               "torch_threads": config.threads if device.type == "cpu" else None}}
    summary["figures"] = plots.draw_all(summary, shown_rows(shown_images, generated, dataset, spec),
                                        data.grid, out_dir)
    summary["timing"]["total_seconds"] = time.perf_counter() - started
    io.write_json(out_dir / "summary.json", summary)
    return summary


def choose_layer(config: CaptionConfig, train_first_seed, seed: int) -> tuple[str, dict | None]:
    """The feature layer and, with --feature-layer auto, how it was chosen: one seed of each
    decoder per candidate layer (`train_first_seed(layer)` -> {decoder: [result]}; the chosen
    layer's runs are reused after), the highest mean final validation BLEU-4 wins."""
    if config.feature_layer != "auto":
        return config.feature_layer, None
    candidates = {layer: layer_scores(train_first_seed(layer)) for layer in ENCODER_LAYERS[config.encoder]}
    layer = max(candidates, key=lambda name: candidates[name]["mean_final_val_bleu4"])
    log(f"feature layer: {layer} (" + ", ".join(
        f"{k} val {v['mean_final_val_bleu4']:.4f}" for k, v in candidates.items()) + ")")
    return layer, {"rule": "highest mean final validation BLEU-4 of both models, seed "
                           f"{seed}; test scores shown but not used", "candidates": candidates}


def describe(dataset: CaptionDataset, data_dir, data: Data, spec: EncoderSpec, selection: dict | None,
             config: CaptionConfig, seeds: list[int]) -> dict:
    """summary.json's account of what was run: dataset and split, vocabulary, encoder and
    grid, how the feature layer was chosen, the config, the seeds and the metric."""
    return {
        "dataset": {"name": dataset.name, "path": str(Path(data_dir).resolve()), "split": config.split,
                    "images": {s: len(dataset.split(s)) for s in ("train", "val", "test")}},
        "vocab_size": len(data.vocab), "max_len": data.max_len,
        "encoder": {"name": spec.name, "layer": spec.layer, "channels": spec.channels,
                    "image_size": spec.image_size, "tune_blocks": spec.tune, "grid": list(data.grid),
                    "regions": data.grid[0] * data.grid[1]},
        "feature_layer": {"chosen": spec.layer, "selected_by": "validation" if selection else "config",
                          **({"selection": selection} if selection else {"why": LAYER_NOTES.get(
                              (spec.name, spec.layer), "set by --feature-layer")})},
        "config": config.to_dict(), "seeds": seeds,
        "metric": "bleu4 = mean over test images of nltk sentence_bleu (uniform 4-gram weights, "
                  "no smoothing, 5 lower-cased references, hypothesis without special tokens)",
    }


def comparisons(trained: dict, results: dict, samples: int) -> dict:
    """The paired bootstraps: the study's pair on bleu4, every pair of trained decoders, and
    each decoder against the strongest reference captioner."""
    out = {}
    if "no_attention" in trained and "attention" in trained:
        out["comparison"] = compare(trained["no_attention"], trained["attention"], samples)
    out["comparisons"] = compare_pairs(trained, samples)
    out["against_reference"] = against_reference(trained, results, samples)
    return out


def reference_runs(config: CaptionConfig, data: Data, seed: int, skipped: dict, quiet: bool) -> dict:
    """{captioner: [its one result]} for the reference captioners of --models that can run on
    `data`; the others go into `skipped` with the reason (also logged)."""
    out = {}
    with metrics.MeteorScorer() if config.meteor else nullcontext() as meteor:
        for name in (m for m in config.models if m in CAPTIONERS):
            if (reason := unavailable(name, data)) is not None:
                log(f"{name}: skipped: {reason}")
                skipped[name] = reason
                continue
            result = run_captioner(name, data, seed, meteor, quiet)
            log(f"{name}: test bleu4 {result.test_bleu4:.4f}, CIDEr {result.cider:.3f}, {result.seconds:.1f} s")
            out[name] = [result]
    return out


def parallel_jobs(config: CaptionConfig, device, runs_to_train: int) -> int:
    """How many (decoder, seed) runs train at once: --jobs (0: one per CPU core), at most one
    per run; always 1 on a GPU and in a data-parallel run (its ranks share each run)."""
    if device.type != "cpu" or distributed.size() > 1:
        return 1
    return max(1, min(config.jobs or os.cpu_count() or 1, runs_to_train))


def train_in_processes(config: CaptionConfig, tasks: list[tuple[str, int]], jobs: int, where: tuple) -> dict:
    """Train every (model, seed) of `tasks` into the run store, `jobs` spawned processes at a
    time -> {(model, seed): result}. Each run seeds itself and runs on --threads threads as
    it would here, so its numbers are those of a run in this process (tests/caption/test_jobs.py)."""
    log(f"training {len(tasks)} runs in {jobs} processes, {config.threads} torch thread(s) each")
    work = [(config, model, seed, *where) for model, seed in tasks]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return {(result.model, result.seed): result
                for result in pool.imap_unordered(_train_run_in_worker, work)}


def _train_run_in_worker(task: tuple) -> dict:
    """One (decoder, seed) run in a worker: the region features from the cache the main
    process filled, no progress bar (bars would interleave; the epoch log lines stay)."""
    config, model, seed, data_dir, images_dir, spec, out_dir, policy = task
    torch.set_num_threads(config.threads)
    cpu = torch.device("cpu")
    data, _ = load_data(load_dataset(data_dir, images_dir, scheme=config.split), spec, config, cpu, quiet=True)
    with metrics.MeteorScorer() as meteor:
        return train_run(model, seed, data, config, spec, out_dir, cpu, policy, quiet=True, meteor=meteor)


def choose_shown(dataset: CaptionDataset, show) -> list[CaptionImage]:
    """The images named by --show; the study's default three only where the dataset has them
    all, else its first three test images (said in the log)."""
    if tuple(show) == STUDY_SHOWN and not all(_has(dataset, name) for name in show):
        chosen = dataset.split("test")[:3]
        log(f"--show: {dataset.root / 'dataset.json'} lacks the study's images "
            f"{', '.join(STUDY_SHOWN)}; showing its first test images instead: "
            f"{', '.join(im.name for im in chosen)}")
        return chosen
    for name in show:
        if not _has(dataset, name):
            raise UserError(f"--show {name}: no image {name} in {dataset.root / 'dataset.json'}; "
                            "name images by file name with or without suffix")
    return [dataset.by_name(name) for name in show]


def _has(dataset: CaptionDataset, name: str) -> bool:
    try:
        dataset.by_name(name)
    except KeyError:
        return False
    return True


def shown_rows(images: list[CaptionImage], generated: dict, dataset: CaptionDataset, spec) -> list[dict]:
    """What plots.draw_all draws for each shown image (see plots' module doc)."""
    rows = []
    for i, im in enumerate(images):
        picture = load_image(dataset.path(im), spec.image_size).permute(1, 2, 0).numpy()  # [H, W, 3]
        rows.append({"name": im.name, "image": picture, "references": [" ".join(c) for c in im.captions],
                     "generated": {m: out[i][0] for m, out in generated.items()},
                     "tokens": {m: out[i][1] for m, out in generated.items()},
                     "attention": {m: out[i][2] for m, out in generated.items() if out[i][2] is not None}})
    return rows


def layer_scores(trained: dict) -> dict:
    """One candidate layer of --feature-layer auto: each model's first-seed scores."""
    scores = {m: {k: getattr(results[0], k) for k in ("final_val_bleu4", "best_val_bleu4", "test_bleu4")}
              for m, results in trained.items()}
    scores["mean_final_val_bleu4"] = float(np.mean([s["final_val_bleu4"] for s in scores.values()]))
    return scores
