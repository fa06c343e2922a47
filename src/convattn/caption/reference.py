"""Reference captioners: what a benchmark gives captions that need little or no understanding
of the image. Each reads only the training split (its captions, and for `nearest` its
images' features), and is scored exactly as a decoder is (metrics.all_metrics on the test
split, per image for the paired bootstrap), so a decoder's number can be read against them.

    prior        the most frequent training caption, for every image
    class-prior  the most frequent training caption of the image's scene class (dataset.json's
                 `label`, as RSICD has): an oracle, since the class is given, not seen; the
                 most frequent caption overall for a class with no training image
    nearest      consensus retrieval (Devlin et al. 2015, "Exploring Nearest Neighbor
                 Approaches for Image Captioning"): of the captions of the k training images
                 nearest by the encoder's global feature (rerank.global_features, cosine), the
                 one with the highest summed CIDEr-D against those k images' references, the
                 caption itself left out of its own image's; k chosen on validation CIDEr-D
                 among K_CANDIDATES (k = 1 is the nearest image's most central caption)

Ties go to the caption met first (dataset.json's order; for `nearest`, the nearer image).
All three are deterministic: one "seed".
"""

from __future__ import annotations

import time

import numpy as np

from convattn.caption import metrics
from convattn.caption.data import Data
from convattn.caption.rerank import image_globals
from convattn.caption.result import RunResult
from convattn.caption.reward import PairwiseCiderD
from convattn.common.progress import log, progress
from convattn.data import priors

CAPTIONERS = ("prior", "class-prior", "nearest")
TITLES = {"prior": "prior: the most frequent training caption",
          "class-prior": "class-prior: its scene class's most frequent caption (the class is given: an oracle)",
          "nearest": "nearest: consensus retrieval over the k nearest training images"}
K_CANDIDATES = (1, 2, 3, 5, 10, 20, 50, 100)


def unavailable(name: str, data: Data) -> str | None:
    """Why captioner `name` cannot run on this data (None: it can)."""
    if name == "class-prior" and (unlabelled := priors.missing_labels(data.dataset.images)):
        return (f"class-prior needs a scene \"label\" on every image of {data.dataset.root / 'dataset.json'}; "
                f"{unlabelled} of {len(data.dataset.images)} have none")
    return None


def prior(data: Data, split: str) -> list[list[str]]:
    return [list(c) for c in priors.prior(data.dataset.split("train"), data.splits[split])]


def class_prior(data: Data, split: str) -> list[list[str]]:
    return [list(c) for c in priors.class_prior(data.dataset.split("train"), data.splits[split])]


class Nearest:
    """Consensus retrieval over the training images' captions (see the module doc)."""

    def __init__(self, data: Data, quiet: bool = True):
        train = data.dataset.split("train")
        self.data, self.quiet = data, quiet
        self.globals = image_globals(data, train).cpu().double().numpy()      # [N_train, C]
        self.captions = [c for im in train for c in im.captions]              # flattened, image by image
        self.cider = PairwiseCiderD([im.captions for im in train])
        self.first = np.concatenate([[0], np.cumsum([len(im.captions) for im in train])])

    def choices(self, split: str, ks=K_CANDIDATES) -> dict[int, list[list[str]]]:
        """{k: the chosen caption of every image of `split`} for each k of `ks`."""
        images = self.data.splits[split]
        queries = image_globals(self.data, images).cpu().double().numpy()
        k_max = min(max(ks), len(self.globals))
        near = np.argsort(-(queries @ self.globals.T), axis=1, kind="stable")[:, :k_max]  # [B, k_max]
        out = {k: [] for k in ks}
        for neighbours in progress(near, desc=f"nearest: {split} images", unit="images", quiet=self.quiet):
            for k, pick in self.pick(neighbours, ks).items():
                out[k].append(self.captions[pick])
        return out

    def pick(self, neighbours: np.ndarray, ks) -> dict[int, int]:
        """One image's nearest training images (indices, nearest first) -> {k: the chosen
        caption's index in self.captions}."""
        spans = [np.arange(self.first[j], self.first[j + 1]) for j in neighbours]
        ids = np.concatenate(spans)                                             # [Q] captions, by image
        owner = np.repeat(np.arange(len(spans)), [len(s) for s in spans])      # [Q] rank of their image
        pair = self.cider.matrix(ids)                                           # [Q, Q]
        member = (owner[None, :] == np.arange(len(spans))[:, None]).astype(float)  # [K, Q]
        own = member.T.astype(bool)                                             # [Q, K] caption i is image m's
        sums = pair @ member.T - np.where(own, np.diag(pair)[:, None], 0.0)     # [Q, K] leave itself out
        counts = member.sum(1)[None, :] - own                                   # [Q, K]
        image_score = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        total = np.cumsum(image_score, axis=1)                                  # [Q, K] summed over the first m+1
        picks = {}
        for k in ks:
            k_eff = min(k, len(spans))
            candidates = int(np.searchsorted(owner, k_eff))                     # captions of the first k images
            picks[k] = int(ids[int(np.argmax(total[:candidates, k_eff - 1]))])
        return picks


def run_captioner(name: str, data: Data, seed: int, meteor: metrics.MeteorScorer | None = None,
                  quiet: bool = True) -> RunResult:
    """Caption the val and test splits with reference captioner `name` and score them as a
    decoder's run is scored -> its result (one deterministic run, labelled with `seed`)."""
    started = time.perf_counter()
    choice = None
    if name == "nearest":
        nearest = Nearest(data, quiet)
        val, test = nearest.choices("val"), nearest.choices("test")
        candidates = [{"k": k, "val_cider": metrics.cider(data.references("val"), val[k]),
                       "test_cider": metrics.cider(data.references("test"), test[k]),
                       "test_bleu4": metrics.coco_bleu(data.references("test"), test[k])["bleu4"]}
                      for k in K_CANDIDATES]
        chosen = max(candidates, key=lambda c: c["val_cider"])  # ties: the smaller k
        choice = {"k": chosen["k"], "candidates": candidates,
                  "rule": "the k with the highest validation CIDEr-D; test scores of every k shown, not used"}
        log(f"nearest: k = {chosen['k']} by validation CIDEr-D (" +
            ", ".join(f"k={c['k']} {c['val_cider']:.3f}" for c in candidates) + ")")
        val_hyps, test_hyps = val[chosen["k"]], test[chosen["k"]]
    else:
        caption = {"prior": prior, "class-prior": class_prior}[name]
        val_hyps, test_hyps = caption(data, "val"), caption(data, "test")
    val_refs, test_refs = data.references("val"), data.references("test")
    scores = metrics.all_metrics(test_refs, test_hyps, meteor)
    val_cider, val_bleu4 = metrics.cider(val_refs, val_hyps), metrics.bleu4(val_refs, val_hyps)
    seconds = time.perf_counter() - started
    return RunResult(
        model=name, seed=seed, config={"captioner": name, "dataset": data.dataset.fingerprint},
        coco=scores["coco"], test_bleu4=scores["bleu4"], test_bleu4_best=scores["bleu4"],
        corpus_bleu=scores["corpus_bleu"], cider=scores["cider"], rouge_l=scores["rouge_l"],
        meteor=scores.get("meteor"), test_bleu4_per_image=scores["bleu4_per_image"],
        cider_per_image=scores["cider_per_image"],
        captions={im.name: " ".join(h) for im, h in zip(data.splits["test"], test_hyps)},
        best_epoch=0, selected_by="val_cider" if choice else "none", final_val_bleu4=val_bleu4,
        best_val_bleu4=val_bleu4, best_val_cider=val_cider, seconds=seconds,
        train_loss=[], val_bleu4=[val_bleu4], val_cider=[val_cider], test_cider=[scores["cider"]],
        test_coco_bleu4=[scores["coco"]["bleu4"]], epoch_seconds=[seconds], choice=choice)
