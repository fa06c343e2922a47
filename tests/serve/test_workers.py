"""The decoding workers: the same pixels as decoding in-process, and the budgets enforced
(CPU time kills the worker, the address-space cap turns a big decode into a 413, a dead
worker is replaced), and no more uploads decoding at once than the server's --parallel."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import hostile
from convattn.serve.app import create_app
from convattn.serve.images import BadImage, Fit, decode
from convattn.serve.workers import DecodePool
from serving import LOCAL


@pytest.fixture
def pool():
    p = DecodePool(2)
    yield p
    p.close()


def test_same_pixels_as_in_process(pool):
    for fmt, ext, kwargs in hostile.WRITABLE[:8]:
        data = hostile.encode(hostile.picture((90, 70)), fmt, **kwargs)
        for fit in (Fit(), Fit(64), Fit(max_side=50)):
            ours, theirs = pool.decode(data, "x", fit), decode(data, "x", fit)
            assert ours.image.tobytes() == theirs.image.tobytes() and ours.image.size == theirs.image.size
            assert (ours.width, ours.height, ours.format) == (90, 70, fmt)


def test_a_decode_over_its_cpu_budget_is_stopped_and_the_worker_replaced():
    pool = DecodePool(1, cpu_seconds=0.02)  # this PNG takes about 0.2 s
    try:
        big = hostile.encode(Image.new("RGB", (6000, 6000), (9, 99, 199)), "PNG")
        with pytest.raises(BadImage) as info:
            pool.decode(big, "'big.png'", Fit(64))
        assert info.value.status == 413 and "0.02 s of CPU" in str(info.value)
        [killed] = pool.started
        assert killed.proc.returncode is not None  # stopped, not left running
        assert pool.decode(hostile.encode(hostile.picture(), "PNG"), "x", Fit(64)).image.size == (64, 64)
        assert killed not in pool.started
    finally:
        pool.close()


def test_a_decode_over_the_memory_cap_is_a_413():
    pool = DecodePool(1, address_space=120 << 20)  # Python and Pillow take about 40 MB of it
    try:
        big = hostile.encode(Image.new("RGB", (6000, 6000), (9, 99, 199)), "PNG")  # 108 MB decoded
        with pytest.raises(BadImage) as info:
            pool.decode(big, "'big.png'", Fit(64))
        assert info.value.status == 413 and "more memory" in str(info.value)
    finally:
        pool.close()


def test_a_worker_that_dies_is_a_400_then_replaced(pool):
    big = hostile.encode(Image.new("RGB", (6000, 6000), (9, 99, 199)), "PNG")  # 0.2 s to decode
    assert pool.decode(big, "x", Fit(64)).image.size == (64, 64)
    [worker] = pool.started  # as a crash in a decoder would, half way through
    threading.Timer(0.05, worker.proc.kill).start()
    with pytest.raises(BadImage) as info:
        pool.decode(big, "'x.png'", Fit(64))
    assert info.value.status == 400 and "crashed the image reader" in str(info.value)
    assert pool.decode(big, "x", Fit(64)).image.size == (64, 64)


def test_what_decoders_print_stays_in_the_worker(pool, capfd):
    """libtiff prints its complaints about a damaged file to stderr: not into the server's log."""
    tiff = hostile.encode(hostile.picture((64, 64)), "TIFF", compression="tiff_adobe_deflate")
    for at in range(len(tiff) // 2, len(tiff), 97):
        damaged = tiff[:at] + bytes([tiff[at] ^ 0x55]) + tiff[at + 1:]
        try:
            pool.decode(damaged, "x", Fit(64))
        except BadImage:
            pass
    assert capfd.readouterr().err == ""


def test_a_burst_runs_no_more_decodes_than_workers(pool):
    data = hostile.encode(hostile.picture((800, 800)), "PNG")
    threads = [threading.Thread(target=pool.decode, args=(data, "x", Fit(64))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pool.started) == 2  # the other six waited for one of the two


def test_a_readers_own_failure_is_logged_in_one_line_and_ordinary_damage_not(pool, caplog):
    with caplog.at_level(logging.INFO, logger="convattn.serve"):
        for data in (hostile.zero_frame_emf(), hostile.encode(hostile.picture(), "PNG")[:60]):
            with pytest.raises(BadImage):
                pool.decode(data, "'x'", Fit())
    [record] = caplog.records
    assert "WMF" in record.getMessage() and "\n" not in record.getMessage() and record.exc_info is None


class CountingPool(DecodePool):
    """A pool that records how many uploads it decoded at once."""

    def __init__(self, workers: int):
        super().__init__(workers)
        self.now = self.most = 0
        self.count_lock = threading.Lock()

    def decode(self, *args):
        with self.count_lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().decode(*args)
        finally:
            with self.count_lock:
                self.now -= 1


def test_uploads_decode_within_the_parallel_bound(served):
    """The pool could decode 4 at once; the store's --parallel 2 lets no more than 2 run."""
    store = served[1]
    pool = CountingPool(4)
    data = hostile.encode(Image.new("RGB", (3000, 3000), (9, 99, 199)), "PNG")  # 0.05 s to decode
    with TestClient(create_app(store, pool=pool), base_url=LOCAL) as client:
        def send(route: str) -> int:
            return client.post(route, files={"image": ("x.png", data)}).status_code
        with ThreadPoolExecutor(8) as burst:
            statuses = list(burst.map(send, ["/api/caption", "/api/preview"] * 6))
    assert statuses == [200] * 12 and store.parallel == 2 and pool.most == 2
