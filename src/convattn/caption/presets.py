"""Captioning presets as data: one dataclass whose defaults are the study's protocol.

`homework` is the study (SPEC Q3) with 5 seeds; `fast` is what `reproduce --preset fast`
runs (chosen on validation BLEU-4 only); `smoke` is a seconds-long run for tests. The CLI shows the homework values as the defaults of its flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class CaptionConfig:
    # encoder and features
    encoder: str = "efficientnet-lite0"
    encoder_weights: str | None = None  # resnet18 only: torchvision's state-dict file
    # a layer of the encoder, or "auto": pick on validation BLEU-4. "blocks" (320 channels,
    # before the 1280-channel head conv) won that choice on Sydney (README) and is 2x faster
    feature_layer: str = "blocks"
    image_size: int | None = None       # None: every image at its own size (Sydney 500x500)
    # decoders (SPEC Q3.1a / Q3.1b)
    models: tuple = ("no_attention", "attention")
    embed_dim: int = 100
    hidden_dim: int = 256
    attention_dim: int = 100
    attention_act: str = "tanh"  # the study used relu; Show-Attend-Tell tanh
    dropout: float = 0.5
    # training
    epochs: int = 6
    batch_size: int = 8
    lr: float = 4e-4
    grad_clip: float = 5.0  # each gradient entry clamped to [-5, 5]
    seed: int = 42
    seeds: int = 5          # runs per model: seed, seed+1, ...
    # decoding and evaluation
    beam: int = 1                     # 1: greedy
    max_steps: int | None = None      # words generated at most; None: the max caption length
    show: tuple = ("219", "540", "357")
    bootstrap: int = 10000
    meteor: bool = True               # only when Java is found
    # how the work runs, not what it computes
    threads: int = 1                  # torch CPU threads (see common.runtime.torch_threads)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"], d["show"] = list(self.models), list(self.show)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for k in ("models", "show"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def run_key(self) -> dict:
        """The settings one (model, seed) run depends on; a stored run is reused only when
        they match. Seeds count, shown images, bootstrap and METEOR are not among them."""
        d = self.to_dict()
        for k in ("models", "seeds", "seed", "show", "bootstrap", "meteor", "threads"):
            d.pop(k)
        return d


HOMEWORK = CaptionConfig()

PRESETS = {
    "homework": HOMEWORK,
    # reproduce's fast mode (~4 minutes on 2 cores, features included): 256x256 images (an
    # 8x8 grid: 4x cheaper features and attention), 4 epochs, 2 seeds. Chosen on validation
    # BLEU-4 only: mean validation BLEU-4 of the attention model, seeds 42-43, 0.546 after
    # epoch 4 at 256x256 against 0.556 after epoch 6 for the homework preset (README).
    "fast": replace(HOMEWORK, image_size=256, epochs=4, seeds=2),
    # seconds, for tests: tiny images, one epoch, one seed
    "smoke": replace(HOMEWORK, epochs=1, seeds=1, image_size=64, bootstrap=200, meteor=False),
}
