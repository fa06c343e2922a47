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
per batch and every step reuses it (recomputing it per step was 10x slower on CPU). The
Transformer does the same with its cross-attention keys and values, and caches its self-
attention keys and values, so a decoding step computes one new word per layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"tanh": (torch.tanh, torch.tanh_), "relu": (torch.relu, torch.relu_)}
FEATURE_NORMS = ("none", "l2", "layernorm")
OUTER_RING = ("keep", "inward")


def grid_of(regions: int, grid) -> tuple[int, int]:
    """The (H', W') of `regions` features: `grid` when it fits, else a square grid."""
    if grid is not None and grid[0] * grid[1] == regions:
        return tuple(grid)
    side = round(regions ** 0.5)
    if side * side != regions:
        raise ValueError(f"{regions} regions: not a {grid} grid and not square")
    return side, side


def replace_outer_ring(features: torch.Tensor, grid) -> torch.Tensor:
    """features [B, R, C] on an (H', W') grid -> [B, R, C] with rows 0 and H'-1 and columns 0
    and W'-1 replaced by their inward neighbours (row 1, row H'-2, ...; corners diagonally).

    Why: the encoder zero-pads every convolution, so the ring's features carry a padding
    signature the interior lacks; the homework attention decoder puts 2.5x the ring's area
    share of its weight there, and with the ring replaced by its neighbours the same trained
    decoder's weight drops to about the area share while its BLEU-4 and CIDEr-D do not fall
    (README, "Attention on the border")."""
    H, W = grid
    if H < 3 or W < 3:  # no interior to copy from
        return features
    g = features.reshape(features.shape[0], H, W, -1).clone()
    g[:, 0], g[:, -1] = g[:, 1], g[:, -2]
    g[:, :, 0], g[:, :, -1] = g[:, :, 1], g[:, :, -2]
    return g.reshape(features.shape)


def normalise_features(features: torch.Tensor, how: str) -> torch.Tensor:
    """features [B, R, C] -> [B, R, C], each region rescaled on its own (see the module doc).
    "none" returns the tensor itself."""
    if how == "l2":
        return features * (features.shape[-1] ** 0.5 / features.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    if how == "layernorm":
        return nn.functional.layer_norm(features, features.shape[-1:])
    return features


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
                 outer_ring: str = "keep", grid=None):
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

    def _lstm_input_dim(self) -> int:
        return self.embed_dim

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> the per-image tensors every step needs (batch first, so
        beam search can index them): here just the (normalised) features. grid: the
        features' (H', W') where it may differ from the training grid (an image of another
        shape); None: the training grid, or a square one."""
        return {"features": self.region_features(features, grid)}

    def region_features(self, features: torch.Tensor, grid=None) -> torch.Tensor:
        """features [B, R, C] -> what the decoder reads [B, R, C]: the outer ring replaced
        (outer_ring="inward"), then each region rescaled (feature_norm); as is by default."""
        if self.outer_ring == "inward":
            features = replace_outer_ring(features, grid_of(features.shape[1], grid or self.grid))
        return normalise_features(features, self.feature_norm)

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
                 grid=None, sentinel: bool = False):
        self.attention_dim = attention_dim
        super().__init__(vocab_size, feature_dim, embed_dim, hidden_dim, dropout, feature_norm, outer_ring, grid)
        self.attention = Attention(feature_dim, hidden_dim, attention_dim, attention_act, sentinel)

    def _lstm_input_dim(self) -> int:
        return self.embed_dim + self.feature_dim

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> {features, projected: W_f f [B, R, A] (R + 1 with a sentinel)}."""
        features = self.region_features(features, grid)
        return {"features": features, "projected": self.attention.project(features)}

    def _lstm_input(self, embedded: torch.Tensor, memory: dict, h: torch.Tensor):
        """embedded [B, E], h [B, H] -> ([embedded; context] [B, E + C], alpha [B, R])."""
        context, alpha = self.attention(memory["features"], memory["projected"], h)
        return torch.cat([embedded, context], dim=1), alpha


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """positions [N] (any real numbers) -> the fixed sinusoidal encodings [N, dim] of
    "Attention Is All You Need": sin and cos of positions * 10000^(-2k/dim), k < dim/2."""
    k = torch.arange(dim // 2, dtype=torch.float32, device=positions.device)
    angles = positions.float()[:, None] * torch.exp(k * (-math.log(10000.0) * 2 / dim))[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def grid_encoding(grid, dim: int, device=None) -> torch.Tensor:
    """The fixed 2-D positional encodings of an (H', W') grid's regions -> [H' * W', dim],
    row-major like the features: half the channels encode the region's row, half its column
    (as DETR). Rows and columns are measured in 16ths of the image's height and width
    ((i + 0.5) * 16 / H'), so a region means the same part of the image on any grid and a
    model trained on 16x16 grids reads 8x8 or 12x20 ones."""
    H, W = grid
    rows = sinusoid((torch.arange(H, device=device) + 0.5) * (16.0 / H), dim // 2)   # [H', dim/2]
    cols = sinusoid((torch.arange(W, device=device) + 0.5) * (16.0 / W), dim // 2)   # [W', dim/2]
    return torch.cat([rows[:, None, :].expand(H, W, -1), cols[None, :, :].expand(H, W, -1)],
                     dim=-1).reshape(H * W, dim)


class TransformerLayer(nn.Module):
    """One pre-norm Transformer decoder layer: masked self-attention over the words so far,
    cross-attention over the regions, a feed-forward network; each a residual branch whose
    input is layer-normalised (x + f(LN(x))).

    Pre-norm, not the original post-norm: its gradients are well scaled at initialisation, so
    it trains with the LSTMs' constant Adam learning rate and no warm-up (Xiong et al., "On
    Layer Normalization in the Transformer Architecture", ICML 2020).

    Self-attention runs on torch's `scaled_dot_product_attention` (causal mask in teacher
    forcing; one query over the cached keys in a decoding step). Cross-attention computes its
    weights softmax(q k^T / sqrt(d)) explicitly, because they are the attention maps we
    show (the fused kernel does not return them); its keys and values depend only on the
    image, so `memory_kv` computes them once per batch and every step reuses them.

    Shapes: D model width, n heads, d = D / n per head, t words so far, R regions.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_self, self.norm_cross, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_qkv = nn.Linear(dim, 3 * dim)
        self.self_out = nn.Linear(dim, dim)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, n, L, d]"""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def memory_kv(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """regions [B, R, D] -> cross-attention keys and values, each [B, n, R, d]."""
        k, v = self.cross_kv(regions).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, memory_k: torch.Tensor, memory_v: torch.Tensor,
                cache: tuple | None = None):
        """x [B, L, D] (L words: all of them in teacher forcing, the newest one in a step),
        memory_k/v [B, n, R, d], cache: this layer's (keys, values) [B, n, t, d] of the t
        earlier words, or None in teacher forcing (then a causal mask)
        -> x [B, L, D], cross-attention weights [B, n, L, R], the new cache (None without)."""
        q, k, v = (self._split(y) for y in self.self_qkv(self.norm_self(x)).chunk(3, dim=-1))
        if cache is not None:  # one new word attends to every earlier one and itself
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache = (k, v)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=cache is None)  # [B, n, L, d]
        x = x + self.dropout(self.self_out(a.transpose(1, 2).flatten(2)))
        q = self._split(self.cross_q(self.norm_cross(x)))                                 # [B, n, L, d]
        weights = (q @ memory_k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)  # [B, n, L, R]
        x = x + self.dropout(self.cross_out((weights @ memory_v).transpose(1, 2).flatten(2)))
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return x, weights, cache


class TransformerDecoder(nn.Module):
    """A Transformer decoder over the region grid (Vaswani et al. 2017, as in captioning
    Transformers since Cornia et al.'s M2): words attend to the earlier words (masked self-
    attention) and to the image's regions (cross-attention), in `layers` pre-norm layers.

    Regions: each feature projected to D and layer-normalised, plus the fixed 2-D positional
    encoding of its row and column (`grid_encoding`), so cross-attention can tell where a
    region is. Words: an embedding plus the fixed 1-D sinusoidal encoding of the position.
    Logits: a linear layer on the last layer's (normalised) output.

    alpha, the map a step or forward returns, is the LAST layer's cross-attention averaged
    over its heads: [B, R], summing to 1 over the regions. `layer_attention` gives every
    layer's maps. Decoding state: per layer the self-attention keys and values of the words
    so far ([B, n, t, d] each, batch first), so a step costs one word, not the prefix.
    Region options (outer_ring, feature_norm) apply exactly as for the LSTMs.
    """

    uses_attention = True

    def __init__(self, vocab_size: int, feature_dim: int, model_dim: int = 256, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, feature_norm: str = "none", outer_ring: str = "keep",
                 grid=None):
        super().__init__()
        self.vocab_size, self.feature_dim = vocab_size, feature_dim
        self.feature_norm, self.outer_ring, self.grid = feature_norm, outer_ring, grid
        self.model_dim, self.heads = model_dim, heads
        self.region_proj = nn.Linear(feature_dim, model_dim)
        self.region_norm = nn.LayerNorm(model_dim)
        self.embedding = nn.Embedding(vocab_size, model_dim)
        self.layers = nn.ModuleList(TransformerLayer(model_dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(model_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(model_dim, vocab_size)

    # the LSTMs' region handling (outer_ring, then feature_norm), the same function
    region_features = DecoderWithoutAttention.region_features

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> {"keys", "values"}: every layer's cross-attention keys and
        values of the regions, [B, layers, n, R, d] each (batch first, for beam search).
        grid: the features' (H', W'), needed when it is neither the training grid nor square."""
        features = self.region_features(features, grid)
        grid = grid_of(features.shape[1], grid or self.grid)
        regions = self.region_norm(self.region_proj(features)) + grid_encoding(grid, self.model_dim, features.device)
        regions = self.dropout(regions)                                              # [B, R, D]
        kv = [layer.memory_kv(regions) for layer in self.layers]
        return {"keys": torch.stack([k for k, _ in kv], dim=1), "values": torch.stack([v for _, v in kv], dim=1)}

    def init_state(self, memory: dict) -> tuple:
        """-> per layer an empty (keys, values) self-attention cache, [B, n, 0, d] each."""
        B, _, n, _, d = memory["keys"].shape
        empty = memory["keys"].new_zeros((B, n, 0, d))
        return tuple((empty, empty) for _ in self.layers)

    def _words(self, words: torch.Tensor, start: int) -> torch.Tensor:
        """words [B, L] at positions start.. -> the first layer's input [B, L, D]."""
        positions = torch.arange(start, start + words.shape[1], device=words.device)
        return self.dropout(self.embedding(words) + sinusoid(positions, self.model_dim))

    def step(self, words: torch.Tensor, state: tuple, memory: dict):
        """One decoding step. words [B], state (init_state's, then step's) -> logits [B, V],
        the new state (the caches grown by one word), alpha [B, R] (last layer, mean of heads)."""
        x = self._words(words[:, None], state[0][0].shape[2])                      # [B, 1, D]
        new_state = []
        for i, layer in enumerate(self.layers):
            x, weights, cache = layer(x, memory["keys"][:, i], memory["values"][:, i], state[i])
            new_state.append(cache)
        return self.fc(self.norm(x[:, 0])), tuple(new_state), weights[:, :, 0].mean(dim=1)

    def _teacher_forced(self, features: torch.Tensor, captions: torch.Tensor):
        """-> logits [B, T-1, V] and every layer's head-averaged maps [B, layers, T-1, R]."""
        memory = self.prepare(features)
        x = self._words(captions[:, :-1], 0)                                        # [B, T-1, D]
        maps = []
        for i, layer in enumerate(self.layers):
            x, weights, _ = layer(x, memory["keys"][:, i], memory["values"][:, i])
            maps.append(weights.mean(dim=1))                                        # [B, T-1, R]
        return self.fc(self.norm(x)), torch.stack(maps, dim=1)

    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing, all steps in one pass (a causal mask: position t sees
        captions[:, :t+1] only). features [B, R, C], captions [B, T] -> logits [B, T-1, V],
        alphas [B, T-1, R] (last layer, mean of heads)."""
        logits, maps = self._teacher_forced(features, captions)
        return logits, maps[:, -1]

    def layer_attention(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Every layer's cross-attention maps while reading `captions` [B, T] (<start> then
        the generated tokens): [B, layers, T-1, R], head-averaged. In eval mode row t is the
        map of the step that produced captions[:, t+1], as greedy or beam search saw it."""
        return self._teacher_forced(features, captions)[1]


Decoder = DecoderWithoutAttention  # the study's name for the plain decoder

MODELS = {"no_attention": DecoderWithoutAttention, "attention": DecoderWithAttention,
          "transformer": TransformerDecoder}


def build_decoder(model: str, vocab_size: int, feature_dim: int, config, grid=None) -> nn.Module:
    """`config` has embed_dim, hidden_dim, dropout, feature_norm, outer_ring, attention_dim,
    attention_act and sentinel (the LSTMs), model_dim, layers, heads and transformer_dropout
    (the transformer); `grid` (H', W') is the training features' grid."""
    grid = None if grid is None else tuple(grid)
    if model == "transformer":
        return TransformerDecoder(vocab_size, feature_dim, model_dim=config.model_dim, layers=config.layers,
                                  heads=config.heads, dropout=config.transformer_dropout,
                                  feature_norm=config.feature_norm, outer_ring=config.outer_ring, grid=grid)
    kwargs = dict(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=config.embed_dim,
                  hidden_dim=config.hidden_dim, dropout=config.dropout, feature_norm=config.feature_norm,
                  outer_ring=config.outer_ring, grid=grid)
    if model == "attention":
        kwargs.update(attention_dim=config.attention_dim, attention_act=config.attention_act,
                      sentinel=config.sentinel)
    return MODELS[model](**kwargs)
