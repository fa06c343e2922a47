"""`convattn download rsicd | sydney-captions` against a loopback HTTP server the test starts:
tiny generated datasets in each source shape (per-file raw URLs, a zip, a git directory),
laid out, trained for a smoke run; interruptions resumed; corruption reported with nothing
verified lost; a missing server, a full disk and an offline reproduce each one line."""

import dataclasses
import errno
import hashlib
import json
import subprocess

import pytest
from datasets_made import tiny_rsicd, tiny_sydney, zip_of
from loopback import Loopback

from convattn.cli import main
from convattn.common import io
from convattn.common.errors import UserError
from convattn.data import rsicd, sydney

FOLDER = "src/datasets/RSICD/raw_dataset/RSICD_images"


@pytest.fixture
def server():
    with Loopback() as s:
        yield s


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def publish_rsicd(server, tmp_path, **sizes):
    """A tiny RSICD as two repositories of raw URLs (images, captions) on the server."""
    src = tiny_rsicd(tmp_path / "made", server.url(f"/rita/{FOLDER}/"), server.url("/vt/RSICD.csv"), **sizes)
    for name, data in src.images.items():
        server.files[f"/rita/{FOLDER}/{name}"] = data
    server.files["/vt/RSICD.csv"] = src.csv
    return src


def image_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "images").iterdir())}


def smoke(data, out) -> None:
    assert main(["caption", "--data", str(data), "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["models"]


def test_rsicd_from_raw_urls_and_from_a_zip_lay_out_alike_and_train(server, tmp_path):
    src = publish_rsicd(server, tmp_path)
    server.files["/RSICD_images.zip"] = zip_of({f"RSICD_images/{n}": b for n, b in src.images.items()})
    by_url = rsicd.download_rsicd(tmp_path / "a", pins=src.pins, jobs=4, quiet=True)
    by_zip = rsicd.download_rsicd(tmp_path / "b", server.url("/RSICD_images.zip"), pins=src.pins, quiet=True)
    assert image_bytes(by_url) == image_bytes(by_zip) == src.images
    assert (by_url / "dataset.json").read_bytes() == (by_zip / "dataset.json").read_bytes()
    laid = json.loads((by_url / "dataset.json").read_text())["images"]
    assert [(e["filename"], e["split"], e["label"]) for e in laid] == [
        (e["filename"], e["split"], e["sentences"][0]["tokens"][1]) for e in src.dataset["images"]]
    assert [[s["tokens"] for s in e["sentences"]] for e in laid] == [
        [[t.lower() for t in s["tokens"]] for s in e["sentences"]] for e in src.dataset["images"]]
    assert not (by_zip / ".download" / "RSICD_images.zip").exists()  # read whole, then removed
    smoke(by_url, tmp_path / "run")


def test_rsicd_from_a_git_directory(tmp_path):
    src = tiny_rsicd(tmp_path / "made", n_train=4, n_val=1, n_test=1)
    repo = tmp_path / "repo"
    (repo / FOLDER).mkdir(parents=True)
    for name, data in src.images.items():
        (repo / FOLDER / name).write_bytes(data)
    (tmp_path / "RSICD.csv").write_bytes(src.csv)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "images"], check=True)
    commit = subprocess.run(git[:3] + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    pins = dataclasses.replace(src.pins, commit=commit, folder=FOLDER)
    dest = rsicd.download_rsicd(tmp_path / "out", str(repo / ".git"), str(tmp_path / "RSICD.csv"), pins=pins, quiet=True)
    assert image_bytes(dest) == src.images


def test_the_official_zip_is_trusted_on_its_digest_and_a_rerun_accepts_its_images(server, tmp_path):
    src = publish_rsicd(server, tmp_path, n_train=4, n_val=1, n_test=1)
    images = dict(src.images, **{"00001.jpg": src.images["00001.jpg"] + b"\0"})  # one copy differs
    (tmp_path / "RSICD_images.zip").write_bytes(zip_of({f"RSICD_images/{n}": b for n, b in images.items()}))
    with pytest.raises(UserError, match=r"1 images failed their SHA-256 check \(first: 00001.jpg from RSICD_images.zip"):
        rsicd.download_rsicd(tmp_path / "other", str(tmp_path / "RSICD_images.zip"), pins=src.pins, quiet=True)
    digest = hashlib.sha256((tmp_path / "RSICD_images.zip").read_bytes()).hexdigest()
    pins = dataclasses.replace(src.pins, official_zip_sha256=digest)
    dest = rsicd.download_rsicd(tmp_path / "r", str(tmp_path / "RSICD_images.zip"), pins=pins, quiet=True)
    assert image_bytes(dest) == images and (tmp_path / "RSICD_images.zip").exists()  # the user's file stays
    assert (dest / ".download" / "accepted.sha256").read_text().endswith("  00001.jpg\n")
    before = len(server.log)
    rsicd.download_rsicd(dest, pins=pins, quiet=True)  # the default source: nothing to fetch
    assert len(server.log) == before and image_bytes(dest) == images


def test_sydney_from_a_folder_holding_a_copy(tmp_path):
    src = tiny_sydney(tmp_path / "made", n_train=4, n_val=1, n_test=1)
    dest = sydney.download_sydney(tmp_path / "syd", str(tmp_path / "made"), pins=src.pins, quiet=True)
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(
        p.name for p in (tmp_path / "made" / "images").iterdir())


def test_sydney_zip_downloads_lays_out_and_trains(server, tmp_path):
    src = tiny_sydney(tmp_path / "made")
    server.files["/hf/Sydney_captions.zip"] = src.zip
    pins = dataclasses.replace(src.pins, url=server.url("/hf/Sydney_captions.zip"))
    dest = sydney.download_sydney(tmp_path / "syd", pins=pins, quiet=True)
    laid = json.loads((dest / "dataset.json").read_text())
    assert laid == src.dataset and len(list((dest / "images").glob("*.tif"))) == len(src.dataset["images"])
    assert not (dest / ".download" / "Sydney_captions.zip").exists()
    requests = len(server.log)
    assert sydney.download_sydney(tmp_path / "syd", pins=pins, quiet=True) == dest
    assert len(server.log) == requests  # finished and verified: nothing fetched again
    smoke(dest, tmp_path / "run")


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_zip_download_resumes(server, tmp_path, ranges):
    src = tiny_sydney(tmp_path / "made", n_train=4, n_val=1, n_test=1)
    server.files["/z.zip"] = src.zip
    server.cut["/z.zip"] = len(src.zip) // 2
    server.ranges = ranges
    pins = dataclasses.replace(src.pins, url=server.url("/z.zip"))
    with pytest.raises(UserError, match=r"/z.zip: download failed .*rerun to continue \(.* kept in .*z.zip.part\)"):
        sydney.download_sydney(tmp_path / "syd", pins=pins, quiet=True)
    part = tmp_path / "syd" / ".download" / "z.zip.part"
    assert part.stat().st_size == len(src.zip) // 2
    sydney.download_sydney(tmp_path / "syd", pins=pins, quiet=True)
    assert server.log[-1] == ("/z.zip", f"bytes={len(src.zip) // 2}-")  # asked for the rest
    assert json.loads((tmp_path / "syd" / "dataset.json").read_text()) == src.dataset


def test_an_interrupted_per_file_download_keeps_what_verified(server, tmp_path):
    src = publish_rsicd(server, tmp_path, n_train=6, n_val=2, n_test=2)
    dead = f"/rita/{FOLDER}/00004.jpg"
    server.fail[dead] = 503
    with pytest.raises(UserError, match=r"00004.jpg: download failed \(HTTP 503.*rerun to continue"):
        rsicd.download_rsicd(tmp_path / "r", pins=src.pins, jobs=1, quiet=True)
    kept = {p.name for p in (tmp_path / "r" / "images").iterdir()}
    assert kept and "00004.jpg" not in kept and not (tmp_path / "r" / "dataset.json").exists()
    del server.fail[dead]
    before = len(server.log)
    rsicd.download_rsicd(tmp_path / "r", pins=src.pins, jobs=1, quiet=True)
    fetched = {path.rsplit("/", 1)[1] for path, _ in server.log[before:] if FOLDER in path}
    assert fetched == set(src.images) - kept  # only what was not there verified
    assert image_bytes(tmp_path / "r") == src.images


def test_a_corrupted_image_is_reported_and_nothing_verified_is_lost(server, tmp_path):
    src = publish_rsicd(server, tmp_path, n_train=6, n_val=2, n_test=2)
    rsicd.download_rsicd(tmp_path / "r", pins=src.pins, quiet=True)
    good = tmp_path / "r" / "images" / "00001.jpg"
    stamp = good.stat().st_mtime_ns
    (tmp_path / "r" / "images" / "00002.jpg").write_bytes(b"damaged on disk")
    server.files[f"/rita/{FOLDER}/00002.jpg"] = src.images["00002.jpg"][:-1] + b"\x00"  # and on the server
    with pytest.raises(UserError, match=r"1 images failed their SHA-256 check \(first: 00002.jpg from "
                                        r"http://127.0.0.1:\d+/rita/.*/00002.jpg: SHA-256 "):
        rsicd.download_rsicd(tmp_path / "r", pins=src.pins, quiet=True)
    assert good.stat().st_mtime_ns == stamp and len(list((tmp_path / "r" / "images").iterdir())) == 10
    assert (tmp_path / "r" / "images" / "00002.jpg").read_bytes() == b"damaged on disk"  # not replaced by a bad copy


def test_sydney_captions_or_pictures_that_differ_are_named(server, tmp_path):
    src = tiny_sydney(tmp_path / "made", n_train=4, n_val=1, n_test=1)
    wrong = json.loads(json.dumps(src.dataset))
    wrong["images"][2]["sentences"][0]["tokens"][1] = "purple"
    swapped = {f"Sydney_captions/imgs/{e['filename']}": (tmp_path / "made" / "images" /
               (src.dataset["images"][0]["filename"].replace(".tif", ".png"))).read_bytes()
               for e in src.dataset["images"][1:2]}
    cases = {"/captions.zip": (zip_of({"d/dataset.json": json.dumps(wrong).encode()}),
                               r"the captions of 1 images differ from the original Sydney-Captions' \(first: 3.tif\)"),
             "/pixels.zip": (zip_of({"d/dataset.json": json.dumps(src.dataset).encode(), **swapped}),
                             r"1 images failed their check \(first: 2.tif: not the original picture")}
    for path, (blob, message) in cases.items():
        server.files[path] = blob
        pins = dataclasses.replace(src.pins, url=server.url(path))
        with pytest.raises(UserError, match=message + r".*the downloaded .*zip was removed"):
            sydney.download_sydney(tmp_path / path.strip("/"), pins=pins, quiet=True)
        dest = tmp_path / path.strip("/")
        assert not (dest / "dataset.json").exists() and not list((dest / ".download").iterdir())


def test_a_missing_server_is_one_line_with_exit_2(tmp_path, capsys, offline_url):
    assert main(["download", "sydney-captions", "--from", offline_url, "--to", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"convattn: error: {offline_url}: download failed (") and "Connection refused" in err


def test_a_full_disk_is_one_line_and_keeps_what_verified(server, tmp_path, monkeypatch):
    src = publish_rsicd(server, tmp_path, n_train=6, n_val=2, n_test=2)
    real, calls = io.write_bytes, []

    def fill_up(path, data):
        calls.append(path)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(io, "write_bytes", fill_up)
    with pytest.raises(UserError, match=r"images/\d+.jpg: cannot write \(the disk is full\); free some space"):
        rsicd.download_rsicd(tmp_path / "r", pins=src.pins, jobs=1, quiet=True)
    assert len(list((tmp_path / "r" / "images").iterdir())) == 3  # csv + 3 images written, kept


def test_reproduce_fetches_sydney_when_absent_and_says_why_not_offline(server, tmp_path, monkeypatch, offline_url):
    from convattn.report.reproduce import find_sydney

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVATTN_SYDNEY", raising=False)
    folder, why = find_sydney(None)  # the suite's offline URL (tests/conftest.py)
    assert folder is None and why.startswith("Sydney-Captions not found (no --sydney;")
    assert "Could not fetch it (cannot connect to 127.0.0.1:" in why and "convattn download sydney-captions" in why
    src = tiny_sydney(tmp_path / "made", n_train=4, n_val=1, n_test=1)
    server.files["/Sydney_captions.zip"] = src.zip
    monkeypatch.setenv("CONVATTN_SYDNEY_URL", server.url("/Sydney_captions.zip"))
    monkeypatch.setattr(sydney, "shipped_pins", lambda: src.pins)
    assert find_sydney(None) == (tmp_path / "cache" / "sydney-captions", "")
    assert find_sydney(None)[0] == tmp_path / "cache" / "sydney-captions"  # found in the cache now


def test_download_help_lists_both_datasets_with_sources_and_checks(capsys):
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("rsicd 10,921 images from RitaRamo/image-caption-remote-sensing-images at 160b24710763",
                 "albertofrizzera/VT-RSBS", "isaaccorley/Sydney-Captions at revision 4b357e804147",
                 "SHA-256 manifest", "Not verified: the zip's bytes"):
        assert text in out


@pytest.fixture
def offline_url():
    import os

    return os.environ["CONVATTN_SYDNEY_URL"]
