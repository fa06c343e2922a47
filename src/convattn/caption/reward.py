"""CIDEr-D against a fixed corpus of references: the reward of self-critical training.

    scorer = CiderD(references)          # references[i]: image i's reference token lists
    scorer.scores(images, captions)      # -> float64 [len(captions)], caption j scored
                                         #    against the references of image images[j]

The formula is pycocoevalcap's `CiderScorer` (what `metrics.cider` reports, which is
CIDEr-D): n-grams n = 1..4; each n-gram weighted tf * idf with idf = log(N) - log(max(1,
df)), N the number of images and df the number of images whose references contain it; per
n the cosine of the candidate's and one reference's vectors, with the candidate's weights
clipped at the reference's; a Gaussian length penalty exp(-delta^2 / (2 sigma^2)), sigma =
6, delta the difference of the two captions' bigram counts (pycocoevalcap's "length" is
its bigram count, kept here so the numbers agree); mean over n, mean over references, x10.

The difference from `metrics.cider`: the document frequencies come from the corpus given
here once (for training, the training images' references) and not from the images being
scored, so a reward does not depend on which images share its batch. Every reference's
tf-idf vector and norms are computed once in the constructor; scoring a caption is then
one pass over its n-grams per reference, in pure Python (its cost on Sydney's training
references: docs/performance.md).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

NGRAMS = 4
SIGMA = 6.0


def ngram_counts(tokens: list[str], n: int = NGRAMS) -> Counter:
    """tokens -> Counter of every k-gram (a tuple of k tokens), k = 1..n."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i:i + k])] += 1
    return counts


class CiderD:
    """CIDEr-D of candidate captions against per-image references, with the document
    frequencies of those references (see the module doc)."""

    def __init__(self, references: list[list[list[str]]], n: int = NGRAMS, sigma: float = SIGMA):
        self.n, self.sigma = n, sigma
        counts = [[ngram_counts(ref, n) for ref in refs] for refs in references]
        df = defaultdict(int)
        for refs in counts:  # one document per image: its references' n-grams, each once
            for gram in {g for ref in refs for g in ref}:
                df[gram] += 1
        self.log_images = math.log(float(len(references)))
        self.df = dict(df)
        # per image, per reference: (tf-idf weights {ngram: w}, norms [n], bigram count)
        self.references = [[self._vector(ref) for ref in refs] for refs in counts]

    def _idf(self, gram: tuple) -> float:
        return self.log_images - math.log(max(1.0, self.df.get(gram, 0.0)))

    def _vector(self, counts: Counter) -> tuple[dict, list[float], int]:
        """n-gram counts -> ({ngram: tf * idf}, per-n L2 norms, number of bigrams)."""
        weights, squares = {}, [0.0] * self.n
        for gram, tf in counts.items():
            w = float(tf) * self._idf(gram)
            weights[gram] = w
            squares[len(gram) - 1] += w * w
        bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return weights, [math.sqrt(s) for s in squares], bigrams

    def vector(self, caption: list[str]) -> tuple[dict, list[float], int]:
        """A caption's tf-idf vector (`_vector`), to score against many images' references
        (`score_vector`) without recomputing it."""
        return self._vector(ngram_counts(caption, self.n))

    def score(self, image: int, caption: list[str]) -> float:
        """CIDEr-D of one caption (token list) against the references of image `image`."""
        return self.score_vector(image, self.vector(caption))

    def score_vector(self, image: int, vector: tuple[dict, list[float], int]) -> float:
        """CIDEr-D of a caption's `vector` against the references of image `image`."""
        weights, norms, length = vector
        order = {gram: i for i, gram in enumerate(weights)}
        refs = self.references[image]
        total = [0.0] * self.n
        for ref_weights, ref_norms, ref_length in refs:
            val = [0.0] * self.n
            # the shared n-grams (a C-level set intersection), summed in the caption's order
            for gram in sorted(weights.keys() & ref_weights.keys(), key=order.__getitem__):
                w, r = weights[gram], ref_weights[gram]
                val[len(gram) - 1] += min(w, r) * r  # the candidate's weight clipped at the reference's
            penalty = math.e ** (-(float(length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                if norms[k] != 0 and ref_norms[k] != 0:
                    val[k] /= norms[k] * ref_norms[k]
                total[k] += val[k] * penalty
        return sum(total) / self.n / len(refs) * 10.0

    def scores(self, images, captions: list[list[str]]) -> np.ndarray:
        """images [M] (positions in the references), captions: M token lists -> float64 [M]."""
        return np.array([self.score(int(i), c) for i, c in zip(images, captions)], dtype=np.float64)


class PairwiseCiderD:
    """CIDEr-D between captions of one corpus, many pairs at once: `matrix(ids)` scores every
    caption of `ids` against every other, as `CiderD(...).score` scores a caption against a
    single reference (same idf from the same per-image references, same clipping and length
    penalty), with numpy instead of a Python loop per pair: what consensus retrieval over the
    captions of k nearest training images needs (caption/reference.py; k = 50 is 250 x 250
    pairs per image).

    The clipped product sum over n-grams of min(w_c, w_r) * w_r, with w = tf * idf, is
    sum over t >= 1 of [tf_c >= t] . ([tf_r >= t] tf_r idf^2): a few matrix products, one
    per count level t."""

    def __init__(self, references: list[list[list[str]]], n: int = NGRAMS, sigma: float = SIGMA):
        self.n, self.sigma = n, sigma
        counts = [[ngram_counts(ref, n) for ref in refs] for refs in references]
        df = defaultdict(int)
        for refs in counts:
            for gram in {g for ref in refs for g in ref}:
                df[gram] += 1
        # gram ids grouped by order (all unigrams, then bigrams, ...): columns sort by n
        grams = sorted(df, key=lambda g: (len(g), g))
        self.gram_id = {g: i for i, g in enumerate(grams)}
        self.order_start = np.searchsorted(np.array([len(g) for g in grams]), np.arange(1, n + 2))
        idf = math.log(float(len(references))) - np.log(np.maximum(1.0, np.array([df[g] for g in grams], float)))
        self.idf2 = idf ** 2
        # each caption's words as an id shared by every caption with the same words
        text_ids, first = {}, []
        for i, caption in enumerate(c for refs in references for c in refs):
            if tuple(caption) not in text_ids:
                text_ids[tuple(caption)] = len(first)
                first.append(i)
        self.text_id = np.array([text_ids[tuple(c)] for refs in references for c in refs])  # [C]
        self.text_first = np.array(first)                                            # [texts]
        self.caption_grams, self.caption_tf = [], []
        for refs in counts:
            for c in refs:
                self.caption_grams.append(np.array([self.gram_id[g] for g in c], dtype=np.int64))
                self.caption_tf.append(np.array(list(c.values()), dtype=np.float64))
        norms = [[0.0] * n for _ in self.caption_grams]
        for i, (ids, tf) in enumerate(zip(self.caption_grams, self.caption_tf)):
            w2 = (tf ** 2) * self.idf2[ids]
            for k in range(n):
                lo, hi = self.order_start[k], self.order_start[k + 1]
                norms[i][k] = math.sqrt(float(w2[(ids >= lo) & (ids < hi)].sum()))
        self.norms = np.array(norms)                                                 # [C, n]
        self.bigrams = np.array([sum(tf for g, tf in c.items() if len(g) == 2)
                                 for refs in counts for c in refs], dtype=np.float64)  # [C]

    def matrix(self, ids) -> np.ndarray:
        """Caption ids (positions in the flattened references, image by image) [Q] ->
        float64 [Q, Q]: entry (i, j) is caption i's CIDEr-D against caption j alone. Captions
        with the same words are scored once (remote-sensing references repeat a lot)."""
        texts, back = np.unique(self.text_id[np.asarray(ids)], return_inverse=True)
        ids = self.text_first[texts]
        grams = [self.caption_grams[i] for i in ids]
        rows = np.repeat(np.arange(len(ids)), [len(g) for g in grams])
        columns, local = np.unique(np.concatenate(grams), return_inverse=True)
        tf = np.zeros((len(ids), len(columns)))
        tf[rows, local] = np.concatenate([self.caption_tf[i] for i in ids])
        # an n-gram of one caption alone adds only to that caption's score against itself,
        # which is known without it (below): the products need the shared n-grams only
        shared = np.count_nonzero(tf, axis=0) >= 2
        tf, columns = tf[:, shared], columns[shared]
        bounds = np.searchsorted(columns, self.order_start)
        weight = tf * self.idf2[columns]
        total = np.zeros((len(ids), len(ids)))
        for k in range(self.n):
            t_k, w_k = tf[:, bounds[k]:bounds[k + 1]], weight[:, bounds[k]:bounds[k + 1]]
            clipped = np.zeros_like(total)
            for t in range(1, int(t_k.max(initial=0)) + 1):
                used = t_k.max(axis=0) >= t  # count levels above 1 touch few n-grams
                at_least = t_k[:, used] >= t
                clipped += at_least.astype(float) @ np.where(at_least, w_k[:, used], 0.0).T
            norm = np.outer(self.norms[ids, k], self.norms[ids, k])
            total += np.divide(clipped, norm, out=np.zeros_like(norm), where=norm != 0)
        gap = self.bigrams[ids][:, None] - self.bigrams[ids][None, :]
        unique = total * np.exp(-gap ** 2 / (2 * self.sigma ** 2)) / self.n * 10.0
        # a caption against itself: cosine 1 for every order it has (a non-zero norm), no length gap
        np.fill_diagonal(unique, (self.norms[ids] > 0).sum(axis=1) / self.n * 10.0)
        return unique[np.ix_(back, back)]
