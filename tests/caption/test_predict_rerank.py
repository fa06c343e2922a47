"""Consensus reranking outside training: a model.pt trained with --rerank carries the
training block, and `caption predict` reranks with it as the run reranked its test captions."""

import shutil

import numpy as np
import pytest
import torch

from convattn.caption import experiment, run
from convattn.caption.checkpoint import load_decoder, max_steps, stored_reranker
from convattn.caption.data import Data
from convattn.caption.encoders import EncoderSpec
from convattn.caption.features import dataset_features
from convattn.caption.inference import caption_split
from convattn.caption.presets import PRESETS
from convattn.caption.rerank import ConsensusReranker, reranker_for
from convattn.cli import main
from convattn.common import io
from convattn.data.captions import load_dataset
from predicting import assert_predict_and_serve_give_the_runs_captions

# the best recipe's shortening for tests, one decoder, trained in this process
BEST = PRESETS["best-smoke"].replace(models=("attention",), jobs=1)
SMALL = PRESETS["smoke"].replace(embed_dim=8, hidden_dim=16, attention_dim=8, batch_size=4, meteor=False)
SPEC = EncoderSpec("efficientnet-lite0", "blocks", 64, None)
# what every model.pt holds; a run without --rerank holds nothing more (the homework preset's)
KEYS = {"decoder", "model", "vocab", "max_len", "feature_dim", "grid", "encoder", "config"}


@pytest.fixture(scope="module")
def best_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("best-run")
    summary = experiment.run(BEST, tiny_data, out, device="cpu", quiet=True)
    return out, summary, run.run_dir(out, "blocks", "attention", 42) / "model.pt"


@pytest.fixture(scope="module")
def random_features(tiny_data):
    dataset = load_dataset(tiny_data)
    features = np.random.default_rng(0).standard_normal((len(dataset.images), 4, 16)).astype(np.float16)
    return Data(dataset, features, (2, 2), torch.device("cpu"))


def test_model_pt_carries_the_training_block_only_with_rerank(random_features, tmp_path):
    data = random_features
    run.train_run("attention", 42, data, SMALL.replace(epochs=1), SPEC, tmp_path / "plain", "cpu", quiet=True)
    plain = io.load_checkpoint(run.run_dir(tmp_path / "plain", "blocks", "attention", 42) / "model.pt")
    assert set(plain) == KEYS and stored_reranker(plain) is None

    config = SMALL.replace(epochs=1, beam=3, rerank=4)
    run.train_run("attention", 42, data, config, SPEC, tmp_path / "rerank", "cpu", quiet=True)
    ckpt = io.load_checkpoint(run.run_dir(tmp_path / "rerank", "blocks", "attention", 42) / "model.pt")
    assert set(ckpt) == KEYS | {"rerank"}
    block, train = ckpt["rerank"], data.dataset.split("train")
    # the training split's images and captions, nothing of val or test
    assert block["neighbours"] == 4 and block["references"] == [im.captions for im in train]
    assert block["globals"].dtype == torch.float32 and block["globals"].shape == (len(train), 16)
    torch.testing.assert_close(block["globals"].norm(dim=1), torch.ones(len(train)))
    # rebuilt from the block, the same neighbours and choices as the run's own reranker
    ours, stored = reranker_for(data, 4), ConsensusReranker.from_block(block)
    features = data.image_features(data.splits["test"])
    assert torch.equal(stored.train_globals, ours.train_globals)
    assert stored.nearest(features) == ours.nearest(features)
    own = [im.captions[:3] for im in data.splits["test"]]
    assert stored.scores(features, own) == ours.scores(features, own)


def test_the_stored_reranker_chooses_the_runs_test_captions(best_run, tiny_data):
    """On the run's own (cached) features, decoding with model.pt's reranker gives every
    test caption the run reported; without it, the beam's first differs somewhere."""
    out, summary, model = best_run
    decoder, ckpt = load_decoder(model, "cpu")
    dataset = load_dataset(tiny_data)
    features, grid, _ = dataset_features(dataset, SPEC, torch.device("cpu"), quiet=True)
    data = Data(dataset, features, grid, torch.device("cpu"))
    reported = [summary["captions"][im.name]["attention"] for im in data.splits["test"]]
    reranked = caption_split(decoder, data, "test", max_steps(ckpt), 5, reranker=stored_reranker(ckpt))
    assert [" ".join(w) for w in reranked] == reported
    plain = caption_split(decoder, data, "test", max_steps(ckpt), 5)
    assert [" ".join(w) for w in plain] != reported


def test_predict_reranks_as_the_run_did(best_run, tiny_data, capsys):
    out, summary, model = best_run
    image = str(tiny_data / "images/219.png")
    capsys.readouterr()
    assert main(["caption", "predict", "--model", str(model), image, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    caption = captured.out.strip().split("\t")[1]
    assert caption == summary["captions"]["219"]["attention"]
    assert "beam 5 + consensus rerank over 20 training images" in captured.err
    # --rerank 0: the run's beam as it is, which here is another caption
    assert main(["caption", "predict", "--model", str(model), image, "--rerank", "0", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().split("\t")[1] != caption and "beam 5\n" in captured.err
    # fewer neighbours than the run's, and greedy, which has nothing to rerank
    assert main(["caption", "predict", "--model", str(model), image, "--rerank", "3", "--device", "cpu"]) == 0
    assert "beam 5 + consensus rerank over 3 training images" in capsys.readouterr().err
    assert main(["caption", "predict", "--model", str(model), image, "--beam", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().err.rstrip().endswith(": greedy")


def test_predict_and_serve_give_every_test_image_the_runs_caption(best_run, tiny_data, capsys):
    """Each test image file, captioned on its own by predict and by serve's model store, gets
    the caption the run reported: both feed the decoder the cache's float16 features, as the
    run's were (fed the encoder's float32 features, one of these 8 near ties, image 357,
    went the other way)."""
    out, summary, model = best_run
    assert_predict_and_serve_give_the_runs_captions(model, summary, tiny_data, capsys)


def test_rerank_without_a_stored_reranker_is_a_user_error(random_features, best_run, tiny_data, tmp_path, capsys):
    run.train_run("attention", 42, random_features, SMALL.replace(epochs=1), SPEC, tmp_path, "cpu", quiet=True)
    plain = run.run_dir(tmp_path, "blocks", "attention", 42) / "model.pt"
    image = str(tiny_data / "images/219.png")
    capsys.readouterr()
    assert main(["caption", "predict", "--model", str(plain), image, "--rerank", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convattn: error: --rerank 5: ") and err.count("\n") == 1
    assert "carries no consensus reranker; train with --rerank N" in err
    # a model.pt with the block: reranking needs a beam, and a count of at least 0
    model = best_run[2]
    assert main(["caption", "predict", "--model", str(model), image, "--rerank", "5", "--beam", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convattn: error: --rerank 5: ") and "--beam" in err and err.count("\n") == 1
    assert main(["caption", "predict", "--model", str(model), image, "--rerank", "-1"]) == 2
    assert capsys.readouterr().err == "convattn: error: --rerank -1: must be at least 0 (0 = no reranking)\n"


def test_a_stored_run_from_before_the_block_gets_it_when_reused(best_run, tiny_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(best_run[0], out)
    model = run.run_dir(out, "blocks", "attention", 42) / "model.pt"
    ckpt = io.load_checkpoint(model)
    block = ckpt.pop("rerank")
    io.save_checkpoint(model, ckpt)  # as written before model.pt carried the reranker
    again = experiment.run(BEST, tiny_data, out, device="cpu", quiet=True)
    assert again["captions"] == best_run[1]["captions"]
    restored = io.load_checkpoint(model)["rerank"]
    assert restored["references"] == block["references"] and restored["neighbours"] == block["neighbours"]
    assert torch.equal(restored["globals"], block["globals"])


def test_predict_defaults_to_the_runs_beam_without_a_reranker():
    from convattn.caption.predict import decoding
    assert decoding({"config": {"beam": 3}}, "m.pt", None, None) == (3, None)   # the run's beam
    assert decoding({"config": {"beam": 3}}, "m.pt", 1, None) == (1, None)      # --beam 1: greedy
    assert decoding({"config": {}}, "m.pt", None, None) == (1, None)            # none recorded
