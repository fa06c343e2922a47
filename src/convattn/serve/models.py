"""The caption models a server offers: found once (catalog.py), loaded once per store, run
many times.

Where they come from: `--model PATH` (any number, in that order), else every decoder of
every caption stage of the `reproduce` run in `--report DIR`, grouped by dataset and best
validation score first (catalog.py). A store loads each model file once and each encoder once
per EncoderSpec (`ModelStore.encoders`), so decoders trained on the same features share one.

Captioning is read-only on the modules, so requests run in parallel; `slots` is the pool of
threads they run in, `parallel` of them: more requests wait for a free one (each holds a few
tens of MB of activations for a 500x500 image), and only these threads ever hold a model's
memory (a thread keeps its allocator's high-water mark; the web server's request threads,
40 of them, would each). An upload is decoded in its slot (uploads.Upload), so decoding
counts in that bound too.

A model.pt trained with --rerank N carries its consensus reranker (caption/rerank.py): a
beam search with it (beam >= 2) answers with the hypothesis the N nearest training images'
captions agree with most, as the run chose its test captions; greedy decoding is unchanged.
A request that names no beam size gets the model's run's decoding (`CaptionModel.beam`: the
beam its run decoded its test captions with, reranked when the model.pt carries the reranker),
so that by default the page shows the caption the run would have written.

Every caption comes with the out-of-domain check of its model (novelty.py): how similar the
image is to the nearest training image, against a threshold calibrated on validation images.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from convattn.caption.checkpoint import encoder_spec, load_decoder, max_steps, stored_reranker
from convattn.caption.encoders import EncoderSpec, build_encoder
from convattn.caption.features import channels_last
from convattn.caption.inference import Captioned, caption_features, encode_image
from convattn.caption.rerank import ConsensusReranker, decoding_label
from convattn.data.captions import Vocabulary
# given_models is re-exported: `caption predict`'s tests build stores with it
from convattn.serve.catalog import NAMES, ModelEntry, Validation, given_models  # noqa: F401
from convattn.serve.novelty import Calibration, NoveltyCheck
from convattn.serve.images import Decoded, Fit
from convattn.serve.uploads import to_tensor

ENCODER_STRIDE = 32  # EfficientNet-Lite0 and ResNet-18 both shrink each side 32 times


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
    novelty: NoveltyCheck
    reranker: ConsensusReranker | None = None
    beam: int = 1  # its run's beam size for the test captions (config.beam; 1 = greedy): the default
    dataset: str | None = None          # "Sydney-Captions", "RSICD"; None: unknown (--model)
    recipe: str | None = None           # its caption preset
    validation: Validation | None = None

    @property
    def uses_attention(self) -> bool:
        return self.decoder.uses_attention

    @property
    def max_side(self) -> int:
        """Images the model read at their own size were this large (500 -> 16 regions -> 512);
        bigger uploads are shrunk to it so their grid stays near the training grid."""
        return max(self.grid) * ENCODER_STRIDE

    @property
    def fit(self) -> Fit:
        """The size an upload is decoded at for this model (as `to_tensor` would resize it)."""
        return Fit(self.spec.image_size, self.max_side)

    def info(self) -> dict:
        return {"id": self.id, "label": self.label, "path": self.shown_path,
                "dataset": self.dataset, "recipe": self.recipe,
                "validation": None if self.validation is None else self.validation.to_dict(),
                "attention": self.uses_attention, "encoder": self.spec.name,
                "layer": self.spec.layer, "image_size": self.spec.image_size,
                "grid": list(self.grid), "vocabulary": len(self.vocab),
                "rerank": None if self.reranker is None else self.reranker.neighbours,
                "beam": self.beam, "decoding": self.decoding(self.beam),
                "novelty": self.novelty.info()}

    @property
    def shown_path(self) -> str:
        """Where the model file is, for the page: relative to the working folder when inside
        it, else its last six parts (stage/runs/layer/model/seed/model.pt); never absolute."""
        path, here = self.path.resolve(), Path.cwd().resolve()
        if path.is_relative_to(here):
            return path.relative_to(here).as_posix()
        return ".../" + "/".join(path.parts[1:][-6:])

    def decoding(self, beam: int) -> str:
        """How a caption decoded with `beam` is chosen, in a few words: "greedy", "beam 5",
        "beam 5 + consensus rerank over 20 training images"."""
        return decoding_label(beam, self.reranker)


def short_path(path: Path) -> str:
    """runs/caption/runs/blocks/attention/seed42/model.pt -> '.../blocks/attention/seed42/model.pt';
    an absolute path always loses its start (labels are shown to anyone who opens the page)."""
    if len(path.parts) <= 5 and not path.is_absolute():
        return str(path)
    return ".../" + "/".join(path.parts[1 if path.is_absolute() else 0:][-4:])


class ModelStore:
    """Every offered model, loaded; `caption` runs one image through one of them."""

    def __init__(self, entries: list[ModelEntry], device: torch.device, slots: int = 1):
        self.device = device
        self.parallel = max(1, slots)
        self.slots = ThreadPoolExecutor(self.parallel, thread_name_prefix="caption")
        self.encoders: dict = {}  # EncoderSpec -> encoder, shared by the decoders of its features
        calibration = Calibration()  # the datasets' cached features, read while loading only
        self.models: dict[str, CaptionModel] = {
            f"m{i}": self.load(f"m{i}", entry, calibration) for i, entry in enumerate(entries)}

    def load(self, model_id: str, entry: ModelEntry, calibration: Calibration) -> CaptionModel:
        decoder, ckpt = load_decoder(entry.path, self.device)
        spec = encoder_spec(ckpt)
        # a --model file: its kind, and where it is in a few words
        label = entry.label or f"{NAMES.get(ckpt['model'], ckpt['model'])} ({short_path(entry.path)})"
        return CaptionModel(
            id=model_id, label=label, path=entry.path, decoder=decoder,
            vocab=Vocabulary(ckpt["vocab"]), spec=spec, steps=max_steps(ckpt),
            grid=tuple(ckpt["grid"]), encoder=self.encoder(spec),
            novelty=calibration.check_for(entry.data_dir, spec, ckpt), reranker=stored_reranker(ckpt),
            beam=ckpt["config"].get("beam", 1), dataset=entry.dataset, recipe=entry.recipe,
            validation=entry.validation)

    def encoder(self, spec: EncoderSpec) -> torch.nn.Module:
        if spec not in self.encoders:
            # the layout the cache is extracted in, on any device: the cache's values
            self.encoders[spec] = channels_last(build_encoder(spec).to(self.device))
        return self.encoders[spec]

    def info(self) -> list[dict]:
        return [m.info() for m in self.models.values()]

    def in_slot(self, fn, *args):
        """fn(*args) in one of the slots' threads, once one is free; its result or exception."""
        return self.slots.submit(fn, *args).result()

    def close(self) -> None:
        self.slots.shutdown(wait=False, cancel_futures=True)

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
        """An image -> the caption, the top beams (beam > 1), attention weights per generated
        word (attention models), the out-of-domain check ("novelty") and where the time went.
        `image`: a PIL RGB image, or an upload (anything with `decode(Fit) -> Decoded`, such as
        uploads.Upload), decoded inside the slot. beam None: the model's run's
        (`CaptionModel.beam`). With beam > 1 and a model that carries a reranker, the caption
        is the beam the reranker chooses ("chosen"; each beam's "consensus": its mean CIDEr-D
        against the neighbours' captions), else the first."""
        model = self.get(model_id)
        beam = model.beam if beam is None else beam
        return self.in_slot(self.caption_in_slot, model, image, beam, time.perf_counter())

    def caption_in_slot(self, model: CaptionModel, image, beam: int, start: float) -> dict:
        """`caption`'s work, in a slot's thread (`start`: when the request asked for it)."""
        clock = {"start": start, "waited": time.perf_counter()}
        with torch.inference_mode():
            decoded = Decoded(image, image.width, image.height, "") if isinstance(image, Image.Image) \
                else image.decode(model.fit)
            x = to_tensor(decoded.image, model.spec.image_size, model.max_side)     # [3, H, W]
            clock["prepared"] = time.perf_counter()
            # rounded as the feature cache rounds them: the decoder sees what its run saw
            features, grid = encode_image(model.encoder, x[None].to(self.device))  # [1, R, C]
            novelty = model.novelty.check(features)
            clock["encoded"] = self.clock()
            [captioned] = caption_features(model.decoder, features, model.steps, beam, grid, model.vocab,
                                           model.reranker)
            clock["decoded"] = self.clock()  # reranking included
        return {
            "model": model.id, "label": model.label, "dataset": model.dataset,
            "decoding": model.decoding(beam),
            **best_caption(model.vocab, captioned, grid),
            "beams": [{"caption": " ".join(model.vocab.decode(h.ids)), "score": h.score, "ended": h.ended,
                       "consensus": h.consensus, "chosen": i == captioned.chosen}
                      for i, h in enumerate(captioned.hypotheses)] if beam > 1 else [],
            "novelty": novelty.to_dict(),
            "image": {"width": decoded.width, "height": decoded.height,
                      "model_input": [int(x.shape[2]), int(x.shape[1])]},
            "seconds": timings(clock),
        }


def best_caption(vocab: Vocabulary, captioned: Captioned, grid) -> dict:
    """The chosen hypothesis -> its caption, its tokens (one per attention map) and, for an
    attention decoder, the maps."""
    best = captioned.best
    shown = vocab.tokens(best.ids)  # <unk> and <end> kept: the i-th token is the i-th map's
    attention = None
    if best.alphas is not None:
        weights = best.alphas[:len(shown)].float().cpu()                    # [len(shown), R]
        attention = {"grid": list(grid), "weights": weights.round(decimals=5).tolist(),
                     "uniform": 1.0 / weights.shape[1]}
    return {"caption": " ".join(vocab.decode(best.ids)), "words": shown, "attention": attention}


def timings(clock: dict) -> dict:
    """The caption's stages in seconds, from the perf_counter readings between them."""
    return {"total": clock["decoded"] - clock["start"], "preprocessing": clock["prepared"] - clock["waited"],
            "waiting": clock["waited"] - clock["start"], "features": clock["encoded"] - clock["prepared"],
            "decoding": clock["decoded"] - clock["encoded"]}
