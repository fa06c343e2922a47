import pytest
import torch

from convattn.caption.decoders import MODELS, build_decoder
from convattn.caption.presets import HOMEWORK
from convattn.caption.search import beam_search, greedy, reorder_state
from convattn.data.captions import END_ID, PAD_ID

B, R, C, V = 5, 4, 16, 12
# small sizes for every decoder (R = 4: a 2x2 grid); the rest as the study's
SMALL = HOMEWORK.replace(embed_dim=8, hidden_dim=10, attention_dim=8, model_dim=16, layers=2, heads=2)


def make(model: str, seed=0):
    """The registry's decoder `model` (decoders.MODELS), small, in eval mode."""
    torch.manual_seed(seed)
    return build_decoder(model, V, C, SMALL).eval()


# every registered decoder: a new one is searched by these tests without being named here
DECODERS = list(MODELS)


def best(hyps_per_image):
    """beam_search's answer per image: the first hypothesis' ids, as a list."""
    return [hyps[0]["ids"].tolist() for hyps in hyps_per_image]


def sequences(ids):
    """Rows as lists, cut after <end>."""
    out = []
    for row in ids.tolist():
        out.append(row[:row.index(END_ID) + 1] if END_ID in row else [t for t in row if t != PAD_ID])
    return out


@pytest.mark.parametrize("model", DECODERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_is_greedy(model, seed):
    dec = make(model, seed)
    # bias <end> so that some captions end early and others run to max_steps
    with torch.no_grad():
        dec.fc.bias[END_ID] += 1.0
    feats = torch.randn(B, R, C, generator=torch.Generator().manual_seed(seed))
    g_ids, g_alpha = greedy(dec, feats, max_steps=9)
    hyps = beam_search(dec, feats, max_steps=9, beam=1)
    assert sequences(g_ids) == best(hyps)
    for b, seq in enumerate(sequences(g_ids)):
        if g_alpha is None:
            assert hyps[b][0]["alphas"] is None
        else:
            torch.testing.assert_close(g_alpha[b, :len(seq)], hyps[b][0]["alphas"])


@pytest.mark.parametrize("model", DECODERS)
def test_batched_greedy_equals_one_image_at_a_time(model):
    dec = make(model)
    feats = torch.randn(B, R, C)
    ids, _ = greedy(dec, feats, max_steps=8)
    single = [sequences(greedy(dec, feats[b:b + 1], max_steps=8)[0])[0] for b in range(B)]
    assert sequences(ids) == single


def test_beam_never_fails_when_no_beam_ends():
    dec = make("attention")
    with torch.no_grad():
        dec.fc.bias[END_ID] = -1e4  # <end> is never among the candidates
    hyps = beam_search(dec, torch.randn(B, R, C), max_steps=6, beam=3)
    for image in hyps:
        assert len(image) == 3 and not any(h["ended"] for h in image)
        ids, alphas = image[0]["ids"], image[0]["alphas"]
        assert ids.shape == (6,) and (ids != END_ID).all() and (ids != PAD_ID).all()
        assert alphas.shape == (6, R)


def test_beam_search_prefers_the_higher_scoring_caption():
    """A hand-made decoder where greedy's first word leads to poor continuations: beam
    search with K=2 must find the better two-word caption."""
    dec = make("no_attention")
    probs = {  # previous word -> probabilities of the next words (others ~0)
        1: {4: 0.55, 5: 0.45},           # <start>: 4 looks best
        4: {6: 0.34, 7: 0.33, 8: 0.33},  # but nothing follows 4 with confidence
        5: {END_ID: 0.95, 6: 0.05},      # while <end> almost surely follows 5
    }
    # greedy: 4 6 <end>, log p = log .55 + log .34 = -1.68; beam: 5 <end>, log .45 + log .95 = -0.85

    def step(words, state, memory):
        out = torch.full((len(words), V), -30.0)
        for i, w in enumerate(words.tolist()):
            for nxt, p in probs.get(w, {END_ID: 1.0}).items():
                out[i, nxt] = torch.tensor(p).log()
        return out, state, None

    dec.step = step
    feats = torch.randn(2, R, C)
    g, _ = greedy(dec, feats, max_steps=5)
    b = best(beam_search(dec, feats, max_steps=5, beam=2))
    assert sequences(g)[0] == [4, 6, END_ID]
    assert b[0] == [5, END_ID]


def test_reorder_state_indexes_every_tensor():
    h, c = torch.arange(6.0).reshape(3, 2), torch.arange(3.0)
    index = torch.tensor([2, 2, 0])
    nested = reorder_state(((h, c), [c], {"k": h}), index)
    assert nested[0][0].tolist() == [[4, 5], [4, 5], [0, 1]] and nested[1][0].tolist() == [2, 2, 0]
    assert nested[2]["k"].tolist() == nested[0][0].tolist() and type(nested[1]) is list


def test_transformer_beam_search_keeps_each_hypothesis_cache():
    """Beam search reorders the key/value caches with the hypotheses: every returned caption,
    scored again by teacher forcing, has the log probability the search gave it."""
    dec = make("transformer")
    with torch.no_grad():
        dec.fc.bias[END_ID] += 1.0  # some end early; without reordering the caches this fails
    feats = torch.randn(4, R, C, generator=torch.Generator().manual_seed(3))
    for b, hyps in enumerate(beam_search(dec, feats, max_steps=7, beam=3)):
        for hyp in hyps:
            caption = torch.cat([torch.tensor([1]), hyp["ids"]])[None]        # <start> + ids
            with torch.no_grad():
                logits, alphas = dec(feats[b:b + 1], torch.cat([caption, caption[:, :1]], dim=1))
            logp = logits[0, :len(hyp["ids"])].log_softmax(-1).gather(1, hyp["ids"][:, None]).sum()
            # tolerance basis: the beam's log-probability summed step by step against one
            # teacher-forced pass (other matmul shapes, other summation order): float32
            # rounding of a sum of <= 7 terms of size ~3: about 1e-6 expected
            assert hyp["score"] * len(hyp["ids"]) == pytest.approx(logp.item(), abs=1e-4)
            torch.testing.assert_close(hyp["alphas"], alphas[0, :len(hyp["ids"])], rtol=1e-4, atol=1e-6)
