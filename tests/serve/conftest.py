"""Fixtures for the server's tests: two caption models with random weights (they still
caption, and the attention one still attends), a fake `reproduce` run around them (a tiny
generated dataset, summary.json, report.html), and the app built from it.

Random decoders keep these tests independent of training; the encoder is the real
EfficientNet-Lite0 at 128x128 (a 4x4 grid of regions), loaded once per process.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from convattn.caption.checkpoint import model_checkpoint
from convattn.caption.decoders import build_decoder
from convattn.caption.encoders import EncoderSpec
from convattn.caption.presets import PRESETS
from convattn.common import io
from convattn.data.captions import SPECIALS
from convattn.serve.cli import build
from tiny_captions import make_tiny_captions

IMAGE_SIZE = 128
SEED = 42
# test captions of the fake run: the first copies a reference word for word (bleu4 1), the
# second shares no 4-gram with any reference (bleu4 0)
PERFECT = "a red circle on a white background"
HOPELESS = "trees"


@pytest.fixture(autouse=True, scope="session")
def one_thread(tmp_path_factory):
    """One torch thread and a private feature cache, as in tests/caption."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("CONVATTN_CACHE", str(tmp_path_factory.mktemp("convattn-cache")))
    yield
    mp.undo()
    torch.set_num_threads(threads)


def write_model(path, model: str, words: list[str], seed: int = 0) -> None:
    config = replace(PRESETS["smoke"], image_size=IMAGE_SIZE, embed_dim=16, hidden_dim=32,
                     attention_dim=16)
    vocab = list(SPECIALS) + sorted(set(words))
    torch.manual_seed(seed)
    decoder = build_decoder(model, len(vocab), 320, config)
    spec = EncoderSpec("efficientnet-lite0", "blocks", IMAGE_SIZE, None)
    grid = (IMAGE_SIZE // 32, IMAGE_SIZE // 32)
    io.save_checkpoint(path, model_checkpoint(decoder, model, vocab, 12, grid, spec, config))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_captions(tmp_path_factory.mktemp("tiny"), n_train=9, n_val=3, n_test=4)


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory, tiny_data):
    """A folder laid out like `convattn reproduce --out report`: caption/summary.json,
    report.html and the first seed's model.pt of both decoders."""
    root = tmp_path_factory.mktemp("report")
    dataset = json.loads((tiny_data / "dataset.json").read_text())
    words = sorted({t.lower() for im in dataset["images"] for s in im["sentences"] for t in s["tokens"]})
    for i, model in enumerate(("no_attention", "attention")):
        write_model(root / "caption" / "runs" / "blocks" / model / f"seed{SEED}" / "model.pt",
                    model, words, seed=i)
    captions = {}
    test = [im for im in dataset["images"] if im["split"] == "test"]
    for k, im in enumerate(test):
        refs = [" ".join(t.lower() for t in s["tokens"]) for s in im["sentences"]]
        name = im["filename"].rsplit(".", 1)[0]
        captions[name] = {"filename": im["filename"], "references": refs,
                          "no_attention": HOPELESS if k == 0 else refs[0],
                          "attention": refs[0] if k == 0 else HOPELESS}
    first = test[0]["filename"].rsplit(".", 1)[0]
    captions[first]["references"][0] = PERFECT
    captions[first]["attention"] = PERFECT
    summary = {"dataset": {"name": "tiny", "path": str(tiny_data)}, "seeds": [SEED, SEED + 1],
               "feature_layer": {"chosen": "blocks"},
               "models": {"no_attention": {}, "attention": {}}, "captions": captions}
    (root / "caption" / "summary.json").write_text(json.dumps(summary))
    (root / "report.html").write_text("<!doctype html><title>report</title><h1>The study's report</h1>")
    return root


@pytest.fixture(scope="session")
def served(report_dir):
    """(app, store) exactly as `convattn serve --report DIR --device cpu` builds them."""
    return build(None, str(report_dir), "cpu", parallel=2)


@pytest.fixture(scope="session")
def client(served):
    with TestClient(served[0]) as c:
        yield c


@pytest.fixture(scope="session")
def fake_run():
    """What the fake run holds, for the tests that check it."""
    return SimpleNamespace(image_size=IMAGE_SIZE, perfect=PERFECT, hopeless=HOPELESS)


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG header claiming width x height 1-bit pixels, with a few rows of
    data: what a decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * ((width + 7) // 8 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bomb():
    """png_claiming(width, height): the bytes of a decompression bomb's header."""
    return png_claiming
