"""The training loop's parts: the loss, the one-cycle schedule, one epoch, evaluation."""

import math

import pytest
import torch

from convattn.classify.loop import (augment, build_optimizer, build_scheduler, evaluate,
                                    onecycle, train_one_epoch, training_loss)
from convattn.classify.model import FashionCNN
from convattn.classify.presets import FAST, HOMEWORK


def test_loss_without_smoothing_is_nll():
    log_probs = torch.log_softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), 1)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    assert torch.equal(training_loss(log_probs, y), torch.nn.functional.nll_loss(log_probs, y))


def test_smoothed_loss_of_log_probabilities_is_the_textbook_formula():
    log_probs = torch.log_softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(1)), 1)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    eps = 0.1
    target = log_probs.gather(1, y[:, None]).squeeze(1)
    expected = -((1 - eps) * target + eps * log_probs.mean(1)).mean()
    assert training_loss(log_probs, y, eps).item() == pytest.approx(expected.item(), rel=1e-6)


def test_onecycle_warms_up_linearly_then_decays_to_zero():
    factor = onecycle(total_steps=100, warmup=0.2)
    assert [factor(s) for s in (0, 9, 19)] == pytest.approx([1 / 20, 10 / 20, 1.0])
    assert factor(20) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)
    assert factor(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 79 / 80)))


def test_scheduler_sets_the_lr_of_every_step():
    model = FashionCNN()
    optimizer = build_optimizer(model, FAST, 0.1)
    assert build_scheduler(optimizer, HOMEWORK, 100) is None
    scheduler = build_scheduler(optimizer, FAST, 100)
    seen = []   # the lr in force at each step's forward pass
    model.register_forward_pre_hook(lambda *_: seen.append(optimizer.param_groups[0]["lr"]))
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    train_one_epoch(model, optimizer, x, y, 8, scheduler=scheduler)
    factor = onecycle(100, FAST.warmup)
    assert seen == pytest.approx([0.1 * factor(s) for s in range(4)])
    assert scheduler.state_dict()["last_epoch"] == 4


def test_one_epoch_returns_the_summed_batch_losses_and_steps():
    torch.manual_seed(0)
    model = FashionCNN()
    optimizer = build_optimizer(model, HOMEWORK, 0.01)
    x, y = torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,))
    loss_sum, steps = train_one_epoch(model, optimizer, x, y, 8)
    assert steps == 3 and math.isfinite(loss_sum) and loss_sum > 0


def test_evaluate_is_accuracy_and_keeps_the_mode():
    model = FashionCNN().train()
    x = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        model.eval()
        y = model(x).argmax(1)
        model.train()
    y[:3] = (y[:3] + 1) % 10
    assert evaluate(model, x, y, batch_size=4) == pytest.approx(0.7)
    assert model.training


def test_augment_keeps_shape_and_draws_from_the_global_rng():
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(3)
    a = augment(x, "shift-flip")
    torch.manual_seed(3)
    assert a.shape == x.shape and torch.equal(a, augment(x, "shift-flip"))
    assert torch.equal(augment(x, "none"), x)
