"""Caption any image files with a trained decoder (`convattn caption predict`).

A model.pt carries its vocabulary, maximum length, encoder name, feature layer and image
size, so the features it is fed are always the kind it was trained on. One trained with
--rerank N also carries its consensus reranker (caption/rerank.py). By default a model.pt
is decoded as its run decoded its test captions (as `convattn serve` does): with the run's
beam, reranked when it carries a reranker.
"""

from __future__ import annotations

from pathlib import Path

from convattn.caption.checkpoint import encoder_spec, max_steps, stored_reranker
from convattn.caption.encoders import build_encoder, load_image
from convattn.caption.ensemble import load_ensemble
from convattn.caption.inference import caption_features, image_features
from convattn.caption.plots import plot_attention
from convattn.caption.rerank import ConsensusReranker, decoding_label
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.data.captions import Vocabulary


def decoding(ckpt: dict, model_path, beam: int | None, rerank: int | None) -> tuple[int, ConsensusReranker | None]:
    """The beam size and the reranker (or None) a model.pt is decoded with. beam None: the
    run's beam (1, greedy, for a model.pt that records none). rerank None: the
    carried reranker's neighbours, if any; 0: no reranking; N: N neighbours (it must carry one)."""
    if rerank is not None and rerank < 0:
        raise UserError(f"--rerank {rerank}: must be at least 0 (0 = no reranking)")
    if rerank and "rerank" not in ckpt:
        raise UserError(f"--rerank {rerank}: {model_path} carries no consensus reranker; train with "
                        "--rerank N (as --preset best does) for a model.pt that has one, or leave out --rerank")
    if beam is None:
        beam = ckpt["config"].get("beam", 1)
    if rerank and beam < 2:
        raise UserError(f"--rerank {rerank}: reranking chooses among the beam's hypotheses: add --beam 5 "
                        "(or more than 1)")
    return beam, (stored_reranker(ckpt, rerank) if beam >= 2 and rerank != 0 else None)


def predict(model_paths, images: list, device, beam: int | None = None, attention_maps=None,
            rerank: int | None = None) -> list[tuple[str, str]]:
    """model_paths: one model.pt, or several (seeds of one run) decoded as one ensemble
    (caption/ensemble.py) -> [(image path, caption)]; with `attention_maps` (a folder) and an
    attention model, also one heat-map figure per image there. beam and rerank: see
    `decoding` (the first model.pt's)."""
    model_paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    decoder, ckpt = load_ensemble(model_paths, device)
    beam, reranker = decoding(ckpt, model_paths[0], beam, rerank)
    log(f"{', '.join(map(str, model_paths))}: {decoding_label(beam, reranker)}")
    vocab = Vocabulary(ckpt["vocab"])
    spec = encoder_spec(ckpt)
    encoder = build_encoder(spec).to(device)
    steps = max_steps(ckpt)
    out = []
    for path in images:
        [features], [grid] = image_features([path], spec, device, encoder)
        [captioned] = caption_features(decoder, features[None], steps, beam, grid, vocab, reranker)
        ids, alphas = captioned.best.ids, captioned.best.alphas
        out.append((str(path), " ".join(vocab.decode(ids))))
        if attention_maps is not None and alphas is not None:
            shown = vocab.tokens(ids)  # one per attention row (<unk>, <end> kept)
            picture = load_image(path, spec.image_size).permute(1, 2, 0).numpy()  # [H, W, 3]
            plot_attention(picture, shown, alphas[:len(shown)].cpu().numpy(), grid, Path(path).name,
                           Path(attention_maps) / f"{Path(path).stem}.png")
    return out
