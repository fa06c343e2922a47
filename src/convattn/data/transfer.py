"""Getting bytes from a URL or a path onto disk: streamed, resumable, atomic, checked.

    fetch_bytes(url)           a small file in memory (an image, a captions file), retried
    fetch_to(url, part)        a large file streamed into `part`, resumed with an HTTP range
                               request where the server allows one, else from the start
    place(path, data)          an atomic write (the user's umask) whose disk errors are one line
    sha256_file(path), check_space(folder, need), unreachable(url, seconds)

Every failure a person can fix (a network failure, a full disk) is a UserError naming the
URL or file and the fix; nothing already on disk is deleted by a failure.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import progress

TIMEOUT = 20.0  # seconds to connect and between reads of a download
RETRIES = 3  # tries of a small file before a transient failure is an error
CHUNK = 1 << 20  # bytes read and written at a time by fetch_to
MiB = 1 << 20
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


class Mismatch(UserError):
    """What arrived is not what the pins say (a digest, a caption, a picture): the copy is
    bad, so a downloaded archive holding it is removed and fetched anew by a rerun."""


def is_url(text: str) -> bool:
    return urllib.parse.urlsplit(str(text)).scheme in ("http", "https", "file")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def network_error(url: str, exc: BaseException, fix: str) -> UserError:
    """One line for a failed request: the URL, what went wrong, the fix."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    return UserError(f"{url}: download failed ({reason}); {fix}")


def disk_error(path: str | os.PathLike, exc: OSError, fix: str = "") -> UserError:
    what = DISK_ERRORS.get(exc.errno, exc.strerror or str(exc))
    fix = fix or "free some space or pass --to DIR on another disk, then rerun to continue"
    return UserError(f"{path}: cannot write ({what}); {fix}")


def place(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` at `path` atomically; a disk error is one line."""
    try:
        io.write_bytes(path, data)
    except OSError as exc:
        raise disk_error(path, exc) from None


def check_space(folder: Path, need: int, what: str) -> None:
    """Fail before a download that cannot fit: `need` bytes more in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(f"{folder}: {what} needs {need / MiB:,.0f} MiB more, {free / MiB:,.0f} MiB free; "
                        "free some space or pass --to DIR on another disk")


def unreachable(url: str, seconds: float) -> str | None:
    """Why `url`'s server (or the proxy for it) cannot be reached within about `seconds`
    each to resolve its name and to connect, or None when it can. A resolver can hang far
    longer than a connect timeout on a machine without a network, so it runs in a thread."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if parts.scheme == "file" or (proxy and urllib.request.proxy_bypass(parts.hostname or "")):
        proxy = None
    target = urllib.parse.urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else parts
    if parts.scheme == "file" or not target.hostname:
        return None
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(_resolve(host, port)), daemon=True)
    thread.start()
    thread.join(seconds)
    if not answer:
        return f"{host} did not resolve within {seconds:.0f} s"
    if isinstance(answer[0], str):
        return answer[0]
    try:
        socket.create_connection(answer[0], timeout=seconds).close()
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"
    return None


def _resolve(host: str, port: int):
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2]
    except OSError as exc:
        return f"{host} does not resolve ({exc.strerror or exc})"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return not isinstance(exc, FileNotFoundError)


def fetch_bytes(url: str, fix: str, timeout: float = TIMEOUT, retries: int = RETRIES) -> bytes:
    """The whole body of a small file; transient failures are retried with a growing pause."""
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if attempt + 1 == retries or not _transient(exc):
                raise network_error(url, exc, fix) from None
            time.sleep(_pause(exc, attempt))
    raise AssertionError("unreachable")


def _pause(exc: BaseException, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After (rate limits), up to a minute,
    else 0.5, 1, 2 ..."""
    after = exc.headers.get("Retry-After", "") if isinstance(exc, urllib.error.HTTPError) and exc.headers else ""
    return min(float(after), 60.0) if after.isdigit() else 0.5 * 2 ** attempt


def fetch_to(url: str, part: Path, fix: str, *, desc: str, quiet: bool = False,
             timeout: float = TIMEOUT) -> Path:
    """Stream `url` into `part`, continuing a previous partial download of it.

    A server answering a range request with 206 is appended to; one answering 200 (no range
    support) starts the file over. The caller checks the digest and renames `part`; a failure
    here leaves `part` as it is, to be continued by the next call.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            total = _length(response, have if resumed else 0)
            if total:
                check_space(part.parent, total - (have if resumed else 0), f"downloading {url}")
            _stream(response, part, "ab" if resumed else "wb", total, have if resumed else 0, desc, quiet)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the file is already whole
            return part
        raise network_error(url, exc, fix) from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise network_error(url, exc, f"rerun to continue ({_mib(part)} kept in {part}); {fix}") from None
    return part


def _length(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _stream(response, part: Path, mode: str, total: int | None, done: int, desc: str, quiet: bool) -> None:
    bar = progress(total=total // MiB if total else None, initial=done // MiB, desc=desc, unit="MiB",
                   quiet=quiet)
    shown = done // MiB
    try:
        with open(part, mode) as f:  # open() gives the new file the user's umask
            while block := response.read(CHUNK):
                f.write(block)
                done += len(block)
                bar.update(done // MiB - shown)
                shown = done // MiB
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise disk_error(part, exc) from None
        raise
    finally:
        bar.close()
    if total and done < total:
        raise ConnectionError(f"the connection closed after {done:,} of {total:,} bytes")


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / MiB:,.1f} MiB" if path.exists() else "nothing"
