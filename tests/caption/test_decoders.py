import pytest
import torch
import torch.nn.functional as F

from convattn.caption.decoders import MODELS, Attention, DecoderWithAttention, DecoderWithoutAttention
from convattn.data.captions import END_ID, PAD_ID, START_ID

B, R, C, V, T = 3, 6, 20, 15, 7


def make(cls, **kw):
    torch.manual_seed(0)
    return cls(vocab_size=V, feature_dim=C, embed_dim=8, hidden_dim=12, **kw).eval()


def captions():
    # lengths 7, 5 and 3 with <start>/<end>, the rest <pad>
    caps = torch.full((B, T), PAD_ID)
    for b, n in enumerate((5, 3, 1)):
        caps[b, 0] = START_ID
        caps[b, 1:1 + n] = torch.randint(4, V, (n,), generator=torch.Generator().manual_seed(b))
        caps[b, 1 + n] = END_ID
    return caps


@pytest.mark.parametrize("cls", [DecoderWithoutAttention, DecoderWithAttention])
def test_shapes(cls):
    dec = make(cls)
    logits, alphas = dec(torch.randn(B, R, C), captions())
    assert logits.shape == (B, T - 1, V)
    if cls is DecoderWithAttention:
        assert alphas.shape == (B, T - 1, R)
        torch.testing.assert_close(alphas.sum(-1), torch.ones(B, T - 1))
    else:
        assert alphas is None
    logits, state, alpha = dec.step(torch.tensor([START_ID] * B), dec.init_state(dec.prepare(torch.randn(B, R, C))),
                                    dec.prepare(torch.randn(B, R, C)))
    assert logits.shape == (B, V) and state[0].shape == state[1].shape == (B, 12)


@pytest.mark.parametrize("cls", [DecoderWithoutAttention, DecoderWithAttention])
def test_padding_never_changes_the_loss(cls):
    """Targets that are <pad> are ignored, and what follows <end> cannot reach earlier steps:
    writing junk into the padding leaves the loss unchanged, and each caption's loss is the
    same alone as in a padded batch."""
    dec = make(cls)
    feats, caps = torch.randn(B, R, C), captions()

    def loss(f, c):
        logits, _ = dec(f, c)
        return F.cross_entropy(logits.reshape(-1, V), c[:, 1:].reshape(-1), ignore_index=PAD_ID,
                               reduction="sum")

    junk = caps.clone()
    junk[caps == PAD_ID] = 5
    junk[:, -1] = PAD_ID  # keep a <pad> target somewhere so the two differ only in padding
    with torch.no_grad():
        base = loss(feats, caps)
        per_caption = sum(loss(feats[b:b + 1], caps[b:b + 1, :int((caps[b] != PAD_ID).sum())])
                          for b in range(B))
        torch.testing.assert_close(base, per_caption)
        logits, _ = dec(feats, caps)
        logits_junk, _ = dec(feats, junk)
    # the logits at real positions do not depend on anything after them
    for b in range(B):
        n = int((caps[b] != PAD_ID).sum()) - 1
        torch.testing.assert_close(logits[b, :n], logits_junk[b, :n])


def test_attention_uses_each_images_regions_only():
    dec = make(DecoderWithAttention)
    feats, caps = torch.randn(B, R, C), captions()
    with torch.no_grad():
        _, a = dec(feats, caps)
        feats2 = feats.clone()
        feats2[1:] = torch.randn(B - 1, R, C)
        _, a2 = dec(feats2, caps)
    torch.testing.assert_close(a[0], a2[0])


def test_attention_precomputed_projection_matches_the_formula():
    torch.manual_seed(0)
    att = Attention(feature_dim=C, hidden_dim=12, attention_dim=5, act="relu")
    f, h = torch.randn(B, R, C), torch.randn(B, 12)
    context, alpha = att(f, att.project(f), h)
    # e_i = w^T relu(W_f f_i + W_h h), written out per region
    e = torch.stack([att.score(torch.relu(att.feature_proj(f[:, i]) + att.hidden_proj(h))).squeeze(-1)
                     for i in range(R)], dim=1)
    torch.testing.assert_close(alpha, e.softmax(-1))
    torch.testing.assert_close(context, (alpha[:, :, None] * f).sum(1))


def test_gradients_reach_every_parameter():
    dec = make(DecoderWithAttention).train()
    logits, _ = dec(torch.randn(B, R, C), captions())
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_remedies_off_are_the_studys_decoder():
    """Every new option at its default builds the same parameters and computes the same
    outputs as the decoder built without naming them."""
    plain, explicit = make(DecoderWithAttention), make(DecoderWithAttention, feature_norm="none", sentinel=False)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in explicit.named_parameters()]
    features = torch.randn(B, R, C)
    torch.testing.assert_close(plain(features, captions())[0], explicit(features, captions())[0], rtol=0, atol=0)


def test_sentinel_takes_weight_off_the_image():
    dec = make(DecoderWithAttention, sentinel=True)
    # a different sentinel so that it gets a non-trivial share
    with torch.no_grad():
        dec.attention.sentinel.normal_()
    _, alphas = dec(torch.randn(B, R, C), captions())
    assert alphas.shape == (B, T - 1, R)       # still over the image regions only
    on_image = alphas.sum(-1)
    assert (on_image < 1).all() and (on_image > 0).all()
    memory = dec.prepare(torch.randn(B, R, C))
    assert memory["projected"].shape == (B, R + 1, dec.attention_dim)


@pytest.mark.parametrize("how", ["l2", "layernorm"])
def test_feature_norm_equalises_region_norms(how):
    dec = make(DecoderWithAttention, feature_norm=how)
    features = torch.randn(B, R, C) * torch.linspace(0.1, 10, R)[None, :, None]
    norms = dec.prepare(features)["features"].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, C ** 0.5), rtol=1e-3, atol=1e-3)


def test_attention_penalty_leaves_padding_out():
    from convattn.caption.loop import attention_penalty

    alphas = torch.zeros(1, 3, 2)
    alphas[0, :, 0] = 1.0                      # every step on region 0
    mask = torch.tensor([[True, False, False]])  # one real step, two padding steps
    # region 0 received 1 (penalty 0), region 1 received 0 (penalty 1): mean 0.5
    assert attention_penalty(alphas, mask).item() == pytest.approx(0.5)
    assert attention_penalty(alphas, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx((4 + 1) / 2)


def test_outer_ring_inward_copies_the_neighbours():
    from convattn.caption.regions import replace_outer_ring

    grid = torch.arange(16.0).reshape(1, 16, 1)
    out = replace_outer_ring(grid, (4, 4)).reshape(4, 4)
    assert out.tolist() == [[5, 5, 6, 6], [5, 5, 6, 6], [9, 9, 10, 10], [9, 9, 10, 10]]
    dec = make(DecoderWithAttention, outer_ring="inward", grid=(2, 3))   # R = 6: a 2x3 grid
    features = torch.randn(B, R, C)
    torch.testing.assert_close(dec.prepare(features)["features"], features)  # nothing inside to copy
    keep = make(DecoderWithAttention, grid=(2, 3))
    assert keep.prepare(features)["features"] is features


def test_doubly_stochastic_loss_is_off_by_default_and_changes_training_when_on(tiny_data):
    from convattn.caption.data import Data
    from convattn.caption.loop import train_one_epoch
    from convattn.caption.presets import PRESETS
    from convattn.data.captions import load_dataset
    import numpy as np

    dataset = load_dataset(tiny_data)
    rng = np.random.default_rng(0)
    data = Data(dataset, rng.standard_normal((len(dataset.images), 9, C)).astype(np.float16), (3, 3), "cpu")
    losses = []
    default = PRESETS["smoke"]  # the preset as it is: its attention_reg is the default
    assert default.attention_reg == PRESETS["homework"].attention_reg == 0.0
    for config in (default, default, default.replace(attention_reg=1.0)):
        torch.manual_seed(0)
        dec = DecoderWithAttention(len(data.vocab), C, embed_dim=8, hidden_dim=12)
        opt = torch.optim.Adam(dec.parameters(), lr=config.lr)
        losses.append(train_one_epoch(dec, opt, data, config, 0, 42))
    assert losses[0] == losses[1] and losses[2] > losses[0]


def test_entropy_penalty_is_one_for_uniform_maps_and_zero_for_one_region():
    from convattn.caption.loop import entropy_penalty

    R = 9
    uniform = torch.full((2, 3, R), 1 / R)
    one = torch.zeros(2, 3, R)
    one[..., 4] = 1.0
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert entropy_penalty(uniform, mask).item() == pytest.approx(1.0, rel=1e-6)
    assert entropy_penalty(one, mask).item() == pytest.approx(0.0, abs=1e-6)
    # padding steps do not count: a uniform map there changes nothing
    mixed = one.clone()
    mixed[0, 2] = 1 / R
    assert entropy_penalty(mixed, mask).item() == pytest.approx(0.0, abs=1e-6)
    # a sentinel's weight (maps summing to less than 1) is left out: half of a uniform map is uniform
    assert entropy_penalty(uniform / 2, mask).item() == pytest.approx(1.0, rel=1e-6)


def test_attention_entropy_sharpens_the_maps(tiny_data):
    """Trained with the penalty, the same decoder's training maps are more peaked; without it
    (the default) the loss is the study's."""
    from convattn.caption.data import Data
    from convattn.caption.loop import entropy_penalty, train_one_epoch
    from convattn.caption.presets import PRESETS
    from convattn.data.captions import PAD_ID, load_dataset
    import numpy as np

    dataset = load_dataset(tiny_data)
    rng = np.random.default_rng(0)
    data = Data(dataset, rng.standard_normal((len(dataset.images), 9, C)).astype(np.float16), (3, 3), "cpu")
    assert PRESETS["homework"].attention_entropy == 0.0
    entropies = []
    for weight in (0.0, 1.0):
        config = PRESETS["smoke"].replace(attention_entropy=weight, epochs=3, dropout=0.0)
        torch.manual_seed(0)
        dec = DecoderWithAttention(len(data.vocab), C, embed_dim=8, hidden_dim=12)
        opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
        for epoch in range(config.epochs):
            train_one_epoch(dec, opt, data, config, epoch, 42)
        captions = data.train_captions[:16]
        with torch.no_grad():
            _, alphas = dec.eval()(data.rows(data.train_images[:16]), captions)
        entropies.append(entropy_penalty(alphas, captions[:, 1:] != PAD_ID).item())
    assert entropies[1] < 0.5 * entropies[0], entropies


# ---------------------------------------------------------------- the Transformer decoder

def make_transformer(**kw):
    from convattn.caption.decoders import TransformerDecoder

    torch.manual_seed(0)
    kw.setdefault("grid", (2, 3))  # R = 6 regions
    return TransformerDecoder(vocab_size=V, feature_dim=C, model_dim=16, layers=2, heads=4, **kw).eval()


def run_steps(dec, features, tokens):
    """Feed tokens [B, L] one step at a time -> logits [B, L, V], alphas [B, L, R]."""
    memory = dec.prepare(features)
    state = dec.init_state(memory)
    logits, alphas = [], []
    for t in range(tokens.shape[1]):
        out, state, alpha = dec.step(tokens[:, t], state, memory)
        logits.append(out)
        alphas.append(alpha)
    return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)


def test_transformer_shapes_and_maps():
    dec = make_transformer()
    features, caps = torch.randn(B, R, C), captions()
    logits, alphas = dec(features, caps)
    assert logits.shape == (B, T - 1, V) and alphas.shape == (B, T - 1, R)
    torch.testing.assert_close(alphas.sum(-1), torch.ones(B, T - 1))
    maps = dec.layer_attention(features, caps)
    assert maps.shape == (B, 2, T - 1, R)
    torch.testing.assert_close(maps[:, -1], alphas)         # alpha is the last layer's map
    assert not torch.allclose(maps[:, 0], maps[:, 1])        # and the layers' maps differ
    memory = dec.prepare(features)
    logits, state, alpha = dec.step(torch.tensor([START_ID] * B), dec.init_state(memory), memory)
    assert logits.shape == (B, V) and alpha.shape == (B, R) and len(state) == 2
    assert state[0][0].shape == (B, 4, 1, 4)                 # the cache holds one word per layer


def test_transformer_is_causal():
    """Changing a later word never changes the logits or maps of earlier positions."""
    dec = make_transformer()
    features, caps = torch.randn(B, R, C), captions()
    changed = caps.clone()
    changed[:, 4] = (changed[:, 4] + 1) % V
    with torch.no_grad():
        (l1, a1), (l2, a2) = dec(features, caps), dec(features, changed)
    torch.testing.assert_close(l1[:, :4], l2[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(a1[:, :4], a2[:, :4], rtol=0, atol=0)
    assert not torch.allclose(l1[:, 4], l2[:, 4])


def test_transformer_steps_equal_teacher_forcing():
    """Decoding step by step (key/value cache) computes what one teacher-forced pass does."""
    dec = make_transformer()
    features, caps = torch.randn(B, R, C), captions()
    with torch.no_grad():
        logits, alphas = dec(features, caps)
        step_logits, step_alphas = run_steps(dec, features, caps[:, :-1])
    # tolerance basis: one forward pass computed with other matmul shapes (one step at a time
    # against all steps at once): float32 rounding, about 1e-6 relative expected
    torch.testing.assert_close(step_logits, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step_alphas, alphas, rtol=1e-4, atol=1e-6)


def test_transformer_reads_where_regions_are():
    """The 2-D positional encodings make the regions' order matter: the same features on
    another grid position give other logits (without them attention is order-blind)."""
    from convattn.caption.transformer import grid_encoding

    dec = make_transformer()
    features, caps = torch.randn(B, R, C), captions()
    shuffled = features[:, torch.tensor([5, 4, 3, 2, 1, 0])]
    with torch.no_grad():
        assert not torch.allclose(dec(features, caps)[0], dec(shuffled, caps)[0], atol=1e-4)
    pe = grid_encoding((2, 3), 16)
    assert pe.shape == (6, 16)
    torch.testing.assert_close(pe[0, :8], pe[2, :8])          # same row: same row half
    torch.testing.assert_close(pe[0, 8:], pe[3, 8:])          # same column: same column half
    assert not torch.allclose(pe[0], pe[4])
    # an image of another shape: its grid is given, else R must be the training grid or square
    with torch.no_grad():
        assert dec.prepare(torch.randn(1, 12, C), grid=(3, 4))["keys"].shape == (1, 2, 4, 12, 4)
    with pytest.raises(ValueError, match="12 regions"):
        dec.prepare(torch.randn(1, 12, C))


def test_transformer_steps_are_differentiable():
    """Self-critical training backpropagates through step: gradients reach the parameters."""
    dec = make_transformer().train()
    features = torch.randn(B, R, C)
    logits, _ = run_steps(dec, features, captions()[:, :4])
    logits.log_softmax(-1).max(-1).values.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_transformer_gradients_reach_every_parameter():
    dec = make_transformer().train()
    logits, _ = dec(torch.randn(B, R, C), captions())
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_transformer_region_options_apply():
    dec = make_transformer(outer_ring="inward", feature_norm="l2", grid=(4, 4))
    features = torch.randn(B, 16, C)
    expected = dec.read_regions(features)
    norms = expected.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, C ** 0.5), rtol=1e-3, atol=1e-3)
    inner = expected.reshape(B, 4, 4, C)
    torch.testing.assert_close(inner[:, 0, 0], inner[:, 1, 1])   # the corner read from inside


def test_build_decoder_makes_each_model_from_the_config():
    from convattn.caption.decoders import TransformerDecoder, build_decoder
    from convattn.caption.presets import HOMEWORK

    config = HOMEWORK.replace(models=("transformer",), model_dim=32, layers=3, heads=8, transformer_dropout=0.2)
    dec = build_decoder("transformer", V, C, config, grid=[2, 3])
    assert isinstance(dec, TransformerDecoder) and dec.grid == (2, 3)
    assert (dec.model_dim, len(dec.layers), dec.heads, dec.dropout.p) == (32, 3, 8, 0.2)
    assert HOMEWORK.models == ("no_attention", "attention")   # the study's two by default
    assert type(build_decoder("attention", V, C, HOMEWORK)) is DecoderWithAttention


@pytest.mark.parametrize("model", list(MODELS))
def test_every_registered_decoder_builds_and_teacher_forces(model):
    """Each decoder of the registry (decoders.MODELS), built from a config as the runs build
    it, is the registry's class and gives logits [B, T-1, V] and, when it uses attention,
    maps [B, T-1, R] over the regions that sum to at most 1 (a sentinel takes the rest)."""
    from convattn.caption.decoders import build_decoder
    from convattn.caption.presets import HOMEWORK

    config = HOMEWORK.replace(embed_dim=8, hidden_dim=12, attention_dim=8, model_dim=16, heads=2)
    torch.manual_seed(0)
    dec = build_decoder(model, V, C, config, grid=[2, 3]).eval()   # R = 6: a 2x3 grid
    assert type(dec) is MODELS[model]
    with torch.no_grad():
        logits, alphas = dec(torch.randn(B, R, C), captions())
    assert logits.shape == (B, T - 1, V) and torch.isfinite(logits).all()
    if dec.uses_attention:
        assert alphas.shape == (B, T - 1, R)
        assert (alphas >= 0).all() and (alphas.sum(-1) <= 1 + 1e-5).all()
    else:
        assert alphas is None


def test_transformer_end_to_end(tiny_data, tmp_path, capsys):
    """`convattn caption --models attention transformer` trains both, scores them, draws each
    one's attention maps (the LSTM's where they always were) and writes a transformer
    model.pt that `caption predict` rebuilds from its config."""
    import json

    from convattn.caption.predict import predict
    from convattn.caption.run import run_dir
    from convattn.cli import main

    assert main(["caption", "--data", str(tiny_data), "--out", str(tmp_path), "--preset", "smoke",
                 "--models", "attention", "transformer", "--model-dim", "32", "--heads", "2", "--device", "cpu",
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    m = summary["models"]["transformer"]
    assert set(summary["models"]) == {"attention", "transformer"} and isinstance(m["test_bleu4"], float)
    assert 0 <= m["border_mass"] <= 1 and set(m["coco"]) >= {"bleu4", "cider"}
    figures = summary["figures"]
    assert figures["attention"] == {name: f"figures/attention_{name}.png" for name in ("219", "540", "357")}
    assert figures["attention_models"]["attention"] == figures["attention"]
    for name, rel in figures["attention_models"]["transformer"].items():
        assert rel == f"figures/attention_{name}_transformer.png" and (tmp_path / rel).stat().st_size > 1000
    model_pt = run_dir(tmp_path, "blocks", "transformer", 42) / "model.pt"
    image = next((tiny_data / "images").iterdir())
    [(path, caption)] = predict(model_pt, [image], "cpu", beam=2, attention_maps=tmp_path / "maps")
    assert path == str(image) and (tmp_path / "maps" / f"{image.stem}.png").stat().st_size > 1000
