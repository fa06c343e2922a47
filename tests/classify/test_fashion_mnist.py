"""The IDX loader: valid files (.gz and raw), the split, and every way a file can be bad."""

import pytest
import torch

from convattn.common.errors import UserError
from convattn.data.fashion_mnist import load_fashion_mnist
from tiny_fashion import (TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, break_file,
                          write_tiny_fashion)


@pytest.mark.parametrize("gz", [True, False])
def test_loads_split_and_scales(tmp_path, gz):
    write_tiny_fashion(tmp_path, n_train=240, n_test=60, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert data.sizes() == {"train": 200, "dev": 40, "test": 60}
    assert data.train_x.shape == (200, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert data.train_y.dtype == torch.int64
    # pixels / 256: a 255 pixel becomes 255/256, never 1
    assert data.train_x.max().item() == 255 / 256
    # train and dev partition the 240 training images: no image in both
    train = {bytes(x.numpy()) for x in data.train_x}
    dev = {bytes(x.numpy()) for x in data.dev_x}
    assert len(train | dev) == 240 and not train & dev


def test_split_is_fixed(tmp_path):
    write_tiny_fashion(tmp_path)
    torch.manual_seed(1)
    a = load_fashion_mnist(tmp_path)
    torch.manual_seed(2)
    b = load_fashion_mnist(tmp_path)
    assert torch.equal(a.dev_x, b.dev_x) and torch.equal(a.train_y, b.train_y)
    assert a.fingerprint == b.fingerprint


def test_fingerprint_follows_content(tmp_path):
    write_tiny_fashion(tmp_path / "a", seed=0)
    write_tiny_fashion(tmp_path / "b", seed=1)
    assert load_fashion_mnist(tmp_path / "a").fingerprint != load_fashion_mnist(tmp_path / "b").fingerprint


@pytest.mark.parametrize("name, how, words", [
    (TRAIN_IMAGES, "missing", "train-images-idx3-ubyte(.gz)"),
    (TEST_LABELS, "missing", "t10k-labels-idx1-ubyte(.gz)"),
    (TRAIN_IMAGES, "magic", "magic number"),
    (TRAIN_LABELS, "magic", "magic number"),
    (TEST_IMAGES, "truncated", "truncated"),
    (TRAIN_IMAGES, "shape", "item shape"),
    (TRAIN_IMAGES, "count", "do not belong together"),
    (TEST_LABELS, "label", "outside 0..9"),
    (TRAIN_LABELS, "gzip", "gzip"),
])
def test_bad_files_name_the_file(tmp_path, name, how, words):
    write_tiny_fashion(tmp_path)
    break_file(tmp_path, name, how)
    with pytest.raises(UserError) as err:
        load_fashion_mnist(tmp_path)
    message = str(err.value)
    assert words in message
    assert name.removesuffix(".gz") in message
    assert "\n" not in message


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="--data .*no such folder"):
        load_fashion_mnist(tmp_path / "nope")


def test_too_few_images(tmp_path):
    write_tiny_fashion(tmp_path, n_train=3, n_test=2)
    with pytest.raises(UserError, match="too few"):
        load_fashion_mnist(tmp_path)
