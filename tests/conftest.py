"""The suite never reaches the internet: `convattn reproduce` downloads Sydney-Captions when it
finds no copy, so every test sees $CONVATTN_SYDNEY_URL pointing at a loopback port that
refuses connections (a socket bound, never listening), the offline case."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True, scope="session")
def offline_sydney():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    mp = pytest.MonkeyPatch()
    mp.setenv("CONVATTN_SYDNEY_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/Sydney_captions.zip")
    yield
    mp.undo()
    closed.close()
