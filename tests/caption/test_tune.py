"""Partial fine-tuning (--tune-blocks K): the cache holds the activations below the encoder's
top K blocks, the decoder trains those blocks (encoders.TopBlocks) at their own learning
rate, and model.pt carries them, so predict and serve caption as the run did."""

import numpy as np
import pytest
import torch

from convattn.caption import experiment, run, scst
from convattn.caption.checkpoint import load_decoder
from convattn.caption.decoders import build_decoder
from convattn.caption.encoders import EncoderSpec, build_encoder, check_spec, top_blocks, tunable_blocks
from convattn.caption.presets import HOMEWORK, PRESETS
from convattn.cli import main
from convattn.common import io
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset
from predicting import assert_predict_and_serve_give_the_runs_captions

# every stage of the best recipe (self-critical epoch, beam 5, reranking) with one tuned block
TUNED = PRESETS["best-smoke"].replace(models=("attention",), jobs=1, tune_blocks=1)


@pytest.fixture(scope="module")
def tuned_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned-run")
    summary = experiment.run(TUNED, tiny_data, out, device="cpu", quiet=True)
    return out, summary, run.run_dir(out, "blocks", "attention", 42) / "model.pt"


@pytest.mark.parametrize("k", [1, 2, 4])
def test_the_top_blocks_over_the_cached_part_are_the_frozen_encoder(k):
    """Before training, trunk + TopBlocks computes the frozen encoder's features. The same
    operations in the same order, but the blocks read a reshaped copy of the trunk's output:
    float32 rounding allowed (assert_close's float32 default, 1.3e-6 relative)."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 96)
    spec = EncoderSpec(image_size=96, tune=k)
    with torch.no_grad():
        frozen = build_encoder(EncoderSpec(image_size=96))(images)             # [2, 320, 3, 3]
        trunk = build_encoder(spec)(images)                                    # [2, 192, 3, 3]
        tuned = top_blocks(spec)(trunk.flatten(2).transpose(1, 2), trunk.shape[2:])
    assert trunk.shape[1] == 192 and tuned.shape == (2, 9, 320)
    torch.testing.assert_close(tuned, frozen.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("k", [0, 2])
def test_multi_level_regions_are_the_blocks_then_the_pooled_stride_16_map(k):
    """--feature-layer multi: per region the "blocks" features, then the stride-16 stage's
    output (block 10 of Lite0, 112 channels) averaged over the region's 2x2 cells; tuned,
    the stride-16 part passes the top blocks unchanged. Same operations, same order as the
    references: float32 rounding allowed (assert_close's default)."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 96)
    encoder = build_encoder(EncoderSpec(image_size=96))
    with torch.no_grad():
        x = encoder.stem(encoder.normalise(images))
        for block in encoder.blocks[:11]:
            x = block(x)
        side = x.unflatten(2, (3, 2)).unflatten(4, (3, 2)).mean((3, 5))       # [2, 112, 3, 3]
        expected = torch.cat([encoder(images), side], dim=1).flatten(2).transpose(1, 2)
        spec = EncoderSpec(layer="multi", image_size=96, tune=k)
        got = build_encoder(spec)(images)
        if k:
            assert got.shape[1] == 192 + 112
            got = top_blocks(spec)(got.flatten(2).transpose(1, 2), got.shape[2:])
        else:
            got = got.flatten(2).transpose(1, 2)
    assert spec.channels == 432 and expected.shape == (2, 9, 432)
    torch.testing.assert_close(got, expected)


def test_only_the_blocks_after_the_last_stride_can_be_tuned(tmp_path, capsys):
    assert tunable_blocks("efficientnet-lite0") == 4 and tunable_blocks("resnet18") == 0
    check_spec(EncoderSpec(tune=4))
    with pytest.raises(UserError, match="--tune-blocks 5: efficientnet-lite0 can tune at most 4 blocks"):
        check_spec(EncoderSpec(tune=5))
    assert main(["caption", "--data", str(tmp_path), "--tune-blocks", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--tune-blocks -1" in err


def test_the_frozen_encoder_keeps_its_run_key():
    """Runs stored before the options existed stay valid: each enters the key only when set
    to another value than its default (so those defaults must never change)."""
    assert "tune_blocks" not in HOMEWORK.run_key() and "encoder_lr" not in HOMEWORK.run_key()
    assert HOMEWORK.replace(tune_blocks=2).run_key()["tune_blocks"] == 2
    assert HOMEWORK.replace(tune_blocks=2, encoder_lr=3e-4).run_key()["encoder_lr"] == 3e-4


def test_the_encoder_blocks_learn_at_their_own_rate_in_both_stages():
    config = HOMEWORK.replace(tune_blocks=1, lr=1e-3, encoder_lr=1e-4, scst_lr=5e-5)
    decoder = build_decoder("attention", 10, 192, config, (2, 2), EncoderSpec(tune=1))
    groups = run.parameter_groups(decoder, config)
    assert sum(len(g["params"]) for g in groups) == len(list(decoder.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in decoder.top.parameters()}
    optimizer = torch.optim.Adam(groups, lr=config.lr)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-4]
    scst.start_stage(optimizer, config)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-5, 5e-6])


def test_the_cache_holds_the_activations_below_the_tuned_blocks(tuned_run, tiny_data):
    out, summary, _ = tuned_run
    folder = summary["timing"]["features"]["blocks"]["folder"]
    cached = np.load(f"{folder}/features.npy", mmap_mode="r")
    assert cached.shape == (len(load_dataset(tiny_data).images), 4, 192)     # 64x64 -> 2x2 grid
    assert summary["encoder"]["tune_blocks"] == 1 and summary["encoder"]["channels"] == 320


def test_model_pt_carries_the_trained_blocks(tuned_run):
    _, _, model = tuned_run
    ckpt = io.load_checkpoint(model)
    assert ckpt["encoder"]["tune"] == 1 and ckpt["feature_dim"] == 192
    trained = {k[len("top."):]: v for k, v in ckpt["decoder"].items() if k.startswith("top.")}
    pretrained = top_blocks(EncoderSpec(image_size=64, tune=1)).state_dict()
    assert trained.keys() == pretrained.keys()
    moved = [k for k in trained if not torch.equal(trained[k], pretrained[k])]
    assert len(moved) == len(trained)  # every weight and bias of the block was trained
    decoder, _ = load_decoder(model, "cpu")
    assert decoder.top is not None and decoder.feature_dim == 320


def test_predict_and_serve_caption_with_the_trained_blocks(tuned_run, tiny_data, capsys):
    """Each test image on its own, through the cached part of the encoder and the model's
    trained blocks, gets the caption the run reported (beam 5 and the stored reranker)."""
    _, summary, model = tuned_run
    assert_predict_and_serve_give_the_runs_captions(model, summary, tiny_data, capsys)


def test_multi_level_regions_caption_the_same_through_predict_and_serve(tiny_data, tmp_path, capsys):
    """A tuned run on two depths per region (--feature-layer multi): the cache holds the
    trunk's activations and the stride-16 channels, and an image encoded on its own gets the
    run's caption."""
    config = TUNED.replace(feature_layer="multi")
    summary = experiment.run(config, tiny_data, tmp_path, device="cpu", quiet=True)
    folder = summary["timing"]["features"]["multi"]["folder"]
    assert np.load(f"{folder}/features.npy", mmap_mode="r").shape[2] == 192 + 112
    assert summary["encoder"]["channels"] == 432
    model = run.run_dir(tmp_path, "multi", "attention", 42) / "model.pt"
    assert_predict_and_serve_give_the_runs_captions(model, summary, tiny_data, capsys)
