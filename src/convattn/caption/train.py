"""Train and evaluate the two caption decoders on cached region features; write summary.json.

    run(config, data_dir, out_dir) -> summary dict

Per (model, seed) run, in `out_dir/runs/<layer>/<model>/seed<seed>/`:
    checkpoint.pt  after every epoch: decoder, optimizer, epoch, history, RNG state (resume)
    best.pt        the decoder with the best validation BLEU-4 so far
    model.pt       the final decoder with its vocabulary, encoder and feature layer
                   (what `caption predict` loads)
    result.json    written last: the run's metrics; a run with a result.json whose config
                   matches is reused instead of retrained
Then `out_dir/summary.json` (the source of truth for the report) and `out_dir/figures/`.

The training loop is the study's: teacher forcing, cross-entropy over non-<pad> targets,
Adam, gradient entries clamped to +-grad_clip; after every epoch the validation captions
are decoded free-running (greedy, batched) and scored with the study's BLEU-4.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convattn.caption import metrics
from convattn.caption.checkpoint import model_checkpoint
from convattn.caption.decode import decode
from convattn.caption.decoders import MODELS, build_decoder
from convattn.caption.encoders import ENCODER_LAYERS, EncoderSpec, check_spec
from convattn.caption.features import region_features
from convattn.caption.presets import CaptionConfig
from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log, progress
from convattn.common.runtime import choose_device, environment, seed_everything, torch_threads
from convattn.data.captions import PAD_ID, CaptionDataset, build_vocabulary, load_dataset

# why a preset's layer is what it is (a run with --feature-layer auto measures it afresh)
LAYER_NOTES = {
    ("efficientnet-lite0", "blocks"):
        "320-channel output of the last MBConv block, before the 1280-channel head conv: it had "
        "the higher validation BLEU-4 when both were trained with --feature-layer auto on "
        "Sydney-Captions (README), and its 4x fewer channels make the attention decoder 2x faster",
}

SCALARS = ("test_bleu4", "test_bleu4_best", "best_val_bleu4", "final_val_bleu4", "cider",
           "rouge_l", "meteor", "bleu1", "bleu2", "bleu3", "corpus_bleu4", "seconds")


class Data:
    """Everything a run needs, on the device: features, encoded captions, references."""

    def __init__(self, dataset: CaptionDataset, features: np.ndarray, grid, device):
        self.dataset = dataset
        self.vocab, self.max_len = build_vocabulary(dataset)
        self.grid = tuple(grid)
        # float16 in memory (half the RAM); each batch is converted to float32
        self.features = torch.from_numpy(np.array(features)).to(device)  # [N, R, C], read into memory
        train = dataset.split("train")
        # one training example per (image, caption) pair
        self.train_images = torch.tensor([im.index for im in train for _ in im.captions], device=device)
        self.train_captions = torch.tensor(
            [self.vocab.encode(c, self.max_len) for im in train for c in im.captions], device=device)
        self.splits = {name: dataset.split(name) for name in ("val", "test")}

    def references(self, split: str) -> list[list[list[str]]]:
        return [im.captions for im in self.splits[split]]

    def region_features(self, indices: torch.Tensor) -> torch.Tensor:
        return self.features[indices].float()  # [B, R, C]


def caption_split(decoder, data: Data, split: str, max_steps: int, beam: int = 1,
                  batch_size: int = 256) -> list[list[str]]:
    """Free-running captions (word lists) for every image of a split, decoded in batches."""
    images = data.splits[split]
    words = []
    for lo in range(0, len(images), batch_size):
        idx = torch.tensor([im.index for im in images[lo:lo + batch_size]], device=data.features.device)
        ids, _ = decode(decoder, data.region_features(idx), max_steps, beam)
        words += [data.vocab.decode(row) for row in ids.tolist()]
    return words


def train_one_epoch(decoder, optimizer, data: Data, config: CaptionConfig, epoch: int, seed: int,
                    quiet: bool = True) -> float:
    """One pass over the (image, caption) pairs in a seeded order -> mean batch loss."""
    decoder.train()
    # the order depends only on (seed, epoch), so a resumed run sees the same batches
    order = torch.randperm(len(data.train_images), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    order = order.to(data.train_images.device)
    losses = []
    bar = progress(total=len(order), desc=f"epoch {epoch + 1}/{config.epochs}", unit="caption", quiet=quiet)
    for lo in range(0, len(order), config.batch_size):
        batch = order[lo:lo + config.batch_size]
        captions = data.train_captions[batch]                        # [B, max_len]
        length = int((captions != PAD_ID).sum(1).max())
        captions = captions[:, :length]                              # no steps over pure padding
        logits, _ = decoder(data.region_features(data.train_images[batch]), captions)  # [B, T-1, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), captions[:, 1:].reshape(-1),
                               ignore_index=PAD_ID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.update(len(batch))
    bar.close()
    return float(np.mean(losses))


def train_run(model: str, seed: int, data: Data, config: CaptionConfig, spec: EncoderSpec,
              run_dir: Path, device, quiet: bool = False, resume: bool = True) -> dict:
    """Train one decoder with one seed (or reuse / resume it) -> its result dict."""
    result_path, ckpt_path = run_dir / "result.json", run_dir / "checkpoint.pt"
    key = config.run_key()
    if result_path.is_file():
        stored = io.read_json(result_path)
        if stored.get("config") == key and stored.get("seed") == seed:
            log(f"{model} seed {seed}: reusing the finished run in {run_dir}")
            return stored
        log(f"{model} seed {seed}: stored run has another config; training again")
        shutil.rmtree(run_dir)

    seed_everything(seed)
    max_steps = config.max_steps or data.max_len
    decoder = build_decoder(model, len(data.vocab), data.features.shape[2], config).to(device)
    # fused: one kernel for all parameters instead of a dozen small ops each (8% of a step)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr, fused=True)
    history = {"train_loss": [], "val_bleu4": [], "epoch_seconds": []}
    best_val, start_epoch = -1.0, 0
    if ckpt_path.is_file():
        ckpt = io.load_checkpoint(ckpt_path, map_location=device)
        if resume and ckpt.get("config") == key and ckpt.get("seed") == seed:
            decoder.load_state_dict(ckpt["decoder"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history, best_val, start_epoch = ckpt["history"], ckpt["best_val"], ckpt["epoch"]
            torch.set_rng_state(ckpt["rng"])
            log(f"{model} seed {seed}: resuming after epoch {start_epoch}")
        else:
            log(f"{model} seed {seed}: ignoring the unfinished run in {run_dir} "
                f"({'another config' if resume else 'pass --resume to continue it'})")

    references = data.references("val")
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        loss = train_one_epoch(decoder, optimizer, data, config, epoch, seed, quiet)
        val = metrics.bleu4(references, caption_split(decoder, data, "val", max_steps))
        history["train_loss"].append(loss)
        history["val_bleu4"].append(val)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        log(f"{model} seed {seed} epoch {epoch + 1}/{config.epochs}: train loss {loss:.4f}, "
            f"val bleu4 {val:.4f} ({history['epoch_seconds'][-1]:.1f} s)")
        if val > best_val:
            best_val = val
            io.save_checkpoint(run_dir / "best.pt", {"decoder": decoder.state_dict(), "epoch": epoch + 1})
        io.save_checkpoint(ckpt_path, {"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                                       "epoch": epoch + 1, "history": history, "best_val": best_val,
                                       "rng": torch.get_rng_state(), "config": key, "seed": seed})

    t0 = time.perf_counter()
    io.save_checkpoint(run_dir / "model.pt", model_checkpoint(decoder, model, data.vocab.words, data.max_len,
                                                              data.grid, spec, config))
    test_refs = data.references("test")
    hyps = caption_split(decoder, data, "test", max_steps, config.beam)
    test = metrics.all_metrics(test_refs, hyps, with_meteor=config.meteor)
    best = build_decoder(model, len(data.vocab), data.features.shape[2], config).to(device)
    best_ckpt = io.load_checkpoint(run_dir / "best.pt", map_location=device)
    best.load_state_dict(best_ckpt["decoder"])
    test_best = metrics.bleu4(test_refs, caption_split(best, data, "test", max_steps, config.beam))
    result = {
        "model": model, "seed": seed, "config": key,
        "train_loss": history["train_loss"], "val_bleu4": history["val_bleu4"],
        "epoch_seconds": history["epoch_seconds"],
        "best_epoch": best_ckpt["epoch"], "best_val_bleu4": best_val,
        "final_val_bleu4": history["val_bleu4"][-1],
        "test_bleu4": test["bleu4"], "test_bleu4_best": test_best,
        "corpus_bleu": test["corpus_bleu"], "cider": test["cider"], "rouge_l": test["rouge_l"],
        "meteor": test.get("meteor"),
        "test_bleu4_per_image": metrics.bleu4_per_image(test_refs, hyps),
        "captions": {im.name: " ".join(h) for im, h in zip(data.splits["test"], hyps)},
        "seconds": sum(history["epoch_seconds"]) + time.perf_counter() - t0,
    }
    io.write_json(result_path, result)
    log(f"{model} seed {seed}: test bleu4 {result['test_bleu4']:.4f} (best-by-val "
        f"{test_best:.4f}), CIDEr {result['cider']:.3f}, {result['seconds']:.0f} s")
    return result


def _flat(result: dict) -> dict:
    """One run's scalar metrics under the names summary.json uses."""
    out = {k: result.get(k) for k in ("test_bleu4", "test_bleu4_best", "best_val_bleu4",
                                      "final_val_bleu4", "cider", "rouge_l", "meteor", "seconds")}
    cb = result["corpus_bleu"]
    out.update(bleu1=cb["bleu1"], bleu2=cb["bleu2"], bleu3=cb["bleu3"], corpus_bleu4=cb["bleu4"])
    return out


def summarise_model(results: list[dict]) -> dict:
    """The first seed's run in full (the study's seed), every seed's scalars, mean and std."""
    first = results[0]
    out = {k: first[k] for k in ("train_loss", "val_bleu4", "test_bleu4", "test_bleu4_best",
                                 "best_epoch", "best_val_bleu4", "final_val_bleu4",
                                 "corpus_bleu", "cider", "rouge_l", "meteor", "seconds")}
    out["seed"] = first["seed"]
    out["seeds"] = [{"seed": r["seed"], **_flat(r), "train_loss": r["train_loss"],
                     "val_bleu4": r["val_bleu4"]} for r in results]
    for name in SCALARS:
        mean, std = metrics.mean_std([_flat(r)[name] for r in results])
        out[f"{name}_mean"], out[f"{name}_std"] = mean, std
    out["seconds_total"] = sum(r["seconds"] for r in results)
    return out


def resolve_spec(config: CaptionConfig, layer: str) -> EncoderSpec:
    spec = EncoderSpec(config.encoder, layer, config.image_size, config.encoder_weights)
    check_spec(spec)
    return spec


def check_config(config: CaptionConfig) -> None:
    if config.encoder not in ENCODER_LAYERS:
        raise UserError(f"--encoder {config.encoder}: expected one of {', '.join(ENCODER_LAYERS)}")
    if config.feature_layer != "auto" and config.feature_layer not in ENCODER_LAYERS[config.encoder]:
        raise UserError(f"--feature-layer {config.feature_layer}: {config.encoder} has "
                        f"{', '.join(ENCODER_LAYERS[config.encoder])} (or auto)")
    for name in config.models:
        if name not in MODELS:
            raise UserError(f"--models {name}: expected no_attention and/or attention")
    for flag, value in (("--epochs", config.epochs), ("--batch-size", config.batch_size),
                        ("--threads", config.threads),
                        ("--seeds", config.seeds), ("--beam", config.beam)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if config.attention_act not in ("tanh", "relu"):
        raise UserError(f"--attention-act {config.attention_act}: expected tanh or relu")


def run(config: CaptionConfig, data_dir, out_dir, device="auto", quiet: bool = False,
        fresh: bool = False, resume: bool = True, images_dir=None) -> dict:
    """Train and evaluate every (model, seed), write summary.json and the figures -> summary.

    Finished runs in `out_dir` with the same config are reused; unfinished ones continue
    from their last epoch (`resume`); `fresh` retrains everything (features stay cached).
    """
    check_config(config)
    started = time.perf_counter()
    device = choose_device(device) if isinstance(device, str) else device
    out_dir = Path(out_dir)
    if fresh and (out_dir / "runs").exists():
        shutil.rmtree(out_dir / "runs")
    dataset = load_dataset(data_dir, images_dir)
    for name in config.show:
        try:
            dataset.by_name(name)
        except KeyError:
            raise UserError(f"--show {name}: no image {name} in {dataset.root / 'dataset.json'}; "
                            "name images by file name with or without suffix") from None
    seeds = [config.seed + i for i in range(config.seeds)]
    timing = {"features": {}}

    def runs_for(layer: str, models, seed_list):
        spec = resolve_spec(config, layer)
        with torch_threads(config.threads if device.type == "cpu" else 0):
            features, grid, info = region_features(dataset, spec, device, quiet=quiet)
            timing["features"][layer] = info
            data = Data(dataset, features, grid, device)
            results = {m: [train_run(m, s, data, config, spec, out_dir / "runs" / layer / m / f"seed{s}",
                                     device, quiet, resume) for s in seed_list] for m in models}
        return spec, data, results

    selection = None
    if config.feature_layer == "auto":
        # one seed of each model per candidate layer; the layer with the higher mean final
        # validation BLEU-4 wins (its runs are reused below)
        candidates = {}
        for layer in ENCODER_LAYERS[config.encoder]:
            _, _, res = runs_for(layer, config.models, seeds[:1])
            candidates[layer] = {m: {"final_val_bleu4": r[0]["final_val_bleu4"],
                                     "best_val_bleu4": r[0]["best_val_bleu4"],
                                     "test_bleu4": r[0]["test_bleu4"]} for m, r in res.items()}
            candidates[layer]["mean_final_val_bleu4"] = float(np.mean(
                [r[0]["final_val_bleu4"] for r in res.values()]))
        layer = max(candidates, key=lambda name: candidates[name]["mean_final_val_bleu4"])
        selection = {"rule": "highest mean final validation BLEU-4 of both models, seed "
                             f"{seeds[0]}; test scores shown but not used", "candidates": candidates}
        log(f"feature layer: {layer} (" + ", ".join(
            f"{k} val {v['mean_final_val_bleu4']:.4f}" for k, v in candidates.items()) + ")")
    else:
        layer = config.feature_layer
    spec, data, results = runs_for(layer, config.models, seeds)

    summary = {
        "dataset": {"name": dataset.name, "path": str(Path(data_dir).resolve()),
                    "images": {s: len(dataset.split(s)) for s in ("train", "val", "test")}},
        "vocab_size": len(data.vocab), "max_len": data.max_len,
        "encoder": {"name": spec.name, "layer": spec.layer, "channels": spec.channels,
                    "image_size": spec.image_size, "grid": list(data.grid),
                    "regions": data.grid[0] * data.grid[1]},
        "feature_layer": {"chosen": layer, "selected_by": "validation" if selection else "config",
                          **({"selection": selection} if selection else {"why": LAYER_NOTES.get(
                              (spec.name, layer), "set by --feature-layer")})},
        "config": config.to_dict(), "seeds": seeds,
        "metric": "bleu4 = mean over test images of nltk sentence_bleu (uniform 4-gram weights, "
                  "no smoothing, 5 lower-cased references, hypothesis without special tokens)",
        "models": {m: summarise_model(r) for m, r in results.items()},
        "captions": _captions(data, results),
    }
    if "no_attention" in results and "attention" in results:
        summary["comparison"] = compare(results["no_attention"], results["attention"], config.bootstrap)
    summary["timing"] = {**timing, "runs_seconds": sum(m["seconds_total"] for m in summary["models"].values()),
                         "total_seconds": None}
    summary["environment"] = {**environment(), "device": str(device),
                              "torch_threads": config.threads if device.type == "cpu" else None}

    from convattn.caption import plots

    with torch_threads(config.threads if device.type == "cpu" else 0):
        summary["figures"] = plots.draw_all(summary, data, results, spec, out_dir, device)
    summary["timing"]["total_seconds"] = time.perf_counter() - started
    io.write_json(out_dir / "summary.json", summary)
    return summary


def compare(no_attention: list[dict], attention: list[dict], samples: int) -> dict:
    """Paired bootstrap over test images of (attention - no attention) BLEU-4, each image's
    score averaged over seeds first (so the interval covers image sampling, not seeds)."""
    a = np.mean([r["test_bleu4_per_image"] for r in no_attention], axis=0)
    b = np.mean([r["test_bleu4_per_image"] for r in attention], axis=0)
    out = metrics.paired_bootstrap(a, b, samples=samples)
    out.update(metric="bleu4", pair="attention - no_attention",
               seeds=len(attention), per_image="mean over seeds")
    return out


def _captions(data: Data, results: dict) -> dict:
    """Test image name -> references and each model's caption (first seed)."""
    out = {}
    for im in data.splits["test"]:
        out[im.name] = {"filename": im.filename, "references": [" ".join(c) for c in im.captions],
                        **{m: r[0]["captions"][im.name] for m, r in results.items()}}
    return out


def run_checkpoint_dir(out_dir, summary: dict, model: str, seed: int | None = None) -> Path:
    """Where a run's model.pt lives."""
    seed = summary["seeds"][0] if seed is None else seed
    return Path(out_dir) / "runs" / summary["feature_layer"]["chosen"] / model / f"seed{seed}"
