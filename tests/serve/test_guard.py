"""guard.py on its own: which Host and Origin values a server answers, and the last-resort
500 (a sentence; the traceback logged once). Over HTTP on every route: test_hostile.py."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from convattn.serve.guard import Guard, Hosts
from serving import running


@pytest.mark.parametrize("bound,allow,host,answered", [
    ("127.0.0.1", (), "127.0.0.1:8000", True),
    ("127.0.0.1", (), "LOCALHOST:8000", True),
    ("127.0.0.1", (), "[::1]:8000", True),
    ("127.0.0.1", (), "localhost", True),
    ("127.0.0.1", (), "rebound.example:8000", False),
    ("127.0.0.1", (), "127.0.0.1.nip.io", False),
    ("127.0.0.1", (), "localhost.", False),
    ("127.0.0.1", (), "", False),
    ("127.0.0.1", (), None, False),
    ("127.0.0.1", (), "[::1", False),
    ("127.0.0.1", ("pc.lan",), "pc.lan:8000", True),
    ("::1", (), "127.0.0.1:8000", True),
    ("192.168.1.5", (), "192.168.1.5:8000", True),
    ("192.168.1.5", (), "localhost:8000", False),  # not bound to loopback: localhost is not it
    ("0.0.0.0", (), "10.1.2.3:8000", True),  # every address: any IP, which no rebinding can forge
    ("0.0.0.0", (), "[fe80::1]:8000", True),
    ("0.0.0.0", (), "rebound.example", False),
    ("0.0.0.0", ("pc.lan",), "pc.lan", True),
])
def test_hosts(bound, allow, host, answered):
    assert Hosts(bound, allow).allows(host) is answered


def failing_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(Guard, hosts=Hosts(), upload_paths=())

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")
    return app


def test_an_unexpected_error_is_a_sentence_and_one_logged_traceback(caplog):
    """Served by uvicorn (its loggers left to propagate, so caplog sees them too): the 500 is
    a sentence, and the traceback is in the log once, not once by us and once by uvicorn."""
    with caplog.at_level(logging.ERROR), running(failing_app(), log_config=None) as url:
        r = httpx.get(url + "/boom")
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error")
    assert "RuntimeError" not in r.text and "Traceback" not in r.text
    assert [rec.exc_info is not None for rec in caplog.records] == [True]
