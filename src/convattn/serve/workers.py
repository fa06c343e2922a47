"""Decoding uploads in worker processes, each upload within a budget of CPU time and memory.

    pool = DecodePool(workers=2)
    decoded = pool.decode(data, "'x.png'", Fit(224))   # images.Decoded, or BadImage
    pool.close()

An image library fed hostile bytes can loop for seconds, allocate gigabytes or crash; in a
worker it does so away from the server. Each worker is `python -m convattn.serve.workers`
with its address space capped (RLIMIT_AS: a decode that needs more gets MemoryError, a
413); the pool watches the CPU time a worker spends on one upload and kills it past
CPU_SECONDS (a 413), or past WALL_SECONDS when starved; a worker that dies is replaced by
the next upload. Messages on the pipes are a JSON header and raw bytes, never pickle: the
server reads only RGB pixels from a worker, whatever the file did to it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import resource
import select
import struct
import subprocess
import sys
import threading
import time

from PIL import Image

from convattn.serve.images import BadImage, Decoded, Fit, decode

CPU_SECONDS = 1.5         # per upload: a 40 MP PNG or WebP decodes in about 1 s on a slow core
STARTUP_SECONDS = 60.0    # for a worker to load Python and Pillow on a busy machine
WALL_SECONDS = 10.0       # per upload, when other processes leave the worker little CPU
ADDRESS_SPACE = 1 << 30   # per worker, 1 GiB: a 40 MP RGBA image is 160 MB, and its reductions
RECYCLE_RSS = 256 << 20   # a worker holding more than this after an upload is replaced
POLL = 0.02               # seconds between looks at a busy worker's CPU time
log = logging.getLogger("convattn.serve")


def ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


class Worker:
    """One decoding process and its pipes."""

    def __init__(self, cpu_seconds: float, address_space: int):
        self.cpu_seconds = cpu_seconds
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # no 64 MB arena reserved per thread
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convattn.serve.workers", str(address_space)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=env)
        self.ticks = ticks_per_second()
        self.ready = False  # the worker says so once Python and Pillow are loaded
        self.spent, self.peak = 0.0, 0  # the last upload's CPU seconds; the worker's peak memory

    def wait_ready(self) -> None:
        """Python's start is not an upload's cost: wait for it before counting CPU time."""
        if not self.ready:
            n = struct.unpack(">I", self.receive(4, time.monotonic(), None, STARTUP_SECONDS))[0]
            self.ready = json.loads(self.receive(n, time.monotonic(), None, STARTUP_SECONDS)).get("ready", False)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        """The worker's CPU seconds so far (user + system), from /proc; wall time elsewhere."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.ticks
        except (OSError, IndexError, ValueError):
            return time.monotonic()

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()

    def measure(self, cpu: float | None) -> None:
        """Record what the last upload cost (`cpu`: the worker's CPU time when it began)."""
        if cpu is not None:
            self.spent, self.peak = self.cpu() - cpu, status_bytes(self.proc.pid, "VmHWM")

    def decode(self, data: bytes, name: str, fit: Fit) -> Decoded:
        """One upload through this worker; the worker is killed when over its budget."""
        header = {"name": name, "size": fit.size, "max_side": fit.max_side, "bytes": len(data)}
        cpu = None
        try:
            self.wait_ready()
            start, cpu = time.monotonic(), self.cpu()
            send(self.proc.stdin, header, data)
            reply = json.loads(self.receive(struct.unpack(">I", self.receive(4, start, cpu))[0], start, cpu))
            pixels = self.receive(reply.get("pixels", 0), start, cpu)
            image = Image.frombytes("RGB", tuple(reply["size"]), pixels) if reply["ok"] else None
            self.measure(cpu)
        except TimeoutError as exc:
            self.measure(cpu)
            self.kill()
            raise BadImage(f"{name} took more than {exc} to decode, the budget of an upload; it "
                           "looks like a decompression bomb (or save it smaller)", 413) from None
        except (OSError, EOFError, ValueError, KeyError, TypeError, struct.error):  # the worker died
            self.kill()
            log.warning("%s: the image reader's process died on it (exit status %s)", name, self.proc.returncode)
            raise BadImage(f"{name} crashed the image reader; it is damaged, or not an image "
                           "Pillow can read safely: save it as PNG or JPEG and retry") from None
        if reply.get("rss", 0) > RECYCLE_RSS:
            self.kill()
        if not reply["ok"]:
            if reply.get("log"):
                log.warning("%s", reply["log"])
            raise BadImage(reply["message"], reply["status"])
        return Decoded(image, reply["width"], reply["height"], reply["format"])

    def receive(self, n: int, start: float, cpu: float | None, wall: float = WALL_SECONDS) -> bytes:
        """n bytes from the worker, waiting no longer than its budget (TimeoutError); cpu None:
        no limit on CPU time."""
        fd, out = self.proc.stdout.fileno(), bytearray()
        while len(out) < n:
            ready, _, _ = select.select([fd], [], [], POLL)
            if ready:
                chunk = os.read(fd, min(n - len(out), 1 << 20))
                if not chunk:
                    raise EOFError("the worker closed its pipe")
                out += chunk
            elif cpu is not None and self.cpu() - cpu > self.cpu_seconds:
                raise TimeoutError(f"{self.cpu_seconds:g} s of CPU")
            elif time.monotonic() - start > wall:
                raise TimeoutError(f"{wall:g} s")
        return bytes(out)


class DecodePool:
    """`workers` decoding processes, started when first needed; `decode` waits for a free one."""

    def __init__(self, workers: int = 1, cpu_seconds: float = CPU_SECONDS, address_space: int = ADDRESS_SPACE):
        self.cpu_seconds, self.address_space = cpu_seconds, address_space
        self.idle: queue.LifoQueue = queue.LifoQueue()
        for _ in range(max(1, workers)):
            self.idle.put(None)  # None: a worker not started yet (or replaced)
        self.started: list[Worker] = []
        self.lock = threading.Lock()

    def decode(self, data: bytes, name: str, fit: Fit) -> Decoded:
        worker = self.idle.get()
        try:
            if worker is None or not worker.alive:
                worker = self.start()
            return worker.decode(data, name, fit)
        finally:
            self.idle.put(worker if worker is not None and worker.alive else None)

    def start(self) -> Worker:
        worker = Worker(self.cpu_seconds, self.address_space)
        with self.lock:
            self.started = [w for w in self.started if w.alive] + [worker]
        return worker

    def warm(self) -> None:
        """Start every worker now, so the first uploads do not wait for Python to start."""
        taken = [self.idle.get() for _ in range(self.idle.qsize())]
        for w in taken:
            self.idle.put(w if w is not None and w.alive else self.start())

    def close(self) -> None:
        with self.lock:
            workers, self.started = self.started, []
        for w in workers:
            w.kill()


def send(pipe, header: dict, payload: bytes = b"") -> None:
    """A message: 4-byte length, JSON header, then the payload the header announces."""
    text = json.dumps(header).encode()
    for part in (struct.pack(">I", len(text)) + text, payload):
        view = memoryview(part)
        while view:  # an unbuffered pipe may take part of a large write
            view = view[pipe.write(view) or 0:]
    pipe.flush()


def read_exact(pipe, n: int) -> bytes | None:
    out = bytearray()
    while len(out) < n:
        chunk = pipe.read(n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def answer(header: dict, data: bytes) -> tuple[dict, bytes]:
    """One request in the worker -> (reply header, RGB pixels)."""
    try:
        d = decode(data, header["name"], Fit(header["size"], header["max_side"]))
    except BadImage as exc:
        return {"ok": False, "status": exc.status, "message": str(exc), "rss": resident(),
                "log": str(exc) if exc.unexpected else None}, b""
    pixels = d.image.tobytes()
    return {"ok": True, "size": list(d.image.size), "width": d.width, "height": d.height,
            "format": d.format, "pixels": len(pixels), "rss": resident()}, pixels


def resident() -> int:
    return status_bytes(os.getpid(), "VmRSS")


def status_bytes(pid: int, key: str) -> int:
    """A memory field of /proc/<pid>/status in bytes (VmRSS: resident now, VmHWM: its peak);
    0 where there is no such file or field."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


def one_thread_each() -> None:
    """Decoders that would start a thread per core get one: the pool runs uploads in parallel,
    and a worker's CPU time is then its upload's."""
    try:
        from PIL import AvifImagePlugin
        AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    except ImportError:  # a Pillow without AVIF
        pass


def main(argv: list[str]) -> int:
    """The worker: requests on stdin, replies on stdout, until stdin closes."""
    resource.setrlimit(resource.RLIMIT_AS, (int(argv[0]), int(argv[0])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing a library prints can garble the replies
    requests = sys.stdin.buffer
    Image.init()
    one_thread_each()
    send(replies, {"ready": True})
    while (length := read_exact(requests, 4)) is not None:
        header = json.loads(read_exact(requests, struct.unpack(">I", length)[0]))
        data = read_exact(requests, header["bytes"])
        if data is None:
            return 0
        send(replies, *answer(header, data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
