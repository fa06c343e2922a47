"""The download path, against a local HTTP server on 127.0.0.1 serving small fixture files."""

import gzip
import hashlib
import http.server
import threading
from functools import partial

import pytest

from convattn.cli import main
from convattn.common.errors import UserError
from convattn.data import download


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def publish(root, files: dict[str, bytes]) -> dict[str, str]:
    """Write gzip files to the server's folder; return name -> SHA-256 of the contents."""
    for name, raw in files.items():
        (root / name).write_bytes(gzip.compress(raw))
    return {name: hashlib.sha256(raw).hexdigest() for name, raw in files.items()}


FILES = {"a-idx1-ubyte.gz": b"\x00\x00\x08\x01" + bytes(range(20)),
         "b-idx3-ubyte.gz": b"\x00\x00\x08\x03" + bytes(100)}


def test_download_verifies_and_keeps_good_files(server, tmp_path):
    root, url = server
    sums = publish(root, FILES)
    dest = download.download_fashion_mnist(tmp_path / "cache", url, sums)
    for name, raw in FILES.items():
        assert gzip.decompress((dest / name).read_bytes()) == raw
    # idempotent: a second call finds the files verified and fetches nothing
    (root / "a-idx1-ubyte.gz").unlink()
    download.download_fashion_mnist(tmp_path / "cache", url, sums)


def test_corrupted_file_is_rejected_and_not_kept(server, tmp_path):
    root, url = server
    sums = publish(root, FILES)
    publish(root, {"b-idx3-ubyte.gz": b"\x00\x00\x08\x03" + bytes(99) + b"\x01"})  # one byte changed
    with pytest.raises(UserError, match=r"b-idx3-ubyte.gz: SHA-256 of the contents"):
        download.download_fashion_mnist(tmp_path / "cache", url, sums)
    assert (tmp_path / "cache" / "a-idx1-ubyte.gz").exists()
    assert not (tmp_path / "cache" / "b-idx3-ubyte.gz").exists()


def test_truncated_gzip_is_rejected(server, tmp_path):
    root, url = server
    sums = publish(root, FILES)
    (root / "a-idx1-ubyte.gz").write_bytes(gzip.compress(FILES["a-idx1-ubyte.gz"])[:-6])
    with pytest.raises(UserError, match="a-idx1-ubyte.gz: not a valid gzip file"):
        download.download_fashion_mnist(tmp_path / "cache", url, sums)
    assert not list((tmp_path / "cache").glob("*"))


def test_missing_file_on_server(server, tmp_path):
    _, url = server
    with pytest.raises(UserError, match="download failed"):
        download.download_fashion_mnist(tmp_path / "cache", url, {"nope.gz": "0" * 64})


def test_cli_uses_cache_and_env(server, tmp_path, monkeypatch, capsys):
    root, url = server
    sums = publish(root, FILES)
    monkeypatch.setattr(download, "FASHION_MNIST_SHA256", sums)
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("CONVATTN_FASHION_MNIST_URL", url)
    assert main(["download", "fashion-mnist"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "fashion-mnist")


def test_find_prefers_data_flag_and_explains_absence(tmp_path, monkeypatch):
    assert download.find_fashion_mnist(tmp_path) == tmp_path
    with pytest.raises(UserError, match="--data .*no such folder"):
        download.find_fashion_mnist(tmp_path / "missing")
    monkeypatch.setattr(download, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        download.find_fashion_mnist(None)


def test_real_checksums_match_debian_files():
    folder = download.DEBIAN_DIR
    if not all((folder / f).exists() for f in download.FASHION_MNIST_FILES):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    for name, expected in download.FASHION_MNIST_SHA256.items():
        assert download.idx_sha256((folder / name).read_bytes()) == expected
