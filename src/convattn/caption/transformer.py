"""The Transformer caption decoder: pre-norm layers of masked self-attention over the words,
cross-attention over the regions (with fixed 2-D positional encodings) and a feed-forward
network; key/value caches make a decoding step compute one new word per layer. Shapes as in
caption/decoders.py's notation, D the model width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from convattn.caption.regions import grid_of, read_regions


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

    # the defaults are CaptionConfig's (chosen on validation: docs/results.md, "The best recipe")
    def __init__(self, vocab_size: int, feature_dim: int, model_dim: int = 128, layers: int = 1,
                 heads: int = 4, dropout: float = 0.3, feature_norm: str = "none", outer_ring: str = "keep",
                 grid=None, top: nn.Module | None = None):
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
        self.top = top  # the encoder's tuned top blocks (encoders.TopBlocks) or None

    def read_regions(self, features: torch.Tensor, grid=None) -> torch.Tensor:
        """features [B, R, C] -> what the decoder reads (regions.read_regions, as the LSTMs)."""
        return read_regions(features, self.outer_ring, self.feature_norm, grid or self.grid, self.top)

    def prepare(self, features: torch.Tensor, grid=None) -> dict:
        """features [B, R, C] -> {"keys", "values"}: every layer's cross-attention keys and
        values of the regions, [B, layers, n, R, d] each (batch first, for beam search).
        grid: the features' (H', W'), needed when it is neither the training grid nor square."""
        features = self.read_regions(features, grid)
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
