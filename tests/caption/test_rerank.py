"""Consensus reranking: neighbours by global feature, the candidate the neighbours' captions
agree with, and its use in scoring a run's test captions."""

import numpy as np
import pytest
import torch

from convattn.caption import run
from convattn.caption.checkpoint import load_decoder
from convattn.caption.data import Data
from convattn.caption.decoders import build_decoder
from convattn.caption.encoders import EncoderSpec
from convattn.caption.inference import caption_split
from convattn.caption.presets import PRESETS
from convattn.caption.rerank import ConsensusReranker, pick, reranker_for
from convattn.caption.search import beam_search
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset

SMALL = PRESETS["smoke"].replace(embed_dim=8, hidden_dim=16, attention_dim=8, batch_size=4, meteor=False)


@pytest.fixture(scope="module")
def tiny(tiny_data):
    dataset = load_dataset(tiny_data)
    features = np.random.default_rng(0).standard_normal((len(dataset.images), 4, 16)).astype(np.float16)
    return Data(dataset, features, (2, 2), torch.device("cpu"))


def test_a_training_image_is_its_own_nearest_neighbour(tiny):
    reranker = ConsensusReranker.from_data(tiny, neighbours=3)
    train = tiny.dataset.split("train")
    near = reranker.nearest(tiny.image_features(train))
    assert [row[0] for row in near] == list(range(len(train)))
    assert all(len(row) == 3 and len(set(row)) == 3 for row in near)


def test_the_candidate_the_neighbours_agree_with_wins(tiny):
    reranker = ConsensusReranker.from_data(tiny, neighbours=1)
    train = tiny.dataset.split("train")
    image = train[2]
    features = tiny.image_features([image])
    own = image.captions[0]
    other = next(c for im in train for c in im.captions if im is not image and c != own)
    # the image's own reference beats another image's caption and nonsense, wherever it stands
    def choose(candidates):
        return [pick(s) for s in reranker.scores(features, [candidates])]

    assert choose([other, ["zzz"], own]) == [2]
    assert choose([own, other]) == [0]
    # a tie keeps the beam's order
    assert choose([["zzz"], ["yyy"]]) == [0]


def test_reranked_captions_are_beam_hypotheses(tiny):
    torch.manual_seed(0)
    decoder = build_decoder("attention", len(tiny.vocab), tiny.feature_dim, SMALL, tiny.grid).eval()
    reranker = reranker_for(tiny, 2)
    assert reranker_for(tiny, 2) is reranker and reranker_for(tiny, 0) is None
    words, alphas = caption_split(decoder, tiny, "test", tiny.max_len, beam=3, with_alphas=True,
                                  reranker=reranker)
    hyps = beam_search(decoder, tiny.image_features(tiny.splits["test"]), tiny.max_len, 3, tiny.grid)
    for w, a, image in zip(words, alphas, hyps):
        options = [tiny.vocab.decode(h["ids"].tolist()) for h in image]
        assert w in options
        assert a.shape[0] == len(image[options.index(w)]["ids"])


def test_a_run_scores_its_reranked_captions(tiny, tmp_path):
    config = SMALL.replace(epochs=1, beam=3, rerank=2)
    spec = EncoderSpec("efficientnet-lite0", "blocks", 64, None)
    result = run.train_run("attention", 42, tiny, config, spec, tmp_path, torch.device("cpu"), quiet=True)
    decoder, _ = load_decoder(run.run_dir(tmp_path, "blocks", "attention", 42) / "model.pt", "cpu")
    expected = caption_split(decoder, tiny, "test", tiny.max_len, 3, reranker=reranker_for(tiny, 2))
    assert [result.captions[im.name] for im in tiny.splits["test"]] == [" ".join(w) for w in expected]


def test_rerank_needs_a_beam():
    with pytest.raises(UserError, match="--rerank"):
        SMALL.replace(rerank=5, beam=1)
    with pytest.raises(UserError, match="--rerank"):
        SMALL.replace(rerank=-1, beam=3)
    assert PRESETS["homework"].rerank == 0


def test_caption_features_answers_with_typed_hypotheses(tiny):
    """inference.caption_features, the path of runs, predict and serve: greedy gives one
    hypothesis; beam search the beam's, best first; a reranker chooses the one with the
    highest consensus and records each one's mean CIDEr-D against the neighbours."""
    from convattn.caption.search import greedy
    from convattn.caption.inference import caption_features
    from convattn.data.captions import END_ID

    torch.manual_seed(0)
    decoder = build_decoder("attention", len(tiny.vocab), tiny.feature_dim, SMALL, tiny.grid).eval()
    features = tiny.image_features(tiny.splits["test"])
    ids, _ = greedy(decoder, features, tiny.max_len, tiny.grid)
    for row, c in zip(ids.tolist(), caption_features(decoder, features, tiny.max_len, 1, tiny.grid, tiny.vocab)):
        [h] = c.hypotheses
        assert c.best is h and h.ids == (row[:row.index(END_ID) + 1] if END_ID in row else row)
        assert h.ended == (END_ID in row) and h.alphas.shape == (len(h.ids), features.shape[1])
    plain = caption_features(decoder, features, tiny.max_len, 3, tiny.grid, tiny.vocab)
    reranker = reranker_for(tiny, 2)
    reranked = caption_features(decoder, features, tiny.max_len, 3, tiny.grid, tiny.vocab, reranker)
    for i, (p, r) in enumerate(zip(plain, reranked)):
        assert p.chosen == 0 and all(h.consensus is None for h in p.hypotheses)
        assert [h.ids for h in p.hypotheses] == [h.ids for h in r.hypotheses]
        consensus = [h.consensus for h in r.hypotheses]
        assert r.chosen == pick(consensus)
        words = [tiny.vocab.decode(h.ids) for h in r.hypotheses]
        [summed] = reranker.scores(features[i:i + 1], [words])
        assert consensus == pytest.approx([s / 2 for s in summed], rel=1e-12)
