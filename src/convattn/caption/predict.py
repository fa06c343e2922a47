"""Caption any image files with a trained decoder (`convattn caption predict`).

A model.pt carries its vocabulary, maximum length, encoder name, feature layer and image
size, so the features it is fed are always the kind it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from convattn.caption.checkpoint import encoder_spec, load_decoder, max_steps
from convattn.caption.decode import decode
from convattn.caption.encoders import build_encoder, load_image
from convattn.caption.features import image_features
from convattn.caption.plots import plot_attention
from convattn.data.captions import Vocabulary


def predict(model_path, images: list, device, beam: int = 1, attention_maps=None) -> list[tuple[str, str]]:
    """-> [(image path, caption)]; with `attention_maps` (a folder) and an attention model,
    also one heat-map figure per image there."""
    decoder, ckpt = load_decoder(model_path, device)
    vocab = Vocabulary(ckpt["vocab"])
    spec = encoder_spec(ckpt)
    encoder = build_encoder(spec).to(device)
    steps = max_steps(ckpt)
    out = []
    for path in images:
        [features], [grid] = image_features([path], spec, device, encoder)
        ids, alphas = decode(decoder, features[None], steps, beam, grid)
        words = vocab.decode(ids[0].tolist())
        out.append((str(path), " ".join(words)))
        if attention_maps is not None and alphas is not None:
            shown = vocab.tokens(ids[0].tolist())  # one per attention row (<unk>, <end> kept)
            picture = load_image(path, spec.image_size).permute(1, 2, 0).numpy()  # [H, W, 3]
            plot_attention(picture, shown, alphas[0, :len(shown)].cpu().numpy(), grid, Path(path).name,
                           Path(attention_maps) / f"{Path(path).stem}.png")
    return out
