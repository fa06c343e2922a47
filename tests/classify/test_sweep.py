"""The sweep: summary.json schema, the run store (reuse, resume, reuse policy, fresh,
changed settings), resume after a crash or kill -9, divergence, parallel runs, the CLI."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from convattn.classify import run as run_module
from convattn.classify import sweep
from convattn.classify.presets import SMOKE, ClassifyConfig
from convattn.cli import main
from convattn.common.io import load_checkpoint, read_json
from convattn.common.runs import FORMAT
from tiny_fashion import write_tiny_fashion

# one process, so that monkeypatched functions are the ones that run
TINY = ClassifyConfig(preset="test", lrs=(0.01, 0.1), epochs=3, eval_batch_size=16, jobs=1,
                      sweep="processes")


def sweep_run(config, out, data_dir, **kwargs):
    return sweep.run(config, out, data_dir=data_dir, device="cpu", quiet=True, **kwargs)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_fashion(tmp_path_factory.mktemp("fashion"), n_train=240, n_test=60)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run of TINY: what every resumed run must equal exactly."""
    out = tmp_path_factory.mktemp("reference")
    return out, sweep_run(TINY, out, data_dir)


def interrupt_in(monkeypatch, lr: float, epoch: int) -> None:
    """Make the run of `lr` raise KeyboardInterrupt at the end of epoch `epoch`'s training
    pass, before that epoch is stored (its weights and random state have moved on). The
    run is identified by its optimizer's (peak) learning rate; epochs count from 1 in a
    run that starts from scratch."""
    real = run_module.train_one_epoch
    epochs = Counter()

    def train_one_epoch(model, optimizer, *args, **kwargs):
        result = real(model, optimizer, *args, **kwargs)
        group = optimizer.param_groups[0]
        this_lr = group.get("initial_lr", group["lr"])
        epochs[this_lr] += 1
        if (this_lr, epochs[this_lr]) == (lr, epoch):
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(run_module, "train_one_epoch", train_one_epoch)


def count_epochs(monkeypatch) -> list:
    """Record every training pass (one entry per call)."""
    calls = []
    real = run_module.train_one_epoch
    monkeypatch.setattr(run_module, "train_one_epoch",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _same_runs(a: dict, b: dict, lrs=None):
    keys = ("lr", "status", "epochs_done", "train_loss", "val_acc", "test_acc")
    pick = lambda s: [{k: r[k] for k in keys} for r in s["runs"]  # noqa: E731
                      if lrs is None or r["lr"] in lrs]
    assert pick(a) == pick(b)


def _same_weights(dir_a, dir_b, lr):
    a = load_checkpoint(dir_a / "runs" / f"lr-{lr:g}.pt")["model"]
    b = load_checkpoint(dir_b / "runs" / f"lr-{lr:g}.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_summary_schema(reference):
    out, summary = reference
    assert summary == read_json(out / "summary.json")
    assert set(summary) == {"command", "preset", "complete", "params", "best_lr", "best",
                            "selection", "train_loss_is", "runs", "figures", "config", "data",
                            "device", "wall_seconds_this_call", "timing", "environment"}
    assert summary["command"] == "classify" and summary["preset"] == "test"
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
    assert summary["timing"]["runs_seconds"] == pytest.approx(
        sum(r["seconds"] for r in summary["runs"]), abs=0.01)
    assert set(summary["figures"]) == {"sweep_curves", "best_train_loss", "best_val_acc",
                                       "conv1_kernels", "conv2_kernels",
                                       "conv2_kernels_channel0"}
    for path in summary["figures"].values():
        assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_a_run_store_entry(reference, data_dir):
    out, summary = reference
    state = load_checkpoint(out / "runs" / "lr-0.1.pt")
    assert state["format"] == FORMAT and state["status"] == "finished"
    data = sweep.load_data(TINY, data_dir)
    assert state["key"] == run_module.run_key(TINY, 0.1, data)
    assert "lrs" not in state["key"] and "threads" not in state["key"]
    assert state["key"]["lr"] == 0.1 and state["key"]["data"] == data.fingerprint
    assert state["scheduler"] is None            # constant lr: no scheduler
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert "torch" in state["rng"]
    assert state["result"]["test_acc"] == summary["runs"][1]["test_acc"]
    assert run_module.make_record(state, out) == summary["runs"][1]


def test_tiny_data_is_learnt(reference):
    # the pattern is easy: lr 0.1 must beat chance (0.1) by far within 3 epochs
    _, summary = reference
    run = next(r for r in summary["runs"] if r["lr"] == 0.1)
    assert run["val_acc"][-1] > 0.5


def test_resume_after_crash_matches_uninterrupted(reference, data_dir, tmp_path, monkeypatch):
    ref_dir, ref = reference
    interrupt_in(monkeypatch, lr=0.1, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        sweep_run(TINY, tmp_path, data_dir)
    partial = read_json(tmp_path / "summary.json")
    assert partial["complete"] is False
    assert load_checkpoint(tmp_path / "runs" / "lr-0.1.pt")["epoch"] == 1

    monkeypatch.undo()
    resumed = sweep_run(TINY, tmp_path, data_dir)
    _same_runs(resumed, ref)
    _same_weights(tmp_path, ref_dir, 0.1)


def test_resume_restores_scheduler_and_momentum(data_dir, tmp_path, monkeypatch):
    """One-cycle, Nesterov momentum and label smoothing: the scheduler's step and the
    momentum buffers must come back for the numbers to match."""
    config = TINY.replace(lrs=(0.05,), momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="onecycle", warmup=0.2, label_smoothing=0.1)
    ref = sweep_run(config, tmp_path / "ref", data_dir)
    assert load_checkpoint(tmp_path / "ref" / "runs" / "lr-0.05.pt")["scheduler"]["last_epoch"] \
        == 3 * 25   # 200 images, batch 8: 25 steps per epoch
    interrupt_in(monkeypatch, lr=0.05, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        sweep_run(config, tmp_path / "crashed", data_dir)
    monkeypatch.undo()
    resumed = sweep_run(config, tmp_path / "crashed", data_dir)
    _same_runs(resumed, ref)
    _same_weights(tmp_path / "crashed", tmp_path / "ref", 0.05)


def test_reuse_policy_restarts_an_unfinished_run(reference, data_dir, tmp_path, monkeypatch,
                                                 capsys):
    _, ref = reference
    one = TINY.replace(lrs=(0.1,))       # the same run key as TINY's lr 0.1
    interrupt_in(monkeypatch, lr=0.1, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        sweep_run(one, tmp_path, data_dir)
    monkeypatch.undo()
    capsys.readouterr()
    calls = count_epochs(monkeypatch)
    again = sweep_run(one, tmp_path, data_dir, policy="reuse")
    assert "lr 0.1: " in (err := capsys.readouterr().err)
    assert "is unfinished (epoch 1); training again" in err
    assert len(calls) == 3                # from epoch 1, not from the stored epoch
    _same_runs(again, ref, lrs=[0.1])


def test_finished_runs_are_reused_not_retrained(reference, data_dir, monkeypatch, capsys):
    ref_dir, ref = reference
    calls = count_epochs(monkeypatch)
    for policy in ("resume", "reuse"):
        again = sweep_run(TINY, ref_dir, data_dir, policy=policy)
        _same_runs(again, ref)
    # speed-only settings are not part of a run's key
    sweep_run(TINY.replace(eval_batch_size=7, threads=2), ref_dir, data_dir)
    assert calls == []
    assert "lr 0.01: reusing the finished run" in capsys.readouterr().err


def test_fresh_policy_trains_again(data_dir, tmp_path, monkeypatch):
    one = TINY.replace(lrs=(0.1,), epochs=1)
    first = sweep_run(one, tmp_path, data_dir)
    calls = count_epochs(monkeypatch)
    again = sweep_run(one, tmp_path, data_dir, policy="fresh")
    assert len(calls) == 1
    _same_runs(again, first)


def test_changed_config_is_retrained_and_the_log_names_the_change(data_dir, tmp_path,
                                                                   monkeypatch, capsys):
    one = TINY.replace(lrs=(0.1,), epochs=1)
    sweep_run(one, tmp_path, data_dir)
    capsys.readouterr()
    calls = count_epochs(monkeypatch)
    summary = sweep_run(one.replace(dropout=0.3), tmp_path, data_dir)
    err = capsys.readouterr().err
    assert "lr 0.1: " in err and "was trained differently (dropout 0.2 -> 0.3)" in err
    assert calls == [1] and summary["config"]["dropout"] == 0.3
    assert load_checkpoint(tmp_path / "runs" / "lr-0.1.pt")["key"]["dropout"] == 0.3


def test_divergence_is_marked_and_the_sweep_goes_on(data_dir, tmp_path):
    config = TINY.replace(lrs=(1e6, 0.1), epochs=2)
    summary = sweep_run(config, tmp_path, data_dir)
    diverged, ok = summary["runs"]
    assert diverged["status"] == "diverged" and diverged["test_acc"] is None
    assert diverged["train_loss"][-1] is None        # NaN/inf is written as null
    assert ok["status"] == "ok" and summary["best_lr"] == 0.1
    assert summary["complete"] is True
    # valid JSON: no NaN literals
    assert "NaN" not in (tmp_path / "summary.json").read_text()


@pytest.mark.slow
def test_parallel_runs_give_the_same_numbers(reference, data_dir, tmp_path):
    ref_dir, ref = reference
    parallel = sweep_run(TINY.replace(jobs=2), tmp_path, data_dir)
    _same_runs(parallel, ref)
    _same_weights(tmp_path, ref_dir, 0.01)
    _same_weights(tmp_path, ref_dir, 0.1)


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "convattn", "classify", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tmp_path):
    # 2,000 training images: 250 steps per epoch, so an epoch lasts far longer than a poll
    data = write_tiny_fashion(tmp_path / "data", n_train=2400, n_test=100)
    args = ["--data", str(data), "--lr", "0.05", "--epochs", "3", "--quiet"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    killed = _cli(*args, "--out", str(tmp_path / "killed"))
    checkpoint = tmp_path / "killed" / "runs" / "lr-0.05.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        if checkpoint.exists():          # epoch 1 is stored: kill during epoch 2
            os.kill(killed.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= done < 3

    resumed = _cli(*args, "--out", str(tmp_path / "killed"))    # resume is the default
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"lr 0.05: resuming {checkpoint} after epoch {done}" in err
    assert ref.wait(timeout=300) == 0
    _same_runs(read_json(tmp_path / "killed" / "summary.json"),
               read_json(tmp_path / "ref" / "summary.json"))
    _same_weights(tmp_path / "killed", tmp_path / "ref", 0.05)


@pytest.mark.parametrize("args, words", [
    (["--data", "/nonexistent/fashion"], "--data /nonexistent/fashion: no such folder"),
    (["--lr", "-1"], "--lr -1: learning rates must be > 0"),
    (["--lr", "0.1", "0.1"], "--lr 0.1 0.1: learning rates must be distinct"),
    (["--dropout", "1.5"], "--dropout 1.5: must be in [0, 1)"),
    (["--nesterov"], "--nesterov: needs --optimizer sgd and --momentum > 0"),
])
def test_cli_errors_are_one_line_exit_2(args, words, tmp_path, capsys):
    code = main(["classify", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("convattn: error: ") and words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_resume_and_fresh_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "--resume", "--fresh", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--fresh: not allowed with argument --resume" in capsys.readouterr().err


def test_cli_bad_file_names_it(tmp_path, capsys):
    data = write_tiny_fashion(tmp_path / "data")
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    code = main(["classify", "--data", str(data), "--out", str(tmp_path / "out"),
                 "--preset", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "t10k-images-idx3-ubyte.gz" in err and err.count("\n") == 1


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    data = write_tiny_fashion(tmp_path / "data")
    proc = _cli("--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "out"), "--pdf")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = read_json(tmp_path / "out" / "summary.json")
    assert summary["preset"] == "smoke" and len(summary["runs"]) == len(SMOKE.lrs)
    assert f"best lr {summary['best_lr']:g}" in out
    assert (tmp_path / "out" / "figures" / "conv2-kernels.pdf").exists()
