"""The caption models a server offers: found once, loaded once per process, run many times.

Where they come from: `--model PATH` (any number), else the `reproduce` run in `--report DIR`
(its summary.json names the chosen feature layer and the first seed; every other decoder
under DIR/caption/runs is offered too, after those two). Decoders are cached per model file
and encoders per EncoderSpec, so two decoders trained on the same features share one
encoder, and a second app in the same process (the tests) loads nothing again.

Captioning is read-only on the modules, so requests run in parallel threads; `slots` bounds
how many run at once (each holds a few tens of MB of activations for a 500x500 image).

A model.pt trained with --rerank N carries its consensus reranker (caption/rerank.py): a
beam search with it (beam >= 2) answers with the hypothesis the N nearest training images'
captions agree with most, as the run chose its test captions; greedy decoding is unchanged.
A request that names no beam size gets the model's run's decoding (`CaptionModel.beam`: the
beam its run decoded its test captions with, reranked when the model.pt carries the reranker),
so that by default the page shows the caption the run would have written.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from convattn.caption.checkpoint import encoder_spec, load_decoder, max_steps, stored_reranker
from convattn.caption.decode import beam_search_all, greedy
from convattn.caption.encoders import EncoderSpec, build_encoder
from convattn.caption.features import channels_last, encode_image
from convattn.caption.rerank import ConsensusReranker, decoding_label, pick
from convattn.common import io
from convattn.common.errors import UserError
from convattn.data.captions import END_ID, Vocabulary
from convattn.serve.uploads import to_tensor

ENCODER_STRIDE = 32  # EfficientNet-Lite0 and ResNet-18 both shrink each side 32 times
NAMES = {"no_attention": "no attention", "attention": "attention"}
NO_REPORT = ("run `make reproduce PRESET=fast` first (it writes ./report), or pass "
             "--report DIR or --model PATH")

_lock = threading.Lock()
_decoders: dict = {}   # (path, mtime, device) -> (decoder, ckpt, reranker or None)
_encoders: dict = {}   # (EncoderSpec, device) -> encoder


@dataclass
class CaptionModel:
    id: str
    label: str
    path: Path
    decoder: torch.nn.Module
    vocab: Vocabulary
    spec: EncoderSpec
    steps: int
    grid: tuple
    encoder: torch.nn.Module
    reranker: ConsensusReranker | None = None
    beam: int = 1  # its run's beam size for the test captions (config.beam; 1 = greedy): the default

    @property
    def uses_attention(self) -> bool:
        return self.decoder.uses_attention

    @property
    def max_side(self) -> int:
        """Images the model read at their own size were this large (500 -> 16 regions -> 512);
        bigger uploads are shrunk to it so their grid stays near the training grid."""
        return max(self.grid) * ENCODER_STRIDE

    def info(self) -> dict:
        return {"id": self.id, "label": self.label, "path": str(self.path),
                "attention": self.uses_attention, "encoder": self.spec.name,
                "layer": self.spec.layer, "image_size": self.spec.image_size,
                "grid": list(self.grid), "vocabulary": len(self.vocab),
                "rerank": None if self.reranker is None else self.reranker.neighbours,
                "beam": self.beam, "decoding": self.decoding(self.beam)}

    def decoding(self, beam: int) -> str:
        """How a caption decoded with `beam` is chosen, in a few words: "greedy", "beam 5",
        "beam 5 + consensus rerank over 20 training images"."""
        return decoding_label(beam, self.reranker)


def report_models(report_dir: Path) -> list[tuple[str, Path]]:
    """(label, model.pt) of a reproduce run: the report's models (first seed, chosen layer)
    first, then every other decoder of the run."""
    summary_path = report_dir / "caption" / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"--report {report_dir}: no caption/summary.json there; {NO_REPORT}")
    summary = io.read_json(summary_path)
    try:
        layer, seed, names = summary["feature_layer"]["chosen"], summary["seeds"][0], list(summary["models"])
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{summary_path}: not the summary of a `convattn reproduce` run (it needs "
                        "feature_layer, seeds and models); rerun it or pass --model PATH") from None
    runs = report_dir / "caption" / "runs"
    found = []
    for model in names:
        path = runs / layer / model / f"seed{seed}" / "model.pt"
        if path.is_file():
            found.append((f"{NAMES.get(model, model)} (report, seed {seed})", path))
    shown = {p for _, p in found}
    for path in sorted(runs.glob("*/*/seed*/model.pt")):
        if path not in shown:
            layer_, model, seed_ = path.parts[-4:-1]
            label = f"seed {seed_[4:]}" if layer_ == layer else f"{layer_} features, seed {seed_[4:]}"
            found.append((f"{NAMES.get(model, model)} ({label})", path))
    if not found:
        raise UserError(f"--report {report_dir}: no model.pt under {runs}; {NO_REPORT}")
    return found


def given_models(paths: list) -> list[tuple[str | None, Path]]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file (a model.pt written by `convattn caption`)")
        out.append((None, path))
    return out


def short_path(path: Path) -> str:
    """runs/caption/runs/blocks/attention/seed42/model.pt -> '.../blocks/attention/seed42/model.pt'."""
    return str(path) if len(path.parts) <= 5 else ".../" + "/".join(path.parts[-4:])


def cached_decoder(path: Path, device: torch.device):
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device))
    with _lock:
        if key not in _decoders:
            decoder, ckpt = load_decoder(path, device)
            _decoders[key] = decoder, ckpt, stored_reranker(ckpt)
        return _decoders[key]


def cached_encoder(spec: EncoderSpec, device: torch.device):
    key = (spec, str(device))
    with _lock:
        if key not in _encoders:
            # the layout the cache is extracted in, on any device: the cache's values
            _encoders[key] = channels_last(build_encoder(spec).to(device))
        return _encoders[key]


class ModelStore:
    """Every offered model, loaded; `caption` runs one image through one of them."""

    def __init__(self, entries: list[tuple[str | None, Path]], device: torch.device, slots: int = 1):
        self.device = device
        self.slots = threading.BoundedSemaphore(max(1, slots))
        self.models: dict[str, CaptionModel] = {}
        for i, (label, path) in enumerate(entries):
            decoder, ckpt, reranker = cached_decoder(Path(path), device)
            spec = encoder_spec(ckpt)
            if label is None:  # a --model file: its kind, and where it is in a few words
                label = f"{NAMES.get(ckpt['model'], ckpt['model'])} ({short_path(Path(path))})"
            self.models[f"m{i}"] = CaptionModel(
                id=f"m{i}", label=label, path=Path(path), decoder=decoder,
                vocab=Vocabulary(ckpt["vocab"]), spec=spec, steps=max_steps(ckpt),
                grid=tuple(ckpt["grid"]), encoder=cached_encoder(spec, device), reranker=reranker,
                beam=ckpt["config"].get("beam", 1))

    def info(self) -> list[dict]:
        return [m.info() for m in self.models.values()]

    def clock(self) -> float:
        """perf_counter once the device has finished its queued work (CUDA runs async)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def get(self, model_id: str) -> CaptionModel:
        if model_id not in self.models:
            raise KeyError(f"no model {model_id!r}; this server has "
                           + ", ".join(f"{m.id} ({m.label})" for m in self.models.values()))
        return self.models[model_id]

    def caption(self, model_id: str, image, beam: int | None = None) -> dict:
        """A PIL RGB image -> the caption, the top beams (beam > 1), attention weights per
        generated word (attention models) and where the time went. beam None: the model's
        run's (`CaptionModel.beam`). With beam > 1 and a model that carries a reranker, the
        caption is the beam the reranker chooses ("chosen"; each beam's "consensus": its mean
        CIDEr-D against the neighbours' captions), else the first."""
        model = self.get(model_id)
        beam = model.beam if beam is None else beam
        start = time.perf_counter()
        x = to_tensor(image, model.spec.image_size, model.max_side)         # [3, H, W]
        prepared = time.perf_counter()
        with self.slots, torch.inference_mode():
            waited = time.perf_counter()
            x = x[None].to(self.device)
            # rounded as the feature cache rounds them: the decoder sees what its run saw
            features, grid = encode_image(model.encoder, x)                  # [1, R, C]
            encoded = self.clock()
            if beam <= 1:
                ids, alphas = greedy(model.decoder, features, model.steps, grid)
                hyps = [{"ids": ids[0], "alphas": None if alphas is None else alphas[0]}]
            else:
                hyps = beam_search_all(model.decoder, features, model.steps, beam, grid)[0]
            decoded = self.clock()
            rerank = model.reranker if beam > 1 else None
            if rerank is not None:  # pure Python CIDEr-D, a few ms per beam
                [consensus] = rerank.scores(features, [[model.vocab.decode(h["ids"].tolist()) for h in hyps]])
                chosen = pick(consensus)
                consensus = [s / rerank.neighbours for s in consensus]
            else:
                chosen, consensus = 0, [None] * len(hyps)
            reranked = time.perf_counter()
        best = hyps[chosen]
        words = model.vocab.decode(best["ids"].tolist())
        shown = generated_tokens(model.vocab, best["ids"].tolist())
        attention = None
        if best["alphas"] is not None:
            weights = best["alphas"][:len(shown)].float().cpu()             # [len(shown), R]
            attention = {"grid": list(grid), "weights": weights.round(decimals=5).tolist(),
                         "uniform": 1.0 / weights.shape[1]}
        return {
            "model": model.id, "label": model.label,
            "decoding": model.decoding(beam),
            "caption": " ".join(words), "words": shown, "attention": attention,
            "beams": [{"caption": " ".join(model.vocab.decode(h["ids"].tolist())),
                       "score": h["score"], "ended": h["ended"], "consensus": c, "chosen": i == chosen}
                      for i, (h, c) in enumerate(zip(hyps, consensus))] if beam > 1 else [],
            "image": {"width": image.width, "height": image.height,
                      "model_input": [int(x.shape[3]), int(x.shape[2])]},
            "seconds": {"total": reranked - start, "preprocessing": prepared - start,
                        "waiting": waited - prepared,
                        "features": encoded - waited, "decoding": decoded - encoded,
                        "reranking": reranked - decoded},
        }


def generated_tokens(vocab: Vocabulary, ids: list[int]) -> list[str]:
    """Every token the decoder produced, up to and including <end> if it came: one per
    attention map. Unlike Vocabulary.decode (the caption BLEU sees), specials such as
    <unk> stay, so the i-th token is the one the i-th map was computed for."""
    out = []
    for i in ids:
        out.append(vocab.words[i])
        if i == END_ID:
            break
    return out
