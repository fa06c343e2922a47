"""Fixtures for the server's tests: two caption models with random weights (they still
caption, and the attention one still attends), a fake `reproduce` run around them (a tiny
generated dataset with its feature cache, summary.json with validation scores, report.html),
and the app built from it; and `stages_dir`, a fake run with all four caption stages
(caption, caption-best on that dataset; rsicd, rsicd-best on a second tiny dataset).

Random decoders keep these tests independent of training; the encoder is the real
EfficientNet-Lite0 at 128x128 (a 4x4 grid of regions). The feature caches are extracted
by caption.features itself, as a run would (16 and 17 images, a second or two).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from convattn.caption.checkpoint import model_checkpoint
from convattn.caption.data import Data
from convattn.caption.decoders import build_decoder
from convattn.caption.encoders import EncoderSpec
from convattn.caption.features import dataset_features
from convattn.caption.presets import PRESETS
from convattn.caption.rerank import ConsensusReranker
from convattn.common import io
from convattn.data.captions import SPECIALS, load_dataset
from convattn.serve.cli import build
from serving import LOCAL
from tiny_captions import make_tiny_captions

IMAGE_SIZE = 128
SPEC = EncoderSpec("efficientnet-lite0", "blocks", IMAGE_SIZE, None)
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


def write_model(path, model: str, words: list[str], seed: int = 0, reranker=None, **config) -> None:
    config = replace(PRESETS["smoke"], image_size=IMAGE_SIZE, embed_dim=16, hidden_dim=32,
                     attention_dim=16, **config)
    vocab = list(SPECIALS) + sorted(set(words))
    torch.manual_seed(seed)
    decoder = build_decoder(model, len(vocab), 320, config)
    grid = (IMAGE_SIZE // 32, IMAGE_SIZE // 32)
    io.save_checkpoint(path, model_checkpoint(decoder, model, vocab, 12, grid, SPEC, config, reranker))


def words_of(data_dir) -> list[str]:
    dataset = json.loads((data_dir / "dataset.json").read_text())
    return sorted({t.lower() for im in dataset["images"] for s in im["sentences"] for t in s["tokens"]})


def cache_features(data_dir) -> None:
    """The dataset's feature cache for SPEC, as a run extracts it (under the tests' cache)."""
    dataset_features(load_dataset(data_dir), SPEC, torch.device("cpu"), quiet=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = make_tiny_captions(tmp_path_factory.mktemp("tiny"), n_train=9, n_val=3, n_test=4)
    cache_features(root)
    return root


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory, tiny_data):
    """A folder laid out like `convattn reproduce --out report`: caption/summary.json (with
    each seed's validation CIDEr-D per epoch: attention 0.45, no attention 0.40 at the last
    epoch, which model.pt holds), report.html and the first seed's model.pt of both decoders."""
    root = tmp_path_factory.mktemp("report")
    dataset = json.loads((tiny_data / "dataset.json").read_text())
    words = words_of(tiny_data)
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
               "feature_layer": {"chosen": "blocks"}, "config": {"preset": "smoke", "select": "final"},
               "models": {"no_attention": {"seeds": [seed_scores(SEED, [0.30, 0.40])]},
                          "attention": {"seeds": [seed_scores(SEED, [0.50, 0.45])]}},
               "captions": captions}
    (root / "caption" / "summary.json").write_text(json.dumps(summary))
    (root / "report.html").write_text("<!doctype html><title>report</title><h1>The study's report</h1>")
    return root


def seed_scores(seed: int, val_cider: list[float] | None, val_bleu4: list[float] | None = None) -> dict:
    """One seed's entry of summary.json models.<name>.seeds, its validation history only."""
    entry = {"seed": seed, "val_bleu4": val_bleu4 or [v / 4 for v in val_cider]}
    return {**entry, "val_cider": val_cider} if val_cider else entry


def write_stage(root, stage: str, data_dir, preset: str, select: str, runs: dict, reranker=None) -> None:
    """root/<stage>/ of a reproduce run: summary.json (dataset, config, each run's validation
    history, test captions copying a reference) and runs/blocks/<model>/seed<N>/model.pt for
    runs {(model, seed): val_cider per epoch, or ("bleu4", val_bleu4 per epoch), or None}."""
    folder = root / stage
    words, models = words_of(data_dir), {}
    for k, ((model, seed), history) in enumerate(runs.items()):
        write_model(folder / "runs" / "blocks" / model / f"seed{seed}" / "model.pt", model, words, seed=k,
                    reranker=reranker, select=select)
        seeds = models.setdefault(model, {"seeds": []})["seeds"]
        if history is not None:  # None: the run's result.json alone has its scores
            seeds.append(seed_scores(seed, None, history[1]) if history[0] == "bleu4" else seed_scores(seed, history))
    dataset = json.loads((data_dir / "dataset.json").read_text())
    captions = {}
    for im in (im for im in dataset["images"] if im["split"] == "test"):
        refs = [" ".join(t.lower() for t in s["tokens"]) for s in im["sentences"]]
        captions[im["filename"].rsplit(".", 1)[0]] = {"filename": im["filename"], "references": refs,
                                                      **{m: refs[1] for m in models}}
    summary = {"dataset": {"name": "tiny", "path": str(data_dir)}, "seeds": [SEED],
               "feature_layer": {"chosen": "blocks"}, "config": {"preset": preset, "select": select},
               "models": models, "captions": captions}
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="session")
def stages_dir(tmp_path_factory, report_dir, tiny_data):
    """report_dir's run with all four caption stages. Validation CIDEr-D of each model.pt:
    Sydney-Captions (tiny_data): caption-best attention seed 42 0.9 (last epoch, select
    final), caption attention 0.45, caption no attention 0.40, caption-best attention seed 43
    no CIDEr-D (bleu4 0.3); RSICD (a second tiny dataset, 5 test images): rsicd attention 0.7
    (best epoch 2 of 3, select val_cider), rsicd-best attention 0.66 (carries a reranker),
    rsicd no attention 0.6 (epoch 1; its result.json only, not in the summary)."""
    root = tmp_path_factory.mktemp("stages") / "report"
    shutil.copytree(report_dir, root)
    write_stage(root, "caption-best", tiny_data, "best-smoke", "final",
                {("attention", 42): [0.2, 0.9], ("attention", 43): ("bleu4", [0.1, 0.3])})
    rsicd = make_tiny_captions(tmp_path_factory.mktemp("tiny-rsicd"), n_train=9, n_val=3, n_test=5, seed=1)
    cache_features(rsicd)
    write_stage(root, "rsicd", rsicd, "rsicd", "val_cider",
                {("attention", 42): [0.3, 0.7, 0.5], ("no_attention", 42): None})
    io.write_json(root / "rsicd" / "runs" / "blocks" / "no_attention" / "seed42" / "result.json",
                  {"val_cider": [0.6, 0.2], "val_bleu4": [0.1, 0.1], "best_epoch": 1,
                   "config": {"select": "val_cider"}})
    dataset = load_dataset(rsicd)
    features, grid, _ = dataset_features(dataset, SPEC, torch.device("cpu"), quiet=True)
    reranker = ConsensusReranker.from_data(Data(dataset, features, grid, torch.device("cpu")), 5)
    write_stage(root, "rsicd-best", rsicd, "rsicd-best", "val_cider",
                {("attention", 42): [0.6, 0.66]}, reranker=reranker)
    return root


@pytest.fixture(scope="session")
def served(report_dir):
    """(app, store) exactly as `convattn serve --report DIR --device cpu` builds them."""
    return build(None, str(report_dir), "cpu", parallel=2)


@pytest.fixture(scope="session")
def client(served):
    with TestClient(served[0], base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="session")
def fake_run():
    """What the fake run holds, for the tests that check it."""
    return SimpleNamespace(image_size=IMAGE_SIZE, spec=SPEC, perfect=PERFECT, hopeless=HOPELESS)


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
