"""beam_search_all: the top hypotheses with their scores, consistent with beam_search."""

import pytest
import torch

from convattn.caption.decode import beam_search, beam_search_all, greedy
from convattn.caption.decoders import DecoderWithAttention, DecoderWithoutAttention
from convattn.data.captions import END_ID

B, R, C, V = 4, 6, 16, 12


def make(cls, seed=0):
    torch.manual_seed(seed)
    return cls(vocab_size=V, feature_dim=C, embed_dim=8, hidden_dim=10).eval()


def cut(ids):
    ids = ids.tolist()
    return ids[:ids.index(END_ID) + 1] if END_ID in ids else ids


@pytest.mark.parametrize("cls", [DecoderWithoutAttention, DecoderWithAttention])
@pytest.mark.parametrize("beam", [1, 3])
def test_first_hypothesis_is_beam_search_answer(cls, beam):
    dec = make(cls)
    with torch.no_grad():
        dec.fc.bias[END_ID] += 1.0  # some captions end early, others run to max_steps
    feats = torch.randn(B, R, C, generator=torch.Generator().manual_seed(1))
    ids, alphas = beam_search(dec, feats, max_steps=7, beam=beam)
    every = beam_search_all(dec, feats, max_steps=7, beam=beam)
    assert len(every) == B
    for b, hyps in enumerate(every):
        assert 1 <= len(hyps) <= beam
        assert hyps[0]["ids"].tolist() == cut(ids[b])
        if alphas is not None:
            n = len(hyps[0]["ids"])
            torch.testing.assert_close(hyps[0]["alphas"], alphas[b, :n])
            assert hyps[0]["alphas"].shape == (n, R)
        else:
            assert hyps[0]["alphas"] is None


def test_hypotheses_sorted_and_scored_as_mean_log_probability():
    dec = make(DecoderWithoutAttention, seed=3)
    feats = torch.randn(1, R, C)
    hyps = beam_search_all(dec, feats, max_steps=6, beam=4)[0]
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
    for b, hyps in enumerate(beam_search_all(dec, feats, max_steps=8, beam=1)):
        assert hyps[0]["ids"].tolist() == cut(ids[b])
