"""A caption run killed with SIGKILL after an epoch resumes to exactly the numbers, captions
and decoder weights of an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from convattn.caption.run import run_dir

pytestmark = pytest.mark.slow


def _command(tiny_data, out):
    return [sys.executable, "-m", "convattn", "caption", "--data", str(tiny_data), "--out", str(out),
            "--preset", "smoke", "--epochs", "4", "--batch-size", "2", "--models", "attention",
            "--device", "cpu", "--quiet"]


def test_kill_then_resume_matches_an_uninterrupted_run(tiny_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(tiny_data, straight), check=True, capture_output=True)

    checkpoint = run_dir(killed, "blocks", "attention", 42) / "checkpoint.pt"
    proc = subprocess.Popen(_command(tiny_data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    state = torch.load(checkpoint, weights_only=True)
    assert state["status"] == "running" and 1 <= state["epoch"] <= 4
    assert not (killed / "summary.json").exists()

    resumed = subprocess.run(_command(tiny_data, killed), check=True, capture_output=True, text=True)
    assert f"attention seed 42: resuming {checkpoint} after epoch {state['epoch']}" in resumed.stderr

    a, b = (json.loads((out / "summary.json").read_text()) for out in (straight, killed))
    for key in ("train_loss", "val_bleu4", "test_bleu4", "test_bleu4_best", "best_epoch", "corpus_bleu",
                "cider", "rouge_l"):
        assert a["models"]["attention"][key] == b["models"]["attention"][key], key
    assert a["captions"] == b["captions"]
    weights = [torch.load(run_dir(out, "blocks", "attention", 42) / "model.pt", weights_only=True)["decoder"]
               for out in (straight, killed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
