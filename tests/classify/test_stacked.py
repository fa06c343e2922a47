"""The stacked sweep: one model stack for all learning rates gives each run's numbers up to
float rounding, keeps the run store's per-lr checkpoints, resumes, and drops a diverged
member without touching the others."""

import pytest
import torch

from convattn.classify import run as run_module
from convattn.classify import stacked_run, sweep
from convattn.classify.loop import MEMORY_FORMAT, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.classify.presets import ClassifyConfig
from convattn.classify.stacked import StackedCNN
from convattn.common.io import load_checkpoint
from tiny_fashion import write_tiny_fashion

TINY = ClassifyConfig(preset="test", lrs=(1e6, 0.01, 0.1), epochs=3, eval_batch_size=16,
                      jobs=1, sweep="stacked")
RTOL = 1e-4   # of each tensor's largest magnitude
# How far apart "the same numbers up to rounding" may be after several epochs is not one
# number: a near-chaotic step (lr 0.1's loss falls 2.17 -> 0.75 in one epoch of the tiny set)
# amplifies the last bit by orders of magnitude, by an amount that depends on the CPU's
# kernels (AVX2 vs AVX-512). So the sweep test measures it in the same run: the separate
# sweep again with the other valid memory layout (NCHW against channels-last), a reordering
# of the same float32 sums. Measured on an AMD EPYC (AVX-512): stacked vs separate 1.5e-3 for
# lr 0.01 after 3 epochs, and the layout change alone moves the separate run by the same
# 1.5e-3; on an Intel CPU both stayed under 1e-4. The stack may move DRIFT_FACTOR times the
# layout's drift (at least RTOL).
DRIFT_FACTOR = 4


def max_relative_difference(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in b)


def separate_run(lr: float, x, y) -> tuple[float, dict]:
    torch.manual_seed(42)
    model = FashionCNN(0.2).to(memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    loss_sum, _ = train_one_epoch(model, optimizer, x, y, 8)
    return loss_sum, model.state_dict()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_fashion(tmp_path_factory.mktemp("fashion"), n_train=240, n_test=60)


@pytest.mark.parametrize("lrs, steps", [((0.01, 0.1), 100), ((0.001, 0.01, 0.1), 25)])
def test_stack_matches_separate_runs(data_dir, lrs, steps):
    # Measured: lr 0.01 and 0.1 within 4e-7 after 100 steps, lr 0.001 2e-5 after 25. The
    # separate loop's own layout choice (NCHW against channels-last) moves them as much.
    data = sweep.load_data(TINY, data_dir)
    x, y = data.train_x.repeat(4, 1, 1, 1)[:steps * 8], data.train_y.repeat(4)[:steps * 8]
    runs = [separate_run(lr, x, y) for lr in lrs]
    torch.manual_seed(42)
    stack = StackedCNN([FashionCNN(0.2).state_dict()] * len(lrs), list(lrs), 0.2)
    loss_sum = torch.zeros(len(lrs))
    for i in range(steps):
        loss_sum += stack.train_step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8])
    for k, (run_loss, run_state) in enumerate(runs):
        assert loss_sum[k].item() == pytest.approx(run_loss, rel=RTOL)
        assert max_relative_difference(stack.member_state(k), run_state) < RTOL


def sweep_run(config, out, data_dir, **kwargs):
    return sweep.run(config, out, data_dir=data_dir, device="cpu", quiet=True, **kwargs)


@pytest.fixture(scope="module")
def stacked(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stacked")
    return out, sweep_run(TINY, out, data_dir)


def test_stacked_sweep_gives_the_separate_runs_numbers(stacked, data_dir, tmp_path, monkeypatch):
    out, summary = stacked
    separate = sweep_run(TINY.replace(sweep="processes"), tmp_path / "separate", data_dir)
    # the reference drift: the separate runs in the other layout (jobs=1 runs in this process)
    monkeypatch.setattr(run_module, "MEMORY_FORMAT", torch.contiguous_format)
    relaid = sweep_run(TINY.replace(sweep="processes"), tmp_path / "nchw", data_dir)
    assert summary["best_lr"] == separate["best_lr"] == 0.1
    for a, b in zip(summary["runs"], separate["runs"]):
        assert (a["lr"], a["status"], a["epochs_done"]) == (b["lr"], b["status"], b["epochs_done"])
        assert a["val_acc"] == b["val_acc"] and a["test_acc"] == b["test_acc"]
        assert a["checkpoint"] == b["checkpoint"]
        if a["status"] == "diverged":
            assert a["train_loss"] == b["train_loss"] == [None]
        else:
            state, alone, other_layout = (load_checkpoint(d / a["checkpoint"])["model"]
                                          for d in (out, tmp_path / "separate", tmp_path / "nchw"))
            tol = max(RTOL, DRIFT_FACTOR * max_relative_difference(other_layout, alone))
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol)
            assert max_relative_difference(state, alone) < tol
            state, alone = (load_checkpoint(d / a["checkpoint"]) for d in (out, tmp_path / "separate"))
            assert state["key"] == alone["key"] and state["rng"]["torch"].equal(
                alone["rng"]["torch"])


def test_diverged_member_is_stored_and_dropped(stacked):
    out, summary = stacked
    diverged = summary["runs"][0]
    assert diverged["lr"] == 1e6 and diverged["status"] == "diverged"
    assert diverged["epochs_done"] == 1 and diverged["train_loss"] == [None]
    state = load_checkpoint(out / diverged["checkpoint"])
    assert state["status"] == "diverged" and state["history"]["steps"] == [25]
    assert "NaN" not in (out / "summary.json").read_text()


def test_checkpoints_are_run_store_entries(stacked):
    out, summary = stacked
    state = load_checkpoint(out / "runs" / "lr-0.1.pt")
    assert state["status"] == "finished" and state["epoch"] == 3
    assert set(state["model"]) == set(FashionCNN().state_dict())
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert state["result"]["test_acc"] == summary["runs"][2]["test_acc"]
    assert set(summary["figures"]) >= {"conv1_kernels", "conv2_kernels"}


def test_resume_after_crash_matches_uninterrupted(stacked, data_dir, tmp_path, monkeypatch):
    _, ref = stacked
    real, calls = stacked_run.train_stacked_epoch, []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stacked_run, "train_stacked_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        sweep_run(TINY, tmp_path, data_dir)
    assert load_checkpoint(tmp_path / "runs" / "lr-0.1.pt")["epoch"] == 1
    monkeypatch.undo()
    resumed = sweep_run(TINY, tmp_path, data_dir)
    keys = ("lr", "status", "epochs_done", "train_loss", "val_acc", "test_acc")
    assert [{k: r[k] for k in keys} for r in resumed["runs"]] == \
        [{k: r[k] for k in keys} for r in ref["runs"]]


def test_recipe_the_stack_lacks_trains_runs_alone(data_dir, tmp_path, capsys):
    config = TINY.replace(lrs=(0.05,), epochs=1, momentum=0.9)
    summary = sweep_run(config, tmp_path, data_dir)
    assert "cannot be stacked" in capsys.readouterr().err
    assert summary["runs"][0]["status"] == "ok"


def test_stacks_in_parallel_processes_give_the_one_stacks_numbers(stacked, data_dir, tmp_path):
    """--jobs 2: the lrs split into a stack of two and a stack of one, trained in two
    processes; each member still follows its own run, so the records agree with one stack."""
    assert sweep.stack_groups(TINY.replace(jobs=2), torch.device("cpu")) == [(1e6, 0.01), (0.1,)]
    assert sweep.stack_groups(TINY.replace(jobs=5), torch.device("cpu")) == [(1e6,), (0.01,), (0.1,)]
    assert sweep.stack_groups(TINY.replace(jobs=0), torch.device("meta")) == [TINY.lrs]
    out, one = stacked
    two = sweep_run(TINY.replace(jobs=2), tmp_path, data_dir)
    assert two["best_lr"] == one["best_lr"]
    for a, b in zip(two["runs"], one["runs"]):
        assert (a["lr"], a["status"], a["epochs_done"], a["checkpoint"]) == \
            (b["lr"], b["status"], b["epochs_done"], b["checkpoint"])
        if a["status"] != "diverged":
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=RTOL)
            state, alone = (load_checkpoint(d / a["checkpoint"]) for d in (tmp_path, out))
            assert max_relative_difference(state["model"], alone["model"]) < RTOL
