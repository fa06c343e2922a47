"""`convattn serve` under hostile uploads: what each of issue #27's files costs, and a load of
valid and hostile uploads mixed; prints the figures docs/serve.md quotes.

    .venv/bin/python bench/serve_hostile.py                       # a generated model, 30 s of load
    .venv/bin/python bench/serve_hostile.py --model RUN/model.pt --duration 30 --concurrency 4

1. Costs: each file decoded by a fresh worker process (workers.DecodePool, as the server
   runs it): the answer, the worker's CPU seconds and its peak resident memory above what it
   held before; then sent to a live server: status and latency.
2. Load: `--concurrency` clients for `--duration` seconds, every third upload hostile (the
   seeded generator of tests/serve/hostile.py), the others a valid 500x500 PNG; throughput,
   latency percentiles, errors (5xx or no answer), and the server's resident memory (its
   process and its decoding workers) at the start, at the peak and after. The load starts
   after `--warmup` seconds of the same load: a server's threads reach their memory's
   high-water mark in its first concurrent requests, and stay there.

Without --model/--report it serves an attention decoder with random weights on
EfficientNet-Lite0 at 224x224: a real model's cost per caption, meaningless captions.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
import hostile  # noqa: E402  (tests/serve/hostile.py: the generator the tests use)
from serve_load import generated_image, percentile, start_server  # noqa: E402

from convattn.serve.images import BadImage, Fit  # noqa: E402
from convattn.serve.workers import DecodePool, status_bytes  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--report", help="the server's --report DIR")
    p.add_argument("--model", nargs="+", help="the server's --model PATH ... (default: a generated one)")
    p.add_argument("--parallel", type=int, help="the server's --parallel (default: its own)")
    p.add_argument("--threads", type=int, default=1, help="the server's --threads")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=4, help="clients sending at once")
    p.add_argument("--seed", type=int, default=27, help="the hostile generator's seed")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load first, not counted")
    return p.parse_args(argv)


def generated_model(folder: Path) -> Path:
    """An attention decoder with random weights on EfficientNet-Lite0 blocks at 224x224."""
    from dataclasses import replace

    import torch

    from convattn.caption.checkpoint import model_checkpoint
    from convattn.caption.decoders import build_decoder
    from convattn.caption.encoders import EncoderSpec
    from convattn.caption.presets import PRESETS
    from convattn.common import io
    from convattn.data.captions import SPECIALS

    config = replace(PRESETS["smoke"], image_size=224)
    vocab = list(SPECIALS) + "a an and are area buildings green in many of river road the trees".split()
    torch.manual_seed(0)
    decoder = build_decoder("attention", len(vocab), 320, config)
    path = folder / "model.pt"
    spec = EncoderSpec("efficientnet-lite0", "blocks", 224, None)
    io.save_checkpoint(path, model_checkpoint(decoder, "attention", vocab, 20, (7, 7), spec, config))
    return path


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (the server and its decoding workers)."""
    return sum(split_rss(pid))


def split_rss(pid: int) -> tuple[int, int]:
    """(the process's resident memory, its children's)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return status_bytes(pid, "VmRSS"), sum(status_bytes(c, "VmRSS") for c in children)


def costs(files: dict[str, bytes]) -> None:
    logging.getLogger("convattn.serve").setLevel(logging.ERROR)  # the answers are printed below
    print("issue #27's files and more of their kinds, each in a fresh decoding worker (at 224x224, "
          "as a model reads it):")
    for name, data in files.items():
        pool = DecodePool(1)
        try:
            pool.decode(hostile.encode(hostile.picture(), "PNG"), "warm-up", Fit(224))
            [worker] = pool.started
            rss, start = status_bytes(worker.proc.pid, "VmRSS"), time.perf_counter()
            try:
                d = pool.decode(data, f"'{name}'", Fit(224))
                answer = f"decoded {d.width}x{d.height}"
            except BadImage as exc:
                answer = f"{exc.status}: {str(exc)[:80]}"
            wall, used, peak = time.perf_counter() - start, worker.spent, max(0, worker.peak - rss)
            print(f"  {name:15} {len(data) / 1024:6.0f} KB  cpu {used:5.2f} s  wall {wall:5.2f} s  "
                  f"peak memory +{peak / 2**20:4.0f} MB  {answer}")
        finally:
            pool.close()


def through_server(url: str, model: str, files: dict[str, bytes]) -> None:
    print("the same files through the server (/api/caption, then /api/preview):")
    with httpx.Client(timeout=60) as http:
        for name, data in files.items():
            for route in ("/api/caption", "/api/preview"):
                start = time.perf_counter()
                r = http.post(url + route, files={"image": (name, data)}, data={"model": model})
                print(f"  {name:15} {route:13} {r.status_code}  {(time.perf_counter() - start) * 1000:6.0f} ms")


def load(url: str, model: str, pid: int, args) -> dict:
    """Mixed uploads from `concurrency` clients for `duration` seconds."""
    valid = generated_image()
    cases = itertools.cycle(hostile.generated(seed=args.seed, n=400))
    lock, stop = threading.Lock(), time.monotonic() + args.duration
    out = {"valid": [], "hostile": [], "errors": [], "peak": tree_rss(pid)}

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in itertools.count(k):
                if time.monotonic() > stop:
                    return
                with lock:
                    kind, (name, data) = ("hostile", next(cases)) if i % 3 == 2 else ("valid", ("ok.png", valid))
                start = time.perf_counter()
                try:
                    r = http.post(f"{url}/api/caption", files={"image": (name, data)}, data={"model": model})
                    bad = r.status_code >= 500 or (kind == "valid" and r.status_code != 200)
                    detail = f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as exc:
                    bad, detail = True, repr(exc)
                with lock:
                    out[kind].append(time.perf_counter() - start)
                    if bad:
                        out["errors"].append(f"{name}: {detail}")

    def watch() -> None:
        while time.monotonic() < stop:
            out["peak"] = max(out["peak"], tree_rss(pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.concurrency)]
    threads.append(threading.Thread(target=watch))
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["wall"] = time.perf_counter() - started
    return out


def report_load(out: dict, start: tuple[int, int], end: tuple[int, int], args) -> None:
    start_rss, end_rss = sum(start), sum(end)
    n = len(out["valid"]) + len(out["hostile"])
    print(f"load: {args.concurrency} clients for {out['wall']:.1f} s, every third upload hostile")
    print(f"  requests    {n} ({len(out['valid'])} valid, {len(out['hostile'])} hostile), "
          f"{n / out['wall']:.1f}/s; captions {len(out['valid']) / out['wall']:.2f}/s")
    for kind in ("valid", "hostile"):
        lat = out[kind]
        if lat:
            print(f"  {kind:8}    p50 {percentile(lat, 50) * 1000:.0f} ms, p95 {percentile(lat, 95) * 1000:.0f} ms, "
                  f"p99 {percentile(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    print(f"  errors      {len(out['errors'])} (5xx, no answer, or a valid image not captioned)")
    for e in out["errors"][:5]:
        print(f"    {e}")
    print(f"  memory      server and workers resident: {start_rss / 2**20:.0f} MB at the start, "
          f"{out['peak'] / 2**20:.0f} MB at the peak, {end_rss / 2**20:.0f} MB after "
          f"({(end_rss - start_rss) / 2**20:+.0f} MB: server {(end[0] - start[0]) / 2**20:+.0f}, "
          f"workers {(end[1] - start[1]) / 2**20:+.0f})")


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"{os.cpu_count()} CPU cores here; load average {os.getloadavg()[0]:.1f} at the start")
    files = {**hostile.named(), **hostile.more()}
    costs(files)
    with tempfile.TemporaryDirectory() as tmp:
        if not (args.model or args.report):
            args.model = [str(generated_model(Path(tmp)))]
        proc, url = start_server(args)
        try:
            model = httpx.get(f"{url}/api/models", timeout=30).json()[0]["id"]
            for _ in range(8):  # warm-up: first captions, workers started
                httpx.post(f"{url}/api/caption", files={"image": ("ok.png", generated_image())},
                           data={"model": model}, timeout=60)
            through_server(url, model, files)
            cold = split_rss(proc.pid)
            # the first concurrent requests raise the server's memory to the high-water mark of
            # its threads (measured: flat over 2,000 requests after that); the load starts warm
            load(url, model, proc.pid, argparse.Namespace(**{**vars(args), "duration": args.warmup}))
            time.sleep(1)
            start = split_rss(proc.pid)
            out = load(url, model, proc.pid, args)
            time.sleep(3)  # what the server holds once the load has passed
            end = split_rss(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"memory: server and workers resident {sum(cold) / 2**20:.0f} MB after one request at a time, "
          f"{sum(start) / 2**20:.0f} MB after {args.warmup:g} s of the same load")
    report_load(out, start, end, args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 1 if out["errors"] or sum(end) - sum(start) > 100 * 2**20 else 0


if __name__ == "__main__":
    sys.exit(main())
