"""Region features, computed once per (dataset, encoder, layer, image size) and cached on disk.

The encoder is frozen, so its output never changes during training: extracting it once
and training the decoders on the cached features is what makes CPU training fast.

Cache layout, under `cache_dir()/features/<key>/`:
    features.npy   float16 [N, R, C]: row i is dataset.json's i-th image; memory-mapped on read
    meta.json      the key's ingredients, grid (H', W'), written last: its presence marks a
                   complete cache
`key` is a SHA-256 of the dataset fingerprint (dataset.json and every image file's name and
content hash), the encoder name, its weights file hash, the layer and the image size; change
any of them and the key, hence the folder, changes. Both files are written atomically.

A run's decoders are trained, and its val/test captions decoded, on these float16 features:
`caption predict` and `convattn serve` encode an image as the extraction does (`channels_last`)
and round its features the same way (`cache_precision`; inference.encode_image), so a prediction for an image of the
dataset is fed the run's own features and gives the run's own caption.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from convattn.caption.encoders import (EncoderSpec, build_encoder, check_spec, dihedral, load_image,
                                      weights_fingerprint)
from convattn.common import distributed, io
from convattn.common.errors import UserError
from convattn.common.progress import log, progress
from convattn.common.runtime import cache_dir
from convattn.data.captions import CaptionDataset

FORMAT_VERSION = 1  # bump when the extraction itself changes (preprocessing, padding)
# images per encoder call: one at a time was the fastest on CPU, where a 500x500 image's
# activations stay in cache (docs/performance.md, "Where the time goes"). CUDA uses the same
# value without its own measurement: larger batches may well be faster on a GPU
EXTRACT_BATCH = 1
CACHE_DTYPE = torch.float16  # features.npy's dtype


def cache_precision(features: torch.Tensor) -> torch.Tensor:
    """Features rounded to the cache's dtype (float16, to nearest, as numpy's astype): what
    features.npy stores, hence what a run's decoders saw. The one place the rounding is done:
    the cache writes through it, and predict and serve round an image encoded on its own
    through it before decoding."""
    return features.to(CACHE_DTYPE)


def cache_key(dataset: CaptionDataset, spec: EncoderSpec) -> dict:
    key = {
        "format": FORMAT_VERSION,
        "dataset": dataset.fingerprint,
        "encoder": spec.name,
        "weights": weights_fingerprint(spec),
        "layer": spec.layer,
        "image_size": spec.image_size,
    }
    if spec.tune:  # the features below the tuned blocks (a frozen encoder's key is unchanged)
        key["tune"] = spec.tune
    if spec.transform:  # the images flipped or turned first (augmentation)
        key["transform"] = spec.transform
    return key


def label(spec: EncoderSpec) -> str:
    """How the log and the progress bar name an extraction."""
    return f"{spec.name}/{spec.layer}" + (f" (symmetry {spec.transform} of 7)" if spec.transform else "")


def cache_folder(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "features" / digest


def check_sizes(dataset: CaptionDataset, spec: EncoderSpec) -> None:
    """Batches (and the cache) need one grid size: mixed image sizes need --image-size."""
    if spec.image_size is None and len(dataset.sizes) > 1:
        shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(dataset.sizes.items())[:5])
        raise UserError(f"--images {dataset.images_dir}: images have different sizes ({shown}); "
                        "pass --image-size N to resize all of them to NxN")


def find_cache(dataset: CaptionDataset, spec: EncoderSpec) -> tuple[np.ndarray, tuple, dict] | None:
    """The dataset's complete cache for `spec` on this machine, as `dataset_features` returns
    it, or None: never extracts."""
    key = cache_key(dataset, spec)
    folder = cache_folder(key)
    meta_path, array_path = folder / "meta.json", folder / "features.npy"
    if not (meta_path.is_file() and array_path.is_file()):
        return None
    meta = io.read_json(meta_path)
    if meta.get("key") != key:
        return None
    return (np.load(array_path, mmap_mode="r"), tuple(meta["grid"]),
            {"cached": True, "folder": str(folder), "seconds": meta["seconds"], "images_per_s": meta["images_per_s"]})


def dataset_features(dataset: CaptionDataset, spec: EncoderSpec, device: torch.device,
                    batch_size: int = EXTRACT_BATCH, quiet: bool = False) -> tuple[np.ndarray, tuple[int, int], dict]:
    """The dataset's region features, from the cache or extracted into it: features [N, R, C]
    (float16, memory-mapped), the grid (H', W') with R = H' * W', and facts about the
    extraction (seconds, images/s, whether the cache was hit)."""
    check_spec(spec)
    check_sizes(dataset, spec)
    key = cache_key(dataset, spec)
    folder = cache_folder(key)
    meta_path, array_path = folder / "meta.json", folder / "features.npy"
    cached = find_cache(dataset, spec)
    # data parallel: extract only where no rank has the cache (each machine has its own)
    if distributed.all_true(cached is not None):
        return cached

    encoder = channels_last(build_encoder(spec).to(device))
    n = len(dataset.images)
    start = time.perf_counter()
    if distributed.size() > 1:
        grid = extract_shared(encoder, dataset, spec, device, array_path, batch_size, quiet)
    else:
        grid = extract_resumable(encoder, dataset, spec, device, folder, key, batch_size, quiet)
    seconds = time.perf_counter() - start
    meta = {"key": key, "spec": asdict(spec), "grid": list(grid), "images": n,
            "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2)}
    if distributed.is_local_main():
        io.write_json(meta_path, meta)
    distributed.barrier()  # the cache is complete on every machine before anyone reads it
    log(f"features: {n} images through {label(spec)} in {seconds:.1f} s "
        f"({n / seconds:.1f} images/s), grid {grid[0]}x{grid[1]}, cached in {folder}")
    features = np.load(array_path, mmap_mode="r")
    return features, grid, {"cached": False, "folder": str(folder), "seconds": round(seconds, 2),
                            "images_per_s": round(n / seconds, 2)}


RESUME_EVERY = 512  # images between the partial cache's flushes (what an interruption can lose)


def extract_resumable(encoder, dataset: CaptionDataset, spec: EncoderSpec, device, folder: Path,
                      key: dict, batch_size: int, quiet: bool) -> tuple[int, int]:
    """Encode every image into features.npy -> the grid (H', W'). Rows go into
    features.partial.npy (memory-mapped), and partial.json records how many are done after
    each RESUME_EVERY images, so an interrupted extraction continues where it stopped; the
    finished array is renamed to features.npy."""
    n = len(dataset.images)
    partial, marker = folder / "features.partial.npy", folder / "partial.json"
    out, done, grid = None, 0, None
    if partial.is_file() and marker.is_file():
        state = io.read_json(marker)
        if state.get("key") == key:
            out, done, grid = np.load(partial, mmap_mode="r+"), int(state["done"]), tuple(state["grid"])
            log(f"features: resuming the extraction at image {done + 1} of {n}")
    bar = progress(total=n, initial=done, desc=f"features {label(spec)}", unit="img", quiet=quiet)
    for lo, f in encode(encoder, dataset, spec, device, range(done, n), batch_size):
        grid = tuple(f.shape[2:])
        f = f.flatten(2).transpose(1, 2)                                  # [B, R, C]
        if out is None:
            folder.mkdir(parents=True, exist_ok=True)
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                            shape=(n, f.shape[1], f.shape[2]))
        out[lo:lo + len(f)] = cache_precision(f).cpu().numpy()
        bar.update(len(f))
        done = lo + len(f)
        if done % RESUME_EVERY < len(f) or done == n:
            out.flush()
            io.write_json(marker, {"key": key, "done": done, "grid": list(grid)})
    bar.close()
    del out
    os.replace(partial, folder / "features.npy")
    marker.unlink()
    return grid


def channels_last(encoder: torch.nn.Module) -> torch.nn.Module:
    """The encoder in the channels-last memory layout the cache is extracted with (faster
    convolutions on CPU; docs/performance.md); its inputs go in channels-last too. Its
    float32 outputs differ from the default layout's in the last bits, which moves about 1%
    of the rounded values by one float16 step: predict encodes this way too, to get the
    cache's bytes."""
    return encoder.to(memory_format=torch.channels_last)


def encode(encoder, dataset: CaptionDataset, spec: EncoderSpec, device, rows: range, batch_size: int):
    """-> (first row, encoder output [B, C, H', W']) for the images of `rows`, in batches."""
    with torch.inference_mode():
        for lo in range(rows.start, rows.stop, batch_size):
            batch = [dihedral(load_image(dataset.path(im), spec.image_size), spec.transform)
                     for im in dataset.images[lo:min(lo + batch_size, rows.stop)]]
            x = torch.stack(batch).to(device).contiguous(memory_format=torch.channels_last)
            yield lo, encoder(x)


def extract_shared(encoder, dataset: CaptionDataset, spec: EncoderSpec, device, array_path: Path,
                   batch_size: int, quiet: bool) -> tuple[int, int]:
    """Data parallel: each rank encodes its contiguous share of the images (the same
    per-image computation as one process, so the same bytes), every rank receives all
    shares, and the first rank of each machine writes features.npy atomically -> the grid."""
    rows = distributed.rows(len(dataset.images))
    parts, grid = [], None
    bar = progress(total=len(rows), desc=f"features {label(spec)}", unit="img", quiet=quiet)
    for _, f in encode(encoder, dataset, spec, device, rows, batch_size):
        grid = tuple(f.shape[2:])
        parts.append(cache_precision(f.flatten(2).transpose(1, 2)).cpu().numpy())  # [B, R, C]
        bar.update(len(f))
    bar.close()
    shares = distributed.all_gather((grid, parts))
    grid = next(g for g, _ in shares if g is not None)
    if distributed.is_local_main():
        with io.atomic_path(array_path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.concatenate([p for _, ps in shares for p in ps]), allow_pickle=False)
    return grid
