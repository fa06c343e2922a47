"""--amp bf16 and the device paths: bf16 autocast trains the same network close to fp32 and
is kept apart in the run store, fp32 runs keep their old run key, and the model stack
takes a device (only CPU can run here; bench/gpu_check.sh covers CUDA)."""

import pytest
import torch

from convattn.classify import stacked_run, sweep
from convattn.classify.loop import MEMORY_FORMAT, evaluate, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.classify.presets import HOMEWORK
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
