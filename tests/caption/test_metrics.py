import math
import shutil

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


def test_cider_per_image_averages_to_cider():
    dog = "a dog in the park".split()
    refs = [[REF, REF], [dog, dog], ["two birds on a wire".split()] * 2]
    hyps = [REF, "a cat in the park".split(), "a dog on the mat".split()]
    scores = metrics.cider_per_image(refs, hyps)
    assert len(scores) == 3 and np.mean(scores) == pytest.approx(metrics.cider(refs, hyps))
    # the exact caption beats the one-word-off caption, which beats the unrelated one
    assert scores[0] > scores[1] > scores[2] >= 0.0


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


def test_border_mass_on_hand_made_attention():
    grid = (16, 16)
    assert metrics.outer_ring(grid).sum() == 60
    corner = np.zeros((3, 256))
    corner[:, 0] = 1.0                               # every word on the top-left region
    out = metrics.border_mass([corner], grid)
    assert out["border_mass"] == pytest.approx(1.0) and out["tokens"] == 3
    assert out["border_area_share"] == pytest.approx(60 / 256)
    assert out["border_ratio"] == pytest.approx(256 / 60)
    uniform = np.full((4, 256), 1 / 256)
    assert metrics.border_mass([uniform], grid)["border_mass"] == pytest.approx(60 / 256)
    centre = np.zeros((1, 256))
    centre[0, 8 * 16 + 8] = 1.0
    # averaged over all words of all captions: 3 words on the corner, 1 in the centre
    assert metrics.border_mass([corner, centre], grid)["border_mass"] == pytest.approx(0.75)
    assert metrics.border_mass([corner], grid)["sentinel_weight"] == pytest.approx(0.0)


def test_peak_and_entropy_tell_a_flat_map_from_a_grounded_one():
    """Both maps below leave the ring alone; only the grounded one looks somewhere."""
    grid, R = (4, 4), 16
    inner = ~metrics.outer_ring(grid)
    flat = np.zeros((2, R))
    flat[:, inner] = 1 / 4                           # spread evenly over the 4 inner regions
    grounded = np.zeros((2, R))
    grounded[:, np.flatnonzero(inner)[0]] = 1.0      # one inner region
    uniform = np.full((2, R), 1 / R)
    f, g, u = (metrics.border_mass([a], grid) for a in (flat, grounded, uniform))
    assert f["border_mass"] == g["border_mass"] == 0.0
    assert g["attention_peak"] == pytest.approx(R) and f["attention_peak"] == pytest.approx(R / 4)
    assert u["attention_peak"] == pytest.approx(1.0)
    assert g["attention_entropy"] == pytest.approx(0.0, abs=1e-9) and u["attention_entropy"] == pytest.approx(1.0)
    assert f["attention_entropy"] == pytest.approx(np.log(4) / np.log(R))


def test_shift_tells_a_map_that_follows_the_words_from_a_fixed_one():
    """Two one-region captions: one whose words look at four different regions, one whose
    words all look at the same region (a peaked map that names nothing)."""
    grid, R = (4, 4), 16
    moving = np.eye(R)[[5, 6, 9, 10]]               # 4 words, 4 regions
    fixed = np.eye(R)[[5, 5, 5, 5]]
    m, f = (metrics.border_mass([a], grid) for a in (moving, fixed))
    assert m["attention_peak"] == f["attention_peak"] == pytest.approx(R)
    assert f["attention_shift"] == pytest.approx(0.0)
    assert m["attention_shift"] == pytest.approx(0.75)  # each word's map is 3/4 away from the mean
    # captions are averaged as captions: the mean of the two, not of their 8 words' pooled maps
    assert metrics.border_mass([moving, fixed], grid)["attention_shift"] == pytest.approx(0.375)


def test_border_mass_leaves_the_sentinel_out():
    # half the weight on the sentinel, the other half split between a corner and the centre
    alpha = np.zeros((1, 9))
    alpha[0, 0], alpha[0, 4] = 0.25, 0.25            # 3x3 grid: region 4 is the only inner one
    out = metrics.border_mass([alpha], (3, 3))
    assert out["border_mass"] == pytest.approx(0.5) and out["sentinel_weight"] == pytest.approx(0.5)
    assert out["border_area_share"] == pytest.approx(8 / 9)


def test_coco_metrics():
    refs = [[REF, "a cat sits on the mat".split()], [["a", "dog", "runs"]]]
    perfect = metrics.all_metrics(refs, [REF, ["a", "dog", "runs"]])["coco"]
    assert set(perfect) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l", "meteor"}
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["meteor"] is None
    worse = metrics.coco_bleu(refs, ["the cat is on a rug".split(), ["a", "dog"]])
    assert 0 < worse["bleu4"] < worse["bleu3"] < worse["bleu2"] < worse["bleu1"] < 1


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java on PATH")
def test_meteor_scorer_is_reused_and_gives_the_same_score_each_time():
    refs = [[["a", "river", "with", "green", "waters"], ["a", "green", "river"]]]
    good, bad = [["a", "green", "river"]], [["many", "white", "buildings"]]
    with metrics.MeteorScorer() as meteor:
        first = meteor.score(refs, good)
        process = meteor._process
        assert first is not None and meteor.score(refs, bad) < first
        assert meteor.score(refs, good) == first and meteor._process is process
    assert meteor._process is None and process.meteor_p.poll() is not None  # stopped with the block
    assert metrics.all_metrics(refs, good)["coco"]["meteor"] is None  # no scorer, no METEOR
