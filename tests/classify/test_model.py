"""The study's CNN: exact parameter count, shapes, log-probabilities."""

import torch

from convattn.classify.model import FashionCNN, count_parameters


def test_parameter_count_is_the_studys():
    assert count_parameters(FashionCNN()) == 769_930


def test_layer_sizes():
    model = FashionCNN()
    assert model.conv1.weight.shape == (16, 1, 3, 3)
    assert model.conv2.weight.shape == (32, 16, 3, 3)
    assert model.fc1.weight.shape == (600, 1152)
    assert model.fc2.weight.shape == (120, 600)
    assert model.fc3.weight.shape == (10, 120)


def test_outputs_log_probabilities():
    torch.manual_seed(0)
    model = FashionCNN(dropout=0.2).eval()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_channels_last_computes_the_same_function():
    torch.manual_seed(0)
    model = FashionCNN().eval()
    x = torch.rand(4, 1, 28, 28)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_dropout_is_the_flag():
    assert FashionCNN(dropout=0.3).dropout.p == 0.3
    assert FashionCNN().dropout.p == 0.2
