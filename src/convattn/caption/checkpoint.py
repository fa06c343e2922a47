"""A trained caption model on disk: `model.pt`, written by training and read by
`caption predict` and `convattn serve`.

A model.pt is one plain dict (tensors and Python values, never a pickled module):
    decoder      the decoder's state dict
    model        decoder name (a key of decoders.MODELS)
    vocab        the vocabulary's words, in id order
    max_len      the longest training caption, in tokens with <start> and <end>
    feature_dim  channels of the region features it is fed (the cached ones: with tuned
                 encoder blocks, their input's)
    grid         the training images' region grid [H', W']
    encoder      {name, layer, image_size, weights, tune}: how to compute its features (the
                 decoder's state dict holds the `tune` top blocks it trained, encoders.TopBlocks)
    config       the CaptionConfig it was trained with, as a dict
    rerank       only for a run trained with --rerank N: ConsensusReranker.block(), i.e.
                 {neighbours: N, globals: the training images' L2-normalised mean region
                 features, float32 [N_train, C], references: their captions as token lists},
                 so predict and serve rerank as the run did; nothing of val or test
so the features it is fed are always the kind it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from convattn.caption.data import Data
from convattn.caption.decoders import MODELS, build_decoder, input_channels
from convattn.caption.encoders import EncoderSpec
from convattn.caption.presets import CaptionConfig
from convattn.caption.rerank import ConsensusReranker, reranker_for
from convattn.common import io
from convattn.common.errors import UserError


def model_checkpoint(decoder, model: str, vocab_words: list[str], max_len: int, grid,
                     spec: EncoderSpec, config: CaptionConfig,
                     reranker: ConsensusReranker | None = None) -> dict:
    """The model.pt dict of a trained decoder (see the module's doc); with the run's
    `reranker` (--rerank N), also its block."""
    ckpt = {"decoder": decoder.state_dict(), "model": model, "vocab": list(vocab_words),
            "max_len": max_len, "feature_dim": input_channels(decoder), "grid": list(grid),
            "encoder": {"name": spec.name, "layer": spec.layer, "image_size": spec.image_size,
                        "weights": spec.weights, "tune": spec.tune},
            "config": config.to_dict()}
    if reranker is not None:
        ckpt["rerank"] = reranker.block()
    return ckpt


def add_reranker(path: Path, data: Data, neighbours: int) -> None:
    """Give the model.pt of a stored run trained with --rerank N that was written before
    model.pt carried the reranker its block (the run's Data's); one that has it, or a
    missing one, is left as it is."""
    if not path.is_file():
        return
    ckpt = io.load_checkpoint(path)
    if "rerank" not in ckpt:
        ckpt["rerank"] = reranker_for(data, neighbours).block()
        io.save_checkpoint(path, ckpt)


def stored_reranker(ckpt: dict, neighbours: int | None = None) -> ConsensusReranker | None:
    """The consensus reranker a model.pt carries (with its own number of neighbours unless
    `neighbours` is given), or None when it has none."""
    return ConsensusReranker.from_block(ckpt["rerank"], neighbours) if "rerank" in ckpt else None


def load_decoder(path, device) -> tuple:
    """model.pt -> (decoder in eval mode on `device`, the checkpoint dict)."""
    ckpt = io.load_checkpoint(path, map_location=device)
    if not isinstance(ckpt, dict) or ckpt.get("model") not in MODELS or "vocab" not in ckpt:
        raise UserError(f"--model {path}: not a caption model (expected a model.pt written by "
                        "`convattn caption`)")
    config = CaptionConfig.from_dict(ckpt["config"])
    decoder = build_decoder(ckpt["model"], len(ckpt["vocab"]), ckpt["feature_dim"], config,
                            ckpt.get("grid"), encoder_spec(ckpt)).to(device)
    decoder.load_state_dict(ckpt["decoder"])
    decoder.eval()
    return decoder, ckpt


def encoder_spec(ckpt: dict) -> EncoderSpec:
    """The encoder a model.pt's features came from."""
    enc = ckpt["encoder"]
    return EncoderSpec(enc["name"], enc["layer"], enc["image_size"], enc["weights"], enc.get("tune", 0))


def max_steps(ckpt: dict) -> int:
    """Words generated at most: the config's max_steps, else the longest training caption."""
    return ckpt["config"].get("max_steps") or ckpt["max_len"]
