"""beam_search: the top hypotheses with their scores."""

import pytest
import torch

from convattn.caption.decoders import DecoderWithAttention, DecoderWithoutAttention
from convattn.caption.search import beam_search, greedy
from convattn.data.captions import END_ID

B, R, C, V = 4, 6, 16, 12


def make(cls, seed=0):
    torch.manual_seed(seed)
    return cls(vocab_size=V, feature_dim=C, embed_dim=8, hidden_dim=10).eval()


def cut(ids):
    ids = ids.tolist()
    return ids[:ids.index(END_ID) + 1] if END_ID in ids else ids


def test_hypotheses_sorted_and_scored_as_mean_log_probability():
    dec = make(DecoderWithoutAttention, seed=3)
    feats = torch.randn(1, R, C)
    hyps = beam_search(dec, feats, max_steps=6, beam=4)[0]
    ended = [h for h in hyps if h["ended"]]
    assert [h["score"] for h in ended] == sorted((h["score"] for h in ended), reverse=True)
    # recompute each hypothesis' score by feeding its words back: mean log p per token
    for h in hyps:
        memory = dec.prepare(feats)
        state = dec.init_state(memory)
        words, total = torch.tensor([1]), 0.0
        for w in h["ids"].tolist():
            logits, state, _ = dec.step(words, state, memory)
            total += logits.log_softmax(-1)[0, w].item()
            words = torch.tensor([w])
        assert h["score"] == pytest.approx(total / len(h["ids"]), abs=1e-5)


def test_beam_one_is_greedy():
    dec = make(DecoderWithAttention, seed=2)
    feats = torch.randn(B, R, C)
    ids, _ = greedy(dec, feats, max_steps=8)
    for b, hyps in enumerate(beam_search(dec, feats, max_steps=8, beam=1)):
        assert hyps[0]["ids"].tolist() == cut(ids[b])
