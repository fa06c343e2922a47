"""Data-parallel caption training (common/distributed.py): two CPU processes (gloo) train
what one process trains at the same global batch, share the feature extraction, and a
data-parallel run whose worker is killed resumes to exactly the uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from convattn.caption import experiment
from convattn.caption.cli import worker_argv
from convattn.caption.encoders import EncoderSpec
from convattn.caption.features import cache_folder, cache_key
from convattn.caption.presets import PRESETS
from convattn.caption.run import run_dir
from convattn.cli import build_parser, main
from convattn.common import distributed
from convattn.common.config import from_args
from convattn.data.captions import load_dataset
from tiny_captions import make_tiny_captions


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_cover_every_item_once_in_order(size, monkeypatch):
    for n in range(0, 11):
        parts = []
        for rank in range(size):
            monkeypatch.setattr(distributed, "_world", distributed.World(rank, size, rank, torch.device("cpu"), None))
            parts.append(list(distributed.rows(n)))
            assert distributed.shard(torch.arange(n)).tolist() == parts[-1]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_single_process_initialises_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init(torch.device("cpu")) == torch.device("cpu")
    assert distributed.world() is None and distributed.size() == 1 and distributed.is_main()
    batch = torch.arange(5)
    assert distributed.shard(batch) is batch and distributed.broadcast("x") == "x"


def test_worker_command_line_gives_the_same_config():
    argv = ["caption", "--data", "d", "--out", "o", "--preset", "smoke", "--lr", "0.00025", "--models",
            "attention", "--no-meteor", "--seed", "-3", "--nproc", "2", "--quiet"]
    args = build_parser(argv).parse_args(argv)
    again = build_parser(worker_argv(args)).parse_args(worker_argv(args))
    assert from_args(again, PRESETS) == from_args(args, PRESETS)
    assert (again.data, again.out, again.quiet, again.nproc) == ("d", "o", True, 1)


def test_nproc_below_one_is_one_line(tiny_data, tmp_path, capsys):
    assert main(["caption", "--data", str(tiny_data), "--out", str(tmp_path), "--nproc", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("convattn: error: --nproc 0: must be at least 1 "
                                               "(1 = this process alone)")


def _command(data, out, *flags):
    return [sys.executable, "-m", "convattn", "caption", "--data", str(data), "--out", str(out),
            "--preset", "smoke", "--device", "cpu", "--quiet", *flags, "--nproc", "2"]


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`done`, or a failure that shows the end of what the command printed."""
    assert done.returncode == 0, f"exit code {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _summary(out) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


@pytest.mark.slow
def test_two_processes_train_what_one_does_at_the_same_global_batch(tmp_path, private_cache):
    # 29 training images: 145 pairs, so the last global batch of 8 holds one pair and rank 1
    # joins its all-reduce with weight 0; dropout off, so both runs draw no random masks
    data = make_tiny_captions(tmp_path / "tiny", n_train=29)
    # with the attention penalty on, both parts of the loss are weighted across ranks
    flags = ["--epochs", "2", "--batch-size", "8", "--dropout", "0", "--attention-reg", "0.1",
             "--models", "attention"]
    one = experiment.run(PRESETS["smoke"].replace(epochs=2, batch_size=8, dropout=0.0, attention_reg=0.1,
                                                  models=("attention",)),
                         data, tmp_path / "one", device="cpu", quiet=True)
    env = {**os.environ, "CONVATTN_CACHE": str(tmp_path / "cache")}  # extracted afresh, by both ranks
    _ok(subprocess.run(_command(data, tmp_path / "two", *flags), capture_output=True, text=True, env=env))
    two = _summary(tmp_path / "two")
    # tolerance basis: two ranks sum each batch's loss and gradients in halves (another order
    # of the same float32 sums) for 2 epochs of a tiny set: rounding of ~1e-7 per step that
    # two epochs of a smooth, non-chaotic loss do not amplify past 1e-4 (it passes on an Intel
    # CPU and on an AMD EPYC with AVX-512)
    np.testing.assert_allclose(two["models"]["attention"]["train_loss"], one["models"]["attention"]["train_loss"],
                               rtol=1e-4)
    state = torch.load(run_dir(tmp_path / "two", "blocks", "attention", 42) / "checkpoint.pt", weights_only=True)
    assert state["key"]["world_size"] == 2
    # the sharded extraction wrote the cache one process writes, byte for byte
    key = cache_key(load_dataset(data), EncoderSpec("efficientnet-lite0", "blocks", 64))
    cached = [root / "features" / cache_folder(key).name / "features.npy" for root in (private_cache, tmp_path / "cache")]
    assert cached[0].read_bytes() == cached[1].read_bytes()


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun's launcher started (its children)."""
    out = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                env = dict(v.split("=", 1) for v in (proc / "environ").read_text().split("\0") if "=" in v)
                out[int(env["RANK"])] = int(proc.name)
        except (OSError, KeyError, ValueError):
            continue
    return out


@pytest.mark.slow
def test_killed_data_parallel_run_resumes_exactly(tiny_data, tmp_path):
    flags = ["--epochs", "3", "--batch-size", "8", "--models", "attention"]  # dropout on: per-rank masks
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the same run through torchrun itself and through --nproc
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "convattn", *_command(tiny_data, straight, *flags)[3:-2]]  # no --nproc under torchrun
    _ok(subprocess.run(torchrun, capture_output=True, text=True))

    checkpoint = run_dir(killed, "blocks", "attention", 42) / "checkpoint.pt"
    launcher = subprocess.Popen(_command(tiny_data, killed, *flags), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(_workers(launcher.pid)[1], signal.SIGKILL)  # rank 1 dies; the launcher stops rank 0
    assert launcher.wait(timeout=120) == 2
    assert "--nproc 2: process of rank 1 failed (exit code -9)" in launcher.stderr.read()
    state = torch.load(checkpoint, weights_only=True)
    assert state["status"] == "running" and 1 <= state["epoch"] < 3
    assert not (killed / "summary.json").exists()

    resumed = _ok(subprocess.run(_command(tiny_data, killed, *flags), capture_output=True, text=True))
    assert f"attention seed 42: resuming {checkpoint} after epoch {state['epoch']}" in resumed.stderr
    a, b = _summary(straight), _summary(killed)
    for key in ("train_loss", "val_bleu4", "test_bleu4", "test_bleu4_best", "best_epoch", "cider", "rouge_l"):
        assert a["models"]["attention"][key] == b["models"]["attention"][key], key
    assert a["captions"] == b["captions"]
    weights = [torch.load(run_dir(out, "blocks", "attention", 42) / "model.pt", weights_only=True)["decoder"]
               for out in (straight, killed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
