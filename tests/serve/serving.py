"""What the server's tests share besides fixtures: the address their clients use, and a live
uvicorn server on a free 127.0.0.1 port for the tests that talk HTTP over a socket."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

# a page on this machine, as the server expects its requests to be addressed
LOCAL = "http://127.0.0.1:8000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, **config):
    """`app` served by uvicorn on a free port, in a thread -> its base URL. `config`: more
    of uvicorn.Config's settings."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
