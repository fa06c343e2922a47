"""Caption any image files with a trained decoder (`convattn caption predict`).

A model.pt carries its vocabulary, maximum length, encoder name, feature layer and image
size, so the features it is fed are always the kind it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from convattn.caption.decode import decode
from convattn.caption.decoders import MODELS, build_decoder
from convattn.caption.encoders import EncoderSpec, build_encoder, load_image
from convattn.caption.features import image_features
from convattn.caption.presets import CaptionConfig
from convattn.common import io
from convattn.common.errors import UserError
from convattn.data.captions import END, Vocabulary


def load_decoder(path, device) -> tuple:
    """model.pt -> (decoder in eval mode, the checkpoint dict)."""
    ckpt = io.load_checkpoint(path, map_location=device)
    if not isinstance(ckpt, dict) or ckpt.get("model") not in MODELS or "vocab" not in ckpt:
        raise UserError(f"--model {path}: not a caption model (expected a model.pt written by "
                        "`convattn caption`)")
    config = CaptionConfig.from_dict(ckpt["config"])
    decoder = build_decoder(ckpt["model"], len(ckpt["vocab"]), ckpt["feature_dim"], config).to(device)
    decoder.load_state_dict(ckpt["decoder"])
    decoder.eval()
    return decoder, ckpt


def predict(model_path, images: list, device, beam: int = 1, attention_maps=None) -> list[tuple[str, str]]:
    """-> [(image path, caption)]; with `attention_maps` (a folder) and an attention model,
    also one heat-map figure per image there."""
    decoder, ckpt = load_decoder(model_path, device)
    vocab = Vocabulary(ckpt["vocab"])
    enc = ckpt["encoder"]
    spec = EncoderSpec(enc["name"], enc["layer"], enc["image_size"], enc["weights"])
    encoder = build_encoder(spec).to(device)
    max_steps = ckpt["config"].get("max_steps") or ckpt["max_len"]
    out = []
    for path in images:
        [features], [grid] = image_features([path], spec, device, encoder)
        ids, alphas = decode(decoder, features[None], max_steps, beam)
        words = vocab.decode(ids[0].tolist())
        out.append((str(path), " ".join(words)))
        if attention_maps is not None and alphas is not None:
            from convattn.caption.plots import plot_attention

            shown = words + [END]
            plot_attention(load_image(path, spec.image_size), shown, alphas[0, :len(shown)].cpu().numpy(),
                           grid, Path(path).name, Path(attention_maps) / f"{Path(path).stem}.png")
    return out
