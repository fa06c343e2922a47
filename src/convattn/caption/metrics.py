"""Caption metrics, each named for what it computes.

- `bleu4`: the study's metric. For each image, nltk `sentence_bleu(refs, hyp)` with the
  default uniform weights (1/4 each for 1- to 4-grams) and no smoothing, refs = the image's
  lower-cased reference token lists, hyp = the generated words without special tokens; then
  the plain mean over images. An image with no matching 4-gram scores 0 (nltk warns; the
  warning is silenced here because it is expected for a few images).
- `corpus_bleu`: nltk `corpus_bleu`, BLEU-1..4: n-gram counts and lengths summed over all
  images before the geometric mean and the brevity penalty, so one bad image cannot zero
  anything; this is what papers (and coco-caption's BLEU, up to its tokeniser and its
  "closest" reference length) report.
- `rouge_l`: pycocoevalcap's ROUGE-L (longest common subsequence F-measure, beta 1.2, best
  reference per image, mean over images).
- `cider`: pycocoevalcap's CIDEr, which is CIDEr-D (tf-idf weighted n-gram cosine with
  clipping and a Gaussian length penalty, x10), idf computed over the evaluated images'
  references; `cider_per_image` gives each image's score (their mean is `cider`).
- `meteor`: pycocoevalcap's METEOR 1.5 (Java); only when `java` is on PATH.
- `coco_bleu`: pycocoevalcap's BLEU-1..4 (corpus level, "closest" reference length), the
  BLEU that captioning papers report; with `cider`, `rouge_l` and `meteor` it makes the
  paper-comparable set (`coco`).
- `border_mass`: where an attention decoder looks: the share of its attention on the outer
  ring of the region grid, per generated word, against the ring's share of the area.
The pycocoevalcap scorers get pre-tokenised, lower-cased, space-joined strings; its Java
PTB tokenizer is not used. nltk is imported inside the two BLEU functions: its import is slow
(docs/performance.md), paid only where BLEU is computed.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge


def bleu4_per_image(references: list[list[list[str]]], hypotheses: list[list[str]]) -> list[float]:
    """references[i]: image i's reference token lists; hypotheses[i]: its generated tokens."""
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "0 counts of n-gram overlaps": expected
        return [float(sentence_bleu(refs, hyp)) for refs, hyp in zip(references, hypotheses)]


def bleu4(references, hypotheses) -> float:
    """The study's BLEU-4: mean over images of nltk sentence_bleu (see the module's doc)."""
    return float(np.mean(bleu4_per_image(references, hypotheses)))


def corpus_bleu(references, hypotheses) -> dict:
    """{"bleu1": ..., "bleu4": ...}: nltk corpus_bleu with weights 1/n for n = 1..N."""
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for n in range(1, 5):
            out[f"bleu{n}"] = float(nltk_corpus_bleu(references, hypotheses, weights=(1.0 / n,) * n))
    return out


def _coco_inputs(references, hypotheses):
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    # an empty hypothesis would be "" -> one empty token; coco scorers accept it
    res = {i: [" ".join(hyp)] for i, hyp in enumerate(hypotheses)}
    return gts, res


def rouge_l(references, hypotheses) -> float:
    score, _ = Rouge().compute_score(*_coco_inputs(references, hypotheses))
    return float(score)


def cider(references, hypotheses) -> float:
    score, _ = Cider().compute_score(*_coco_inputs(references, hypotheses))
    return float(score)


def cider_per_image(references, hypotheses) -> list[float]:
    """Each image's CIDEr-D, idf over all the evaluated images' references as in `cider`
    (whose score is these values' mean): what a paired bootstrap over images resamples."""
    _, scores = Cider().compute_score(*_coco_inputs(references, hypotheses))
    return [float(s) for s in scores]


def coco_bleu(references, hypotheses) -> dict:
    """{"bleu1": ..., "bleu4": ...}: pycocoevalcap's Bleu(4) on our lower-cased tokens."""
    scores, _ = Bleu(4).compute_score(*_coco_inputs(references, hypotheses), verbose=0)
    return {f"bleu{n}": float(score) for n, score in enumerate(scores, start=1)}


def outer_ring(grid) -> np.ndarray:
    """grid (H', W') -> bool [H' * W'], row-major like the region features: True on rows 0
    and H'-1 and columns 0 and W'-1 (60 of 256 regions on a 16x16 grid)."""
    rows, cols = grid
    ring = np.zeros((rows, cols), dtype=bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return ring.reshape(-1)


def border_mass(alphas: list[np.ndarray], grid) -> dict:
    """alphas: per caption the attention [S, R] of its generated tokens (words and <end>).

    -> border_mass: mean over all generated tokens of the share of the token's attention on
    the outer ring (each token's weights over the image renormalised to 1 first, so a
    sentinel's weight does not count); border_area_share: the ring's share of the regions
    (what uniform attention would give); border_ratio: the two's ratio; attention_peak: mean
    over tokens of the largest weight times R (1 for uniform attention, R for one region);
    attention_entropy: mean over tokens of the map's entropy over log R (1 for uniform, 0 for
    one region); attention_shift: mean over captions of the mean total-variation distance
    between each token's map and the caption's mean map (0 when every word of a caption
    looks at the same place, whatever it names); sentinel_weight: mean weight not on the
    image (0 without a sentinel); tokens: how many were averaged. A flat map can leave the ring (ratio near 1) without
    looking anywhere: the peak and the entropy tell the two apart, and a map peaked on one
    fixed place shows as a shift near 0."""
    weights = np.concatenate([np.asarray(a, dtype=np.float64) for a in alphas], axis=0)  # [N, R]
    ring = outer_ring(grid)
    on_image = weights.sum(axis=1)
    maps = weights / np.maximum(on_image, 1e-12)[:, None]                               # rows sum to 1
    share = maps[:, ring].sum(axis=1)
    area = float(ring.mean())
    mass = float(share.mean())
    regions = weights.shape[1]
    entropy = -(maps * np.log(np.maximum(maps, 1e-300))).sum(axis=1) / max(np.log(regions), 1e-12)
    return {"border_mass": mass, "border_area_share": area, "border_ratio": mass / area,
            "attention_peak": float(maps.max(axis=1).mean() * regions),
            "attention_entropy": float(entropy.mean()),
            "attention_shift": float(np.mean([_shift(m) for m in np.split(maps, np.cumsum(
                [len(a) for a in alphas])[:-1])])),
            "sentinel_weight": float(np.mean(1.0 - on_image)), "tokens": int(len(share))}


def _shift(maps: np.ndarray) -> float:
    """maps [S, R] of one caption, rows summing to 1 -> mean total-variation distance of
    each row from their mean."""
    return float(0.5 * np.abs(maps - maps.mean(axis=0)).sum(axis=1).mean())


class MeteorScorer:
    """METEOR 1.5 through one Java process, started on the first score (starting one takes
    seconds) and kept for the later ones; `close` (or the end of a `with` block) stops it.
    score() is None when Java is absent or the scorer fails: METEOR is optional."""

    def __init__(self):
        self._process = None

    def score(self, references, hypotheses) -> float | None:
        if shutil.which("java") is None:
            return None
        try:
            if self._process is None:
                self._process = Meteor()
            value, _ = self._process.compute_score(*_coco_inputs(references, hypotheses))
            return float(value)
        except Exception:  # a broken Java install must not lose a finished training run
            self.close()  # a scorer in an unknown state is not reused
            return None

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.meteor_p.kill()
            process.meteor_p.wait()
            for stream in (process.meteor_p.stdin, process.meteor_p.stdout, process.meteor_p.stderr):
                stream.close()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def all_metrics(references, hypotheses, meteor: MeteorScorer | None = None) -> dict:
    """Every metric of one set of captions, each scorer run once: the study's bleu4 and its
    per-image values, corpus BLEU, CIDEr-D and its per-image values, ROUGE-L, METEOR (by
    `meteor`; None without Java) and under "coco" the coco-caption set papers report
    (BLEU-1..4, CIDEr-D, ROUGE-L, METEOR; meteor None without a scorer)."""
    bleu4_images = bleu4_per_image(references, hypotheses)
    cider_images = cider_per_image(references, hypotheses)
    out = {"bleu4": float(np.mean(bleu4_images)), "bleu4_per_image": bleu4_images,
           "corpus_bleu": corpus_bleu(references, hypotheses),
           "cider": float(np.mean(cider_images)), "cider_per_image": cider_images,
           "rouge_l": rouge_l(references, hypotheses)}
    if meteor is not None:
        out["meteor"] = meteor.score(references, hypotheses)
    out["coco"] = {**coco_bleu(references, hypotheses), "cider": out["cider"], "rouge_l": out["rouge_l"],
                   "meteor": out.get("meteor")}
    return out


def specificity(captions: list[str], training: set[str], references: list[list[list[str]]]) -> dict:
    """How specific a set of test captions is (van Miltenburg et al., "Measuring the Diversity
    of Automatic Image Descriptions", COLING 2018): distinct captions per test image, the share
    of captions that are a training caption word for word (`training`: the training captions'
    tokens joined by spaces, as `captions` are), words used, mean length in tokens, and the
    references' mean length and vocabulary beside them."""
    words = [c.split() for c in captions]
    refs = [r for refs in references for r in refs]
    return {"distinct_per_image": len(set(captions)) / len(captions),
            "copied_from_training": sum(c in training for c in captions) / len(captions),
            "vocabulary": len({w for c in words for w in c}),
            "length_mean": float(np.mean([len(c) for c in words])),
            "references_length_mean": float(np.mean([len(r) for r in refs])),
            "references_vocabulary": len({w for r in refs for w in r})}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return mean, std


def paired_bootstrap(a: list[float], b: list[float], samples: int = 10000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Paired bootstrap over images of mean(b - a): resample images with replacement.

    a, b: per-image scores of two systems on the same images. Returns the observed
    difference, the percentile interval at `level`, and the share of resamples where the
    difference is <= 0 (a one-sided bootstrap p-value for "b beats a")."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "level": level, "samples": samples, "p_not_better": float(np.mean(means <= 0)),
            "images": int(len(diff))}

