"""Caption decoders over a grid of region features: LSTMs without and with additive
attention (the study's Q3.1a and Q3.1b), and a Transformer decoder (`TransformerDecoder`).

Notation (docstrings give every tensor's shape):
    B batch, R regions (H' * W'), C feature channels, T caption length with <start> and
    <end>, V vocabulary, E word embedding (100), H LSTM hidden (256), A attention (100).

Both LSTM decoders start from h0 = W_h0 mean_i(f_i), c0 = W_c0 mean_i(f_i). At every step
the LSTM cell reads the current word's embedding (and, with attention, the context vector);
the new h goes through dropout and a linear layer to vocabulary scores. The Transformer
decoder reads the regions with 2-D positional encodings through cross-attention in every
layer; its step's alpha is the last layer's map, averaged over heads (see its class doc).

Opt-in changes (each off by default, so the study's decoders are computed exactly as before):
`outer_ring="inward"` replaces the features of the grid's outer ring by their inward
neighbours' (the encoder's zero padding marks the ring), `feature_norm` rescales every
region feature before the decoder reads it (l2: to norm sqrt(C); layernorm: zero mean and
unit variance over channels), and `sentinel` adds a
learned "visual sentinel" (Lu et al., "Knowing When to Look", CVPR 2017) the attention can
choose instead of any image region. With a sentinel the alpha a step returns is still over
the R image regions, but sums to 1 - beta, beta being the sentinel's weight.

Speed: the attention score e_i = w^T act(W_f f_i + W_h h) needs W_f f_i for every region
at every step, but W_f f does not depend on the step: `Attention.project` computes it once
per batch and every step reuses it (recomputing it per step was many times slower on CPU;
docs/performance.md). The
Transformer does the same with its cross-attention keys and values, and caches its self-
attention keys and values, so a decoding step computes one new word per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from convattn.caption.encoders import EncoderSpec, top_blocks
from convattn.caption.regions import read_regions
from convattn.caption.transformer import TransformerDecoder

ACTIVATIONS = {"tanh": (torch.tanh, torch.tanh_), "relu": (torch.relu, torch.relu_)}


class Attention(nn.Module):
    """Additive (Bahdanau / Show-Attend-Tell) attention over regions:
    e_i = w^T act(W_f f_i + W_h h), alpha = softmax_i(e), context = sum_i alpha_i f_i."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int = 100, act: str = "tanh",
                 sentinel: bool = False):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)  # W_f
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)    # W_h
        self.score = nn.Linear(attention_dim, 1)                   # w
        self.act_name = act
        self.act, self.act_ = ACTIVATIONS[act]  # the function and its in-place form
        # created last and only when asked for: the other parameters' random init is unchanged
        self.sentinel = nn.Parameter(torch.zeros(feature_dim)) if sentinel else None  # s [C]

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, R, C] -> W_f f [B, R, A]; once per batch, not per step. With a
        sentinel, its projection W_f s is appended as region R: [B, R + 1, A]."""
        projected = self.feature_proj(features)
        if self.sentinel is None:
            return projected
        slot = self.feature_proj(self.sentinel).expand(features.shape[0], 1, -1)  # [B, 1, A]
        return torch.cat([projected, slot], dim=1)

    def forward(self, features: torch.Tensor, projected: torch.Tensor,
                h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, R, C], projected = project(features) [B, R, A] ([B, R + 1, A] with
        a sentinel), h [B, H] -> context [B, C], alpha [B, R] (sums to 1 over regions; with a
        sentinel to 1 - beta, beta its weight, and context = sum_i alpha_i f_i + beta s)."""
        pre = projected + self.hidden_proj(h)[:, None, :]                                 # [B, R, A]
        # decoding (no autograd): the activation in place, one [B, R, A] pass less per step
        act = self.act(pre) if torch.is_grad_enabled() else self.act_(pre)
        e = self.score(act).squeeze(-1)                                                   # [B, R]
        alpha = e.softmax(dim=-1)
        if self.sentinel is not None:  # softmax over R + 1 slots; the last one is the sentinel
            alpha, beta = alpha[:, :-1], alpha[:, -1:]                                    # [B, R], [B, 1]
            context = torch.bmm(alpha[:, None, :], features).squeeze(1) + beta * self.sentinel
            return context, alpha
        context = torch.bmm(alpha[:, None, :], features).squeeze(1)                      # [B, C]
        return context, alpha


class DecoderWithoutAttention(nn.Module):
    """Q3.1a: the LSTM sees the image only through its initial state (mean region feature)."""

    uses_attention = False

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int = 100,
                 hidden_dim: int = 256, dropout: float = 0.5, feature_norm: str = "none",
                 outer_ring: str = "keep", grid=None, top: nn.Module | None = None):
        super().__init__()
        self.vocab_size, self.feature_dim = vocab_size, feature_dim
        self.feature_norm, self.outer_ring, self.grid = feature_norm, outer_ring, grid
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        self.lstm = nn.LSTMCell(self._lstm_input_dim(), hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, vocab_size)
        self.top = top  # the encoder's tuned top blocks (encoders.TopBlocks) or None

    def _lstm_input_dim(self) -> int:
        return self.embed_dim

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> the per-image tensors every step needs (batch first, so
        beam search can index them): here just the (normalised) features. grid: the
        features' (H', W') where it may differ from the training grid (an image of another
        shape); None: the training grid, or a square one."""
        return {"features": self.read_regions(features, grid)}

    def read_regions(self, features: torch.Tensor, grid=None) -> torch.Tensor:
        """features [B, R, C] -> what the decoder reads [B, R, C] (regions.read_regions with
        this decoder's options; grid None: the training grid, or a square one)."""
        return read_regions(features, self.outer_ring, self.feature_norm, grid or self.grid, self.top)

    def init_state(self, memory: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (h0, c0), each [B, H], linear in the mean region feature."""
        mean = memory["features"].mean(dim=1)  # [B, C]
        return self.init_h(mean), self.init_c(mean)

    def _lstm_input(self, embedded: torch.Tensor, memory: dict, h: torch.Tensor):
        """embedded [B, E] -> (LSTM input [B, E], attention weights or None)."""
        return embedded, None

    def step(self, words: torch.Tensor, state: tuple, memory: dict):
        """One decoding step. words [B] (ids of the current words), state (h, c) [B, H]
        -> logits [B, V], new state, alpha [B, R] (None without attention)."""
        x, alpha = self._lstm_input(self.embedding(words), memory, state[0])
        h, c = self.lstm(x, state)
        return self.fc(self.dropout(h)), (h, c), alpha

    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing. features [B, R, C], captions [B, T] (<start> ... <end> <pad>...)
        -> logits [B, T-1, V] predicting captions[:, 1:], alphas [B, T-1, R] or None.

        Position t only sees captions[:, :t+1]; padding after <end> is read but never
        predicted from (the loss ignores targets that are <pad>)."""
        memory = self.prepare(features)
        state = self.init_state(memory)
        embedded = self.embedding(captions[:, :-1])  # [B, T-1, E], one lookup for all steps
        hs, alphas = [], []
        for t in range(captions.shape[1] - 1):
            x, alpha = self._lstm_input(embedded[:, t], memory, state[0])
            state = self.lstm(x, state)
            hs.append(state[0])
            alphas.append(alpha)
        # one output layer for all steps instead of one per step
        logits = self.fc(self.dropout(torch.stack(hs, dim=1)))  # [B, T-1, V]
        return logits, (torch.stack(alphas, dim=1) if self.uses_attention else None)


class DecoderWithAttention(DecoderWithoutAttention):
    """Q3.1b: at every step the LSTM input is [embedding; context], the context an additive-
    attention average of the region features given the previous hidden state."""

    uses_attention = True

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int = 100,
                 hidden_dim: int = 256, dropout: float = 0.5, attention_dim: int = 100,
                 attention_act: str = "tanh", feature_norm: str = "none", outer_ring: str = "keep",
                 grid=None, sentinel: bool = False, top: nn.Module | None = None):
        self.attention_dim = attention_dim
        super().__init__(vocab_size, feature_dim, embed_dim, hidden_dim, dropout, feature_norm, outer_ring, grid)
        self.attention = Attention(feature_dim, hidden_dim, attention_dim, attention_act, sentinel)
        self.top = top

    def _lstm_input_dim(self) -> int:
        return self.embed_dim + self.feature_dim

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> {features, projected: W_f f [B, R, A] (R + 1 with a sentinel)}."""
        features = self.read_regions(features, grid)
        return {"features": features, "projected": self.attention.project(features)}

    def _lstm_input(self, embedded: torch.Tensor, memory: dict, h: torch.Tensor):
        """embedded [B, E], h [B, H] -> ([embedded; context] [B, E + C], alpha [B, R])."""
        context, alpha = self.attention(memory["features"], memory["projected"], h)
        return torch.cat([embedded, context], dim=1), alpha



MODELS = {"no_attention": DecoderWithoutAttention, "attention": DecoderWithAttention,
          "transformer": TransformerDecoder}


def build_decoder(model: str, vocab_size: int, feature_dim: int, config, grid=None,
                  spec: EncoderSpec | None = None) -> nn.Module:
    """`config` has embed_dim, hidden_dim, dropout, feature_norm, outer_ring, attention_dim,
    attention_act and sentinel (the LSTMs), model_dim, layers, heads and transformer_dropout
    (the transformer); `grid` (H', W') is the training features' grid and `feature_dim` their
    channels. With `spec.tune` K > 0 the decoder owns the encoder's top K blocks (TopBlocks),
    reads features of their input's channels, and its layers see their output's."""
    grid = None if grid is None else tuple(grid)
    top = top_blocks(spec) if spec is not None else None
    if top is not None:
        if feature_dim != top.in_channels:
            raise ValueError(f"features of {feature_dim} channels; the tuned blocks read {top.in_channels}")
        feature_dim = top.out_channels
    if model == "transformer":
        return TransformerDecoder(vocab_size, feature_dim, model_dim=config.model_dim, layers=config.layers,
                                  heads=config.heads, dropout=config.transformer_dropout,
                                  feature_norm=config.feature_norm, outer_ring=config.outer_ring, grid=grid,
                                  top=top)
    kwargs = dict(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=config.embed_dim,
                  hidden_dim=config.hidden_dim, dropout=config.dropout, feature_norm=config.feature_norm,
                  outer_ring=config.outer_ring, grid=grid, top=top)
    if model == "attention":
        kwargs.update(attention_dim=config.attention_dim, attention_act=config.attention_act,
                      sentinel=config.sentinel)
    return MODELS[model](**kwargs)


def input_channels(decoder: nn.Module) -> int:
    """Channels of the features a decoder is fed (the cached ones): its tuned blocks' input, else its own."""
    return decoder.top.in_channels if decoder.top is not None else decoder.feature_dim
