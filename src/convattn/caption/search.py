"""Free-running decoding, batched over images: greedy, beam search, and sampling (for
self-critical training). Each runs one step for the whole batch at a time: 22 steps decode
all 58 validation images at once instead of 58 x 22 single-image steps. caption/inference.py
is the one caller that turns their output into captions.
"""

from __future__ import annotations

import torch

from convattn.data.captions import END_ID, PAD_ID, START_ID


@torch.no_grad()
def greedy(decoder, features: torch.Tensor, max_steps: int, grid=None):
    """features [B, R, C] -> ids [B, S <= max_steps], alphas [B, S, R] or None.
    At each step the most probable word; a row stops at <end> (later ids are <pad>).
    grid: the features' (H', W') when it may not be the training grid (decoder.prepare)."""
    was_training = decoder.training
    decoder.eval()
    memory = decoder.prepare(features, grid)
    state = decoder.init_state(memory)
    words = torch.full((features.shape[0],), START_ID, dtype=torch.long, device=features.device)
    done = torch.zeros_like(words, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_steps):
        logits, state, alpha = decoder.step(words, state, memory)
        words = logits.argmax(dim=-1).masked_fill(done, PAD_ID)   # [B]
        ids.append(words)
        alphas.append(alpha)
        done |= words == END_ID
        if done.all():
            break
    decoder.train(was_training)
    return torch.stack(ids, dim=1), (torch.stack(alphas, dim=1) if decoder.uses_attention else None)


def reorder_state(state, index: torch.Tensor):
    """A decoder state of batch-first tensors (a tensor, or tuples, lists and dicts of them,
    nested: the LSTMs' (h, c), the Transformer's per-layer key/value caches) with every
    tensor's rows taken in `index` [N] order."""
    if isinstance(state, torch.Tensor):
        return state[index]
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    return type(state)(reorder_state(s, index) for s in state)


@torch.no_grad()
def _search(decoder, features: torch.Tensor, max_steps: int, beam: int, grid=None):
    """The beam search loop.

    -> ended (per image, a list of (length-normalised score, ids [S_i], alphas [S_i, R] or
    None)), scores [B, K] of the live hypotheses (-inf where none), their ids [B*K, S] and
    attention history [B*K, S, R] (None without attention)."""
    was_training = decoder.training
    decoder.eval()
    B, K, device = features.shape[0], beam, features.device
    memory = {k: v.repeat_interleave(K, dim=0) for k, v in decoder.prepare(features, grid).items()}
    state = decoder.init_state(memory)                               # e.g. (h, c) [B*K, H]
    words = torch.full((B * K,), START_ID, dtype=torch.long, device=device)
    # only beam 0 is live at the start: the K copies would otherwise propose the same words
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    seqs = torch.zeros((B * K, 0), dtype=torch.long, device=device)  # [B*K, t]
    hist = None                                                      # [B*K, t, R]
    n_ended = [0] * B
    ended: list[list] = [[] for _ in range(B)]                        # (norm score, ids, alphas)
    rank = torch.arange(K, device=device)[None, :]                    # [1, K]
    for t in range(max_steps):
        logits, state, alpha = decoder.step(words, state, memory)
        logp = logits.log_softmax(dim=-1)                            # [B*K, V]
        V = logp.shape[1]
        total = (scores.view(B * K, 1) + logp).view(B, K * V)
        top, flat = total.topk(K, dim=1)                              # [B, K]
        source = (torch.arange(B, device=device)[:, None] * K + flat // V).view(-1)
        words = (flat % V).view(-1)                                   # [B*K]
        state = reorder_state(state, source)
        seqs = torch.cat([seqs[source], words[:, None]], dim=1)
        if alpha is not None:
            step_alpha = alpha[source][:, None]
            hist = step_alpha if hist is None else torch.cat([hist[source], step_alpha], dim=1)
        # an image with e ended hypotheses keeps only its K - e best candidates
        allowed = torch.tensor([K - e for e in n_ended], device=device)[:, None]
        top = top.masked_fill(rank >= allowed, float("-inf"))
        is_end = (words.view(B, K) == END_ID) & torch.isfinite(top)
        for b, k in is_end.nonzero().tolist():
            row = b * K + k
            ended[b].append((top[b, k].item() / (t + 1), seqs[row].clone(),
                             None if hist is None else hist[row].clone()))
            n_ended[b] += 1
        scores = top.masked_fill(is_end, float("-inf"))
        if all(e >= K for e in n_ended):
            break
    decoder.train(was_training)
    return ended, scores, seqs, hist


@torch.no_grad()
def beam_search(decoder, features: torch.Tensor, max_steps: int, beam: int = 3,
                grid=None) -> list[list[dict]]:
    """Batched beam search. features [B, R, C] -> for each image, up to `beam` hypotheses,
    best first: dicts {score, ids [S_i] (words then <end>), alphas [S_i, R] or None, ended}.

    Each image keeps `beam` live hypotheses; one that emits <end> is set aside and the
    image's live beam shrinks by one, until `beam` hypotheses have ended or max_steps is
    reached. score is the length-normalised log probability (sum of log p / number of
    tokens incl. <end>). Ended hypotheses come first, best score first; live ones (cut at
    max_steps) fill the list only when fewer than `beam` ended, so the search never fails.
    With beam=1 the first hypothesis is exactly greedy decoding's caption."""
    ended, scores, seqs, hist = _search(decoder, features, max_steps, beam, grid)
    out = []
    for b in range(features.shape[0]):
        done = sorted(ended[b], key=lambda item: -item[0])
        hyps = [{"score": s, "ids": seq, "alphas": a, "ended": True} for s, seq, a in done]
        live = [k for k in scores[b].argsort(descending=True).tolist() if torch.isfinite(scores[b, k])]
        for k in live[:max(0, beam - len(hyps))]:
            row = b * beam + k
            hyps.append({"score": scores[b, k].item() / seqs.shape[1], "ids": seqs[row],
                         "alphas": None if hist is None else hist[row], "ended": False})
        out.append(hyps[:beam])
    return out


def sample(decoder, features: torch.Tensor, max_steps: int, k: int = 1):
    """Multinomial sampling with gradients, for self-critical training (caption/scst.py).

    features [B, R, C] -> ids [B*K, S <= max_steps], log_probs [B*K, S]: rows b*K .. b*K+K-1
    are image b's K samples; at each step a word drawn from softmax(logits); a row stops at
    <end> (later ids <pad>, later log-probs 0). log_probs[i, t] = log p(ids[i, t]) keeps its
    graph back to the decoder's parameters. The decoder is used as it is: in train mode its
    dropout is on while sampling (as in Rennie et al.'s and self-critical.pytorch's
    training), in eval mode off. Works through prepare / init_state / step only; the
    prepared memory is a dict of batch-first tensors, repeated K times per image as beam
    search does."""
    B, device = features.shape[0], features.device
    memory = {name: v.repeat_interleave(k, dim=0) for name, v in decoder.prepare(features).items()}
    state = decoder.init_state(memory)
    words = torch.full((B * k,), START_ID, dtype=torch.long, device=device)
    done = torch.zeros_like(words, dtype=torch.bool)
    ids, log_probs = [], []
    for _ in range(max_steps):
        logits, state, _ = decoder.step(words, state, memory)
        logp = logits.log_softmax(dim=-1)                                          # [B*K, V]
        words = torch.multinomial(logp.detach().exp(), 1).squeeze(1)               # [B*K]
        token_logp = logp.gather(1, words[:, None]).squeeze(1).masked_fill(done, 0.0)
        words = words.masked_fill(done, PAD_ID)
        ids.append(words)
        log_probs.append(token_logp)
        done = done | (words == END_ID)
        if done.all():
            break
    return torch.stack(ids, dim=1), torch.stack(log_probs, dim=1)
