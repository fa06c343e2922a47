"""The server under hostile input, over HTTP on a live uvicorn server: hundreds of damaged
files of every format Pillow writes, the bombs and the reproducers of issue #27, foreign
Host and Origin headers, bodies over the limit with and without Content-Length. Every
answer is a caption or a 4xx with a sentence, never a traceback, each within the per-request
budget; a valid image still gets its caption after every batch.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import hostile
from serving import running

BUDGET = 2.0  # seconds per request, the issue's bound (the decode budget is 1.5 s of CPU)
BATCH = 50


@pytest.fixture(scope="module")
def live(served):
    with running(served[0]) as url:
        yield url


@pytest.fixture(scope="module")
def named():
    """The issue's files, its scan bomb 1000x1000 (bench/serve_hostile.py sends the 6000x6000 one)."""
    return hostile.named(scan_side=1000)


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live, timeout=30) as c:
        yield c


def valid_png() -> bytes:
    return hostile.encode(hostile.picture((160, 120)), "PNG")


def upload(http, route: str, name: str, data: bytes) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    r = http.post(route, files={"image": (name, data, "application/octet-stream")})
    return r, time.perf_counter() - start


def check_answer(r: httpx.Response, elapsed: float, name: str) -> None:
    assert r.status_code < 500, (name, r.status_code, r.text[:300])
    assert "Traceback" not in r.text and 'File "' not in r.text, name
    assert elapsed < BUDGET, f"{name}: {elapsed:.2f} s"
    if r.status_code >= 400:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and len(detail.splitlines()) == 1, (name, detail)


def test_generated_hostile_uploads(http):
    """400 seeded cases, half to /api/caption and half to /api/preview."""
    statuses = Counter()
    for i, (name, data) in enumerate(hostile.generated(seed=27, n=400)):
        r, elapsed = upload(http, "/api/caption" if i % 2 else "/api/preview", name, data)
        check_answer(r, elapsed, name)
        statuses[r.status_code] += 1
        if i % BATCH == BATCH - 1:
            assert upload(http, "/api/caption", "ok.png", valid_png())[0].status_code == 200, i
    # the damaged copies are a mix (a flipped bit in pixel data still decodes); none is a 5xx
    assert statuses[200] > 50 and sum(statuses[s] for s in (400, 413, 415)) > 150, statuses
    print(f"\nhostile uploads: {dict(sorted(statuses.items()))}")


@pytest.mark.parametrize("name,status", [
    ("damaged.avif", 400), ("zero-frame.emf", 400), ("scan-bomb.jpg", 413),
    ("1x40000000.png", 413), ("40000000x1.png", 413)])
def test_the_issues_files(http, named, name, status):
    data = named[name]
    for route in ("/api/caption", "/api/preview"):
        r, elapsed = upload(http, route, name, data)
        check_answer(r, elapsed, name)
        assert r.status_code == status and f"'{name}'" in r.json()["detail"]
    assert "AVIF" in r.json()["detail"] if name.endswith(".avif") else True
    assert "WMF" in r.json()["detail"] if name.endswith(".emf") else True


def test_extreme_aspect_ratios_are_captioned_like_squares(http):
    for w, h in [(1, 65_535), (65_535, 1), (610, 65_535)]:
        r, elapsed = upload(http, "/api/caption", f"{w}x{h}.png", hostile.one_bit_png(w, h))
        check_answer(r, elapsed, f"{w}x{h}")
        assert r.status_code == 200 and r.json()["image"]["width"] == w


ROUTES = [("GET", "/"), ("GET", "/api/models"), ("GET", "/api/testset"), ("GET", "/report"),
          ("GET", "/static/common.js"), ("POST", "/api/caption"), ("POST", "/api/preview"),
          ("GET", "/openapi.json"), ("GET", "/nowhere")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_a_foreign_host_or_origin_is_refused_on_every_route(http, live, method, path):
    port = urlsplit(live).port
    for headers in ({"Host": f"rebound.example:{port}"}, {"Host": "127.0.0.1.nip.io"},
                    {"Origin": "http://rebound.example"}, {"Origin": "null"}, {"Host": ""}):
        r = http.request(method, path, headers=headers)
        assert r.status_code == 403, (headers, r.status_code)
        assert "refused" in r.json()["detail"] or "answers only" in r.json()["detail"]
    assert http.get("/api/models", headers={"Host": f"localhost:{port}"}).status_code == 200
    assert http.get("/api/models", headers={"Origin": live}).status_code == 200


def raw_request(live: str, head: str, chunks) -> tuple[int | None, int]:
    """Send `head` then the chunks (chunked encoding) until the server answers -> (status, bytes
    sent before its answer arrived). Status None: the connection was reset before the answer
    could be read (a server closing with unread data sends a reset, which may overtake it)."""
    url = urlsplit(live)
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(head.encode())
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
        try:
            answer = s.recv(65536).decode(errors="replace")
        except ConnectionResetError:
            return None, sent
    return int(answer.split()[1]), sent


def test_body_limit_holds_without_content_length(live):
    host = urlsplit(live).netloc
    boundary = "b0undary"
    head = (f"POST /api/caption HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n")
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    chunks = [part] + [b"\0" * (1 << 20)] * 60  # 60 MiB of file, no Content-Length
    status, sent = raw_request(live, head, chunks)
    assert status in (413, None) and sent < 40 << 20  # refused near the 20 MB limit, not after 60 MiB


def test_body_on_a_route_that_takes_none(http):
    r = http.request("GET", "/api/models", content=b"x" * 200_000)
    assert r.status_code == 413 and "takes no upload" in r.json()["detail"]


def test_one_byte_over_the_limit_says_by_how_much(http):
    from convattn.serve.images import MAX_BYTES
    r = http.post("/api/caption", files={"image": ("x.png", b"\0" * (MAX_BYTES + 1))})
    detail = r.json()["detail"]
    assert r.status_code == 413 and "20,971,521 bytes" in detail and "20,971,520 bytes" in detail


def folders_of_this_machine(*paths) -> list[str]:
    found = {str(Path(p).resolve()) for p in paths} | {str(Path(p)) for p in paths}
    found |= {os.getcwd(), str(Path.home()), sys.prefix, str(Path(sys.executable).parent)}
    return sorted(f for f in found if len(f) > 1)


def test_no_response_names_a_folder(http, report_dir, tiny_data):
    name = http.get("/api/testset").json()["rows"][0]["name"]
    answers = [http.get(p) for p in ("/", "/api/models", "/api/testset", "/report", "/openapi.json",
                                     f"/api/testset/{name}/image?size=9", "/api/testset/nope/image",
                                     "/api/testset?dataset=nope", "/api/testset?sort=nope")]
    answers += [http.post("/api/caption", files={"image": ("x.png", valid_png())}, data=form)
                for form in ({}, {"model": "nope"}, {"beam": "99"})]
    answers += [upload(http, "/api/caption", name, data)[0] for name, data in hostile.generated(seed=5, n=40)]
    folders = folders_of_this_machine(report_dir, tiny_data, os.environ.get("CONVATTN_CACHE", "/"))
    for r in answers:
        text = r.text if "image/png" not in r.headers.get("content-type", "") else ""
        for folder in folders:
            assert folder not in text, (r.url, folder)
        assert not re.search(r'"(/(?:tmp|home|root|work|usr|var)/[^"]*)"', text), (r.url, text[:300])
    models = http.get("/api/models").json()
    assert all(not m["path"].startswith("/") for m in models), [m["path"] for m in models]
    json.dumps(models)  # plain JSON all the way down


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/..%2f..%2fapp.py", "/static/%2e%2e/app.py",
                                  "/api/testset/..%2f..%2f..%2fetc%2fpasswd/image", "/report/../../etc/passwd",
                                  "/api/testset/%00/image", "/" + "a" * 5000])
def test_traversal_finds_nothing(http, path):
    r = http.get(path)
    assert r.status_code in (400, 404, 414) and "def create_app" not in r.text and "root:" not in r.text


@pytest.mark.parametrize("files,data,status", [
    (None, {"image": "not a file"}, 422),
    ({"image": ("x.png", b"\x89PNG")}, {"beam": "1e9"}, 422),
    ({"image": ("x.png", b"\x89PNG")}, {"beam": ""}, 415),  # an empty beam is no beam: the file is read
    ({"image": ("x.png", b"\x89PNG")}, {"model": "m" * 50_000}, 404),
    ({"image": ("x.png", b"\x89PNG"), "other": ("y.png", b"x")}, {"model": "m0", "extra": "x"}, 415),
])
def test_wrong_form_fields_get_a_sentence(http, files, data, status):
    r = http.post("/api/caption", files=files, data=data)
    assert r.status_code == status, r.text[:300]
    detail = r.json()["detail"]
    assert isinstance(detail, str) and len(detail) < 1000 and "Traceback" not in r.text


@pytest.mark.parametrize("headers,body", [
    ({"Content-Type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
    ({"Content-Type": "application/json"}, b'{"image": "aGVsbG8="}'),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"\xff" * 5000),
])
def test_broken_bodies_get_a_sentence(http, headers, body):
    r = http.post("/api/caption", headers=headers, content=body)
    assert 400 <= r.status_code < 500 and isinstance(r.json()["detail"], str), r.text[:300]
