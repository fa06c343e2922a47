"""Load on `convattn serve`: N caption requests from C concurrent clients, all of which must
be answered; prints latency percentiles and throughput.

    .venv/bin/python bench/serve_load.py --report report               # starts a server
    .venv/bin/python bench/serve_load.py --model runs/.../model.pt --image photo.jpg
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000   # a running one

Every request uploads the same image and computes its features anew (nothing is cached
between requests). Without --image it sends a generated 500x500 PNG, the size of a
Sydney-Captions image. Exit status 1 if any request failed.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--url", help="a running server; otherwise one is started with the flags below")
    p.add_argument("--report", help="the server's --report DIR")
    p.add_argument("--model", nargs="+", help="the server's --model PATH ...")
    p.add_argument("--parallel", type=int, help="the server's --parallel (default: its own)")
    p.add_argument("--threads", type=int, default=1, help="the server's --threads")
    p.add_argument("--requests", type=int, default=200, help="caption requests in all")
    p.add_argument("--concurrency", type=int, default=8, help="clients sending at once")
    p.add_argument("--image", help="image file to send (default: a generated 500x500 PNG)")
    p.add_argument("--use", help="model id to ask for (default: the first attention model)")
    p.add_argument("--beam", type=int, default=1, help="1: greedy")
    p.add_argument("--warmup", type=int, default=4, help="requests sent first and not counted")
    return p.parse_args(argv)


def generated_image() -> bytes:
    """500x500: smooth gradients and blocks, so it compresses like a photo, not like noise."""
    img = Image.radial_gradient("L").resize((500, 500))
    img = Image.merge("RGB", (img, img.rotate(90), Image.linear_gradient("L").resize((500, 500))))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "convattn", "serve", "--port", str(port), "--threads", str(args.threads)]
    if args.report:
        cmd += ["--report", args.report]
    if args.model:
        cmd += ["--model", *args.model]
    if args.parallel:
        cmd += ["--parallel", str(args.parallel)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            sys.exit(f"serve_load: the server exited: {proc.stdout.read().strip()}")
        try:
            httpx.get(f"{url}/api/models", timeout=2)
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("serve_load: the server did not start within 180 s")
            time.sleep(0.3)


def pick_model(url: str, wanted: str | None) -> dict:
    models = httpx.get(f"{url}/api/models", timeout=30).json()
    if wanted:
        found = [m for m in models if m["id"] == wanted]
        if not found:
            sys.exit(f"serve_load: --use {wanted}: the server has " + ", ".join(m["id"] for m in models))
        return found[0]
    return next((m for m in models if m["attention"]), models[0])


def run_load(url: str, image: bytes, name: str, model: str, beam: int, n: int, clients: int) -> dict:
    """n requests shared by `clients` threads, each with its own connection."""
    latencies, server, failures = [], [], []
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                try:
                    r = http.post(f"{url}/api/caption", files={"image": (name, image)},
                                  data={"model": model, "beam": str(beam)})
                    ok, detail = r.status_code == 200, r.text[:200]
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        server.append(r.json()["seconds"])
                    else:
                        failures.append(detail)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - started, "latencies": latencies, "server": server,
            "failures": failures}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.url or args.report or args.model):
        default = Path("report")
        if not default.is_dir():
            sys.exit("serve_load: pass --url, --report DIR or --model PATH (no ./report here)")
        args.report = str(default)
    proc, url = (None, args.url.rstrip("/")) if args.url else start_server(args)
    try:
        image = Path(args.image).read_bytes() if args.image else generated_image()
        name = Path(args.image).name if args.image else "generated-500x500.png"
        size = Image.open(io.BytesIO(image)).size
        model = pick_model(url, args.use)
        run_load(url, image, name, model["id"], args.beam, args.warmup, min(args.warmup, args.concurrency))
        out = run_load(url, image, name, model["id"], args.beam, args.requests, args.concurrency)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    lat, answered = out["latencies"], len(out["latencies"])
    print(f"server      {url} ({'started here' if proc else 'given'}), {os.cpu_count()} CPU cores here")
    print(f"model       {model['id']}: {model['label']} ({model['path']})")
    print(f"image       {name}, {size[0]}x{size[1]}, {len(image) / 1024:.0f} KB; "
          f"{'greedy' if args.beam <= 1 else f'beam {args.beam}'}; features computed per request")
    print(f"requests    {answered}/{args.requests} answered, {args.concurrency} concurrent clients")
    if lat:
        feats = statistics.mean(s["features"] for s in out["server"]) * 1000
        decode = statistics.mean(s["decoding"] for s in out["server"]) * 1000
        p50, p95 = percentile(lat, 50) * 1000, percentile(lat, 95) * 1000
        print(f"latency     p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(lat) * 1000:.0f} ms")
        print(f"server      mean per caption: features {feats:.0f} ms, decoding {decode:.0f} ms")
        print(f"throughput  {answered / out['wall']:.2f} captions/s ({out['wall']:.1f} s in all)")
    for detail in out["failures"][:5]:
        print(f"failed      {detail}")
    return 0 if answered == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
