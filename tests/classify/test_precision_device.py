"""--amp bf16, --cuda-graph and the device paths: bf16 autocast trains the same network close
to fp32 and is kept apart in the run store, fp32 runs keep their old run key, a CUDA graph
replays the eager steps (on a GPU; skipped elsewhere, as is bench/gpu_check.sh), and the
model stack takes a device."""

import pytest
import torch

from convattn.classify import stacked_run, sweep
from convattn.classify.loop import MEMORY_FORMAT, evaluate, graphable, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.classify.presets import FAST, HOMEWORK
from convattn.classify.run import run_key
from convattn.classify.stacked import StackedCNN
from convattn.common.errors import UserError
from tiny_fashion import write_tiny_fashion


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = write_tiny_fashion(tmp_path_factory.mktemp("fashion"), n_train=160, n_test=40)
    return sweep.load_data(HOMEWORK, folder)


def one_epoch(data, amp: str) -> tuple[float, dict, float]:
    torch.manual_seed(42)
    model = FashionCNN(0.2).to(memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, foreach=True)
    loss_sum, steps = train_one_epoch(model, optimizer, data.train_x, data.train_y, 8, amp=amp)
    acc = evaluate(model, data.dev_x, data.dev_y, 16, amp=amp)
    return loss_sum / steps, model.state_dict(), acc


def test_bf16_autocast_trains_close_to_fp32_with_fp32_weights(data):
    loss32, state32, _ = one_epoch(data, "off")
    loss16, state16, acc16 = one_epoch(data, "bf16")
    assert all(v.dtype == torch.float32 for v in state16.values())
    # bf16 keeps 8 bits of mantissa: the epoch's mean loss moves by well under 5 %
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert loss16 != loss32
    assert 0 <= acc16 <= 1


def test_fp32_run_key_is_unchanged_and_bf16_runs_are_kept_apart(data):
    key = run_key(HOMEWORK, 0.01, data)
    assert "amp" not in key     # stored fp32 runs from before --amp are still reused
    bf16 = run_key(HOMEWORK.replace(amp="bf16"), 0.01, data)
    assert bf16["amp"] == "bf16" and {k: v for k, v in bf16.items() if k != "amp"} == key


def test_amp_flag_is_checked():
    with pytest.raises(UserError, match="--amp fp8: expected one of off, bf16"):
        HOMEWORK.replace(amp="fp8")


def test_bf16_recipe_is_not_stacked():
    assert stacked_run.recipe_is_stackable(HOMEWORK)
    assert not stacked_run.recipe_is_stackable(HOMEWORK.replace(amp="bf16"))


def test_stack_lives_on_its_device_and_keeps_it():
    torch.manual_seed(0)
    state = FashionCNN(0.2).state_dict()
    stack = StackedCNN([state] * 2, [0.01, 0.1], 0.2, device="cpu")
    tensors = stack.conv + [t for pair in stack.linear for t in pair] + [stack.lr]
    assert all(t.device == torch.device("cpu") for t in tensors)
    assert stack.keep([1]).device == stack.device
    assert stack.draw_mask(8).shape == (8, 600)


def test_cuda_graph_applies_to_constant_fp32_recipes_and_is_ignored_on_cpu(data):
    assert graphable(HOMEWORK) and not graphable(HOMEWORK.replace(cuda_graph=False))
    assert not graphable(FAST)                                  # a schedule: eager steps
    assert not graphable(HOMEWORK.replace(amp="bf16"))
    assert run_key(HOMEWORK.replace(cuda_graph=False), 0.01, data) == run_key(HOMEWORK, 0.01, data)
    results = []
    for cuda_graph in (False, True):
        torch.manual_seed(42)
        model = FashionCNN(0.2).to(memory_format=MEMORY_FORMAT)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, foreach=True)
        results.append((train_one_epoch(model, optimizer, data.train_x, data.train_y, 8,
                                        cuda_graph=cuda_graph), model.state_dict()))
    (loss_a, state_a), (loss_b, state_b) = results
    assert loss_a == loss_b and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def _graphed_and_eager(train):
    """train(cuda_graph) -> (loss, state) for both settings, from the same seed."""
    out = []
    for cuda_graph in (False, True):
        torch.manual_seed(42)
        out.append(train(cuda_graph))
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_the_eager_steps(data):
    """The graph runs the eager step's kernels: same losses and weights after an epoch of 20
    steps (dropout on; 3 eager warm-up steps, a capture, 16 replays) and a short last batch."""
    x, y = data.train_x[:156].cuda(), data.train_y[:156].cuda()   # 19 full batches + 4 images

    def single(cuda_graph):
        model = FashionCNN(0.2).cuda().to(memory_format=MEMORY_FORMAT)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, foreach=True)
        loss, steps = train_one_epoch(model, optimizer, x, y, 8, cuda_graph=cuda_graph)
        return loss, {k: v.cpu() for k, v in model.state_dict().items()}

    def stack(cuda_graph):
        s = StackedCNN([FashionCNN(0.2).state_dict()] * 3, [0.001, 0.01, 0.1], 0.2, device="cuda")
        s, sums, _ = stacked_run.train_stacked_epoch(s, x, y, 8, cuda_graph=cuda_graph)
        return [sums[lr][0] for lr in s.lrs], {str(k): v.cpu() for k, v in s.member_state(2).items()}

    for train in (single, stack):
        (loss_a, state_a), (loss_b, state_b) = _graphed_and_eager(train)
        assert loss_b == pytest.approx(loss_a, rel=1e-5), train.__name__
        for k in state_a:
            torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-5, atol=1e-6)
