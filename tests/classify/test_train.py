"""Training: summary.json schema, reuse, resume after a crash or kill -9, divergence, CLI."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from convattn.classify import train
from convattn.classify.presets import SMOKE, ClassifyConfig
from convattn.cli import main
from convattn.common.errors import UserError
from convattn.common.io import load_checkpoint, read_json
from tiny_fashion import write_tiny_fashion

# one process, so that monkeypatched functions are the ones that run
TINY = ClassifyConfig(preset="test", lrs=(0.01, 0.1), epochs=3, eval_batch_size=16, jobs=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_fashion(tmp_path_factory.mktemp("fashion"), n_train=240, n_test=60)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run of TINY: what every resumed run must equal exactly."""
    out = tmp_path_factory.mktemp("reference")
    return out, train.run(TINY, out, data_dir=data_dir, device="cpu", quiet=True)


def test_summary_schema(reference):
    out, summary = reference
    assert summary == read_json(out / "summary.json")
    assert summary["params"] == 769_930
    assert summary["complete"] is True
    assert [r["lr"] for r in summary["runs"]] == [0.01, 0.1]
    for r in summary["runs"]:
        assert r["status"] == "ok" and r["epochs_done"] == 3
        assert len(r["train_loss"]) == len(r["val_acc"]) == len(r["train_loss_running_mean"]) == 3
        assert all(isinstance(v, float) for v in r["train_loss"] + r["val_acc"])
        assert 0 <= r["test_acc"] <= 1 and r["seconds"] > 0
        # the running mean of equal-length epochs is the mean of the epoch means so far
        assert r["train_loss_running_mean"][-1] == pytest.approx(sum(r["train_loss"]) / 3)
        assert load_checkpoint(out / r["checkpoint"])["epoch"] == 3
    best = max(summary["runs"], key=lambda r: r["val_acc"][-1])
    assert summary["best_lr"] == best["lr"]
    assert summary["best"]["val_acc"] == best["val_acc"][-1]
    assert summary["best"]["test_acc"] == best["test_acc"]
    assert summary["config"]["lrs"] == [0.01, 0.1] and summary["config"]["batch_size"] == 8
    assert summary["data"]["train"] == 200 and summary["environment"]["torch"]
    assert set(summary["figures"]) == {"sweep_curves", "best_train_loss", "best_val_acc",
                                       "conv1_kernels", "conv2_kernels",
                                       "conv2_kernels_channel0"}
    for path in summary["figures"].values():
        assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_data_is_learnt(reference):
    # the pattern is easy: lr 0.1 must beat chance (0.1) by far within 3 epochs
    _, summary = reference
    run = next(r for r in summary["runs"] if r["lr"] == 0.1)
    assert run["val_acc"][-1] > 0.5


def _same_runs(a: dict, b: dict):
    keys = ("lr", "status", "epochs_done", "train_loss", "val_acc", "test_acc")
    assert [{k: r[k] for k in keys} for r in a["runs"]] == [{k: r[k] for k in keys} for r in b["runs"]]


def _same_weights(dir_a, dir_b, lr):
    a = load_checkpoint(dir_a / "runs" / f"lr-{lr:g}.pt")["model"]
    b = load_checkpoint(dir_b / "runs" / f"lr-{lr:g}.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_crash_matches_uninterrupted(reference, data_dir, tmp_path, monkeypatch):
    ref_dir, ref = reference
    real_evaluate = train.evaluate
    calls = {"n": 0}

    def crash_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:   # lr 0.1's second dev evaluation: its epoch 2 is not saved
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.run(TINY, tmp_path, data_dir=data_dir, device="cpu", quiet=True)
    partial = read_json(tmp_path / "summary.json")
    assert partial["complete"] is False
    assert load_checkpoint(tmp_path / "runs" / "lr-0.1.pt")["epoch"] == 1

    monkeypatch.setattr(train, "evaluate", real_evaluate)
    resumed = train.run(TINY, tmp_path, data_dir=data_dir, device="cpu", quiet=True)
    _same_runs(resumed, ref)
    _same_weights(tmp_path, ref_dir, 0.1)


def test_parallel_runs_give_the_same_numbers(reference, data_dir, tmp_path):
    ref_dir, ref = reference
    parallel = train.run(TINY.with_(jobs=2), tmp_path, data_dir=data_dir, device="cpu",
                         quiet=True)
    _same_runs(parallel, ref)
    _same_weights(tmp_path, ref_dir, 0.01)
    _same_weights(tmp_path, ref_dir, 0.1)


def test_finished_runs_are_reused_not_retrained(reference, data_dir, monkeypatch):
    ref_dir, ref = reference

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(train, "train_one_epoch", no_training)
    again = train.run(TINY, ref_dir, data_dir=data_dir, device="cpu", quiet=True)
    _same_runs(again, ref)


def test_changed_config_recomputes_or_refuses(data_dir, tmp_path, monkeypatch):
    one = TINY.with_(lrs=(0.1,), epochs=1)
    train.run(one, tmp_path, data_dir=data_dir, device="cpu", quiet=True)
    with pytest.raises(UserError, match="dropout 0.2 -> 0.3"):
        train.run(one.with_(dropout=0.3), tmp_path, data_dir=data_dir, device="cpu",
                  quiet=True, strict=True)
    calls = []
    real = train.train_one_epoch
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = train.run(one.with_(dropout=0.3), tmp_path, data_dir=data_dir, device="cpu",
                        quiet=True)
    assert calls == [1] and summary["config"]["dropout"] == 0.3


def test_divergence_is_marked_and_the_sweep_goes_on(data_dir, tmp_path):
    config = TINY.with_(lrs=(1e6, 0.1), epochs=2)
    summary = train.run(config, tmp_path, data_dir=data_dir, device="cpu", quiet=True)
    diverged, ok = summary["runs"]
    assert diverged["status"] == "diverged" and diverged["test_acc"] is None
    assert diverged["train_loss"][-1] is None        # NaN/inf is written as null
    assert ok["status"] == "ok" and summary["best_lr"] == 0.1
    assert summary["complete"] is True
    # valid JSON: no NaN literals
    assert "NaN" not in (tmp_path / "summary.json").read_text()


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "convattn", "classify", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_kill_9_then_resume_matches_uninterrupted(tmp_path):
    # enough steps per epoch (250) that the run can be caught between two checkpoints
    data = write_tiny_fashion(tmp_path / "data", n_train=1800, n_test=100)
    args = ["--data", str(data), "--lr", "0.05", "--epochs", "3", "--quiet"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    killed = _cli(*args, "--out", str(tmp_path / "killed"))
    summary = tmp_path / "killed" / "summary.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        if summary.exists() and read_json(summary)["runs"][0]["epochs_done"] >= 1:
            os.kill(killed.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = load_checkpoint(tmp_path / "killed" / "runs" / "lr-0.05.pt")["epoch"]
    assert 1 <= done < 3

    # without --resume the CLI refuses to touch the folder
    refused = _cli(*args, "--out", str(tmp_path / "killed"))
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "--resume" in err

    resumed = _cli(*args, "--out", str(tmp_path / "killed"), "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in err and f"after epoch {done}/3" in err
    assert ref.wait(timeout=300) == 0
    _same_runs(read_json(summary), read_json(tmp_path / "ref" / "summary.json"))
    _same_weights(tmp_path / "killed", tmp_path / "ref", 0.05)


@pytest.mark.parametrize("args, words", [
    (["--data", "/nonexistent/fashion"], "--data /nonexistent/fashion: no such folder"),
    (["--lr", "-1"], "--lr: learning rates must be > 0"),
    (["--dropout", "1.5"], "--dropout: must be in [0, 1)"),
    (["--resume", "--fresh"], "contradict"),
])
def test_cli_errors_are_one_line_exit_2(args, words, tmp_path, capsys):
    code = main(["classify", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("convattn: error: ") and words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_bad_file_names_it(tmp_path, capsys):
    data = write_tiny_fashion(tmp_path / "data")
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    code = main(["classify", "--data", str(data), "--out", str(tmp_path / "out"),
                 "--preset", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "t10k-images-idx3-ubyte.gz" in err and err.count("\n") == 1


def test_smoke_preset_end_to_end(tmp_path):
    data = write_tiny_fashion(tmp_path / "data")
    proc = _cli("--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "out"), "--pdf")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = read_json(tmp_path / "out" / "summary.json")
    assert summary["preset"] == "smoke" and len(summary["runs"]) == len(SMOKE.lrs)
    assert f"best lr {summary['best_lr']:g}" in out
    assert (tmp_path / "out" / "figures" / "conv2-kernels.pdf").exists()
