import math

import numpy as np
import pytest

from convattn.caption import metrics

REF = "the cat is on the mat".split()


def test_bleu4_perfect_and_hand_computed():
    assert metrics.bleu4([[REF]], [REF]) == pytest.approx(1.0)
    # hyp "the cat is on a mat": clipped precisions 5/6, 3/5, 2/4, 1/3; same length: BP 1
    hyp = "the cat is on a mat".split()
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert metrics.bleu4([[REF]], [hyp]) == pytest.approx(expected)  # 0.5373
    # a second image without any 4-gram match scores 0 (nltk returns ~1e-231 for this one),
    # and the metric is the plain mean
    other = "a dog runs in the park today".split()
    assert metrics.bleu4_per_image([[REF], [REF]], [hyp, other])[1] == pytest.approx(0.0, abs=1e-12)
    assert metrics.bleu4([[REF], [REF]], [hyp, other]) == pytest.approx(expected / 2)


def test_bleu4_brevity_penalty_and_multiple_references():
    # hyp of 5 words, all 4 n-gram orders fully matched by reference 1 (length 6),
    # closest reference length 6 > 5 -> BP = exp(1 - 6/5)
    hyp = "the cat is on the".split()
    refs = [REF, "there is a cat on the mat".split()]
    assert metrics.bleu4([refs], [hyp]) == pytest.approx(math.exp(1 - 6 / 5))


def test_corpus_bleu_differs_from_mean_sentence_bleu():
    hyp = "the cat is on a mat".split()
    other = "a dog runs in the park today".split()
    refs = [[REF], [REF]]
    cb = metrics.corpus_bleu(refs, [hyp, other])
    # corpus counts: 1-grams 5+1 of 13 ("the" of the second matches once), so positive
    # 4-gram precision 1/(3+4); BP exp(1 - 12/13) < 1 is not applied (13 > 12)
    p = [6 / 13, 3 / 11, 2 / 9, 1 / 7]
    assert cb["bleu4"] == pytest.approx(math.exp(sum(math.log(x) for x in p) / 4))
    assert cb["bleu1"] == pytest.approx(6 / 13)
    # the study's mean of sentence BLEU-4 is (p1 p2 p3 p4)^(1/4) / 2 here: another number
    assert metrics.bleu4(refs, [hyp, other]) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25 / 2)
    assert abs(cb["bleu4"] - metrics.bleu4(refs, [hyp, other])) > 0.01


def test_rouge_l_hand_computed():
    # LCS("a b c d", "a c d e") = 3 -> P = R = 3/4 -> F_beta = 3/4 for any beta
    assert metrics.rouge_l([[["a", "c", "d", "e"]]], [["a", "b", "c", "d"]]) == pytest.approx(0.75)
    # P = 3/3, R = 3/6, beta 1.2: (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2 ** 2
    expected = (1 + b2) * 1.0 * 0.5 / (0.5 + b2 * 1.0)
    assert metrics.rouge_l([[REF]], [["the", "cat", "mat"]]) == pytest.approx(expected)


def test_cider_rewards_consensus():
    refs = [[REF, REF], ["a dog in the park".split()] * 2]
    good = metrics.cider(refs, [REF, "a dog in the park".split()])
    bad = metrics.cider(refs, ["a dog in the park".split(), REF])
    assert good > 1.0 > bad >= 0.0


def test_paired_bootstrap():
    a = np.linspace(0.2, 0.8, 40)
    same = metrics.paired_bootstrap(a, a, samples=500)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0
    shifted = metrics.paired_bootstrap(a, a + 0.1, samples=500)
    assert shifted["ci_low"] == pytest.approx(0.1) and shifted["ci_high"] == pytest.approx(0.1)
    noisy = metrics.paired_bootstrap(a, a + np.random.default_rng(0).normal(0.05, 0.2, 40), samples=2000)
    assert noisy["ci_low"] < noisy["difference"] < noisy["ci_high"]


def test_mean_std_uses_sample_std():
    assert metrics.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert metrics.mean_std([0.5]) == (0.5, 0.0)
