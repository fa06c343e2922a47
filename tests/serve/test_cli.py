"""`convattn serve` on the command line: one-line errors without a run, and a real server
process answering concurrent requests."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from convattn.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_report_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convattn: error: ") and len(err.splitlines()) == 1
    assert "make reproduce PRESET=fast" in err and "--model PATH" in err


@pytest.mark.parametrize("argv,words", [
    (["--model", "missing.pt"], "--model missing.pt: no such file"),
    (["--report", "nowhere"], "--report nowhere: no such folder"),
    (["--threads", "0"], "--threads 0"),
    (["--port", "70000"], "--port 70000"),
])
def test_bad_flags(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", *argv]) == 2
    assert words in capsys.readouterr().err


def test_not_a_model_file(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    assert main(["serve", "--model", str(tmp_path / "x.pt")]) == 2
    assert "not a readable convattn checkpoint" in capsys.readouterr().err


def test_empty_report_folder(tmp_path, capsys):
    assert main(["serve", "--report", str(tmp_path)]) == 2
    assert "no caption/summary.json" in capsys.readouterr().err


@pytest.mark.parametrize("summary,words", [
    ({}, "not the summary of a `convattn reproduce` run"),
    ({"feature_layer": {"chosen": "blocks"}, "seeds": [1], "models": {"attention": {}}}, "no model.pt"),
])
def test_report_that_is_not_a_run(tmp_path, capsys, summary, words):
    (tmp_path / "caption").mkdir()
    (tmp_path / "caption" / "summary.json").write_text(json.dumps(summary))
    assert main(["serve", "--report", str(tmp_path)]) == 2
    assert words in capsys.readouterr().err


def test_unreadable_test_captions(report_dir, tmp_path, capsys):
    shutil.copytree(report_dir, tmp_path / "run")
    path = tmp_path / "run" / "caption" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "captions": {}}))
    assert main(["serve", "--report", str(tmp_path / "run")]) == 2
    assert "its test captions cannot be read" in capsys.readouterr().err


def picture(i: int) -> bytes:
    """A JPEG of random noise (a new one each call)."""
    buffer = io.BytesIO()
    Image.effect_noise((120 + i, 90), 30 + i).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.slow
def test_server_process_serves_concurrent_requests(report_dir):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "convattn", "serve", "--report", str(report_dir),
                             "--port", str(port), "--device", "cpu", "--allow-host", "convattn.test"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                models = httpx.get(f"{url}/api/models", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start within 120 s"
                time.sleep(0.3)

        pictures = [picture(k) for k in range(4)]

        def caption(i: int) -> httpx.Response:
            return httpx.post(f"{url}/api/caption", files={"image": (f"{i}.jpg", pictures[i % 4])},
                              data={"model": models[i % 2]["id"], "beam": str(1 + i % 3)}, timeout=120)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(caption, range(24)))
        assert [r.status_code for r in answers] == [200] * 24
        # the same request gives the same caption, whatever ran beside it
        for i in range(12):
            assert answers[i].json()["caption"] == answers[i + 12].json()["caption"]
        bad = httpx.post(f"{url}/api/caption", files={"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken")})
        assert bad.status_code == 415 and "not an image" in bad.json()["detail"]
        assert caption(0).status_code == 200
        assert httpx.get(f"{url}/report").status_code == 200
        # DNS rebinding: a name that is neither 127.0.0.1's nor --allow-host's is refused
        assert httpx.get(f"{url}/api/models", headers={"Host": f"rebound.example:{port}"}).status_code == 403
        assert httpx.get(f"{url}/api/models", headers={"Host": f"convattn.test:{port}"}).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out  # binds 127.0.0.1 unless told otherwise
    assert "Traceback" not in out
