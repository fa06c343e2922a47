"""Seed ensembles (caption/ensemble.py): the members' word probabilities averaged at every
step, decoded through the one inference path; `caption ensemble` and `predict --model A B`."""

import json

import pytest
import torch

from convattn.caption import experiment
from convattn.caption.decoders import DecoderWithAttention, DecoderWithoutAttention, TransformerDecoder
from convattn.caption.ensemble import SeedEnsemble, load_ensemble
from convattn.caption.presets import PRESETS
from convattn.caption.search import beam_search, greedy
from convattn.cli import main
from convattn.common.errors import UserError
from convattn.data.captions import END_ID, START_ID

B, R, C, V = 4, 4, 16, 12
ENSEMBLED = PRESETS["smoke"].replace(epochs=2, seeds=2, bootstrap=100, models=("attention",))


def make(cls, seed):
    torch.manual_seed(seed)
    if cls is TransformerDecoder:  # R = 4: a 2x2 grid
        return cls(vocab_size=V, feature_dim=C, model_dim=16, layers=1, heads=2).eval()
    return cls(vocab_size=V, feature_dim=C, embed_dim=8, hidden_dim=10).eval()


@pytest.mark.parametrize("cls", [DecoderWithoutAttention, DecoderWithAttention, TransformerDecoder])
def test_an_ensemble_of_copies_decodes_as_the_model(cls):
    dec = make(cls, 0)
    with torch.no_grad():
        dec.fc.bias[END_ID] += 1.0  # some captions end early, others run to max_steps
    feats = torch.randn(B, R, C, generator=torch.Generator().manual_seed(1))
    twice = SeedEnsemble([dec, make(cls, 0)])
    twice.members[1].load_state_dict(dec.state_dict())
    ids, alphas = greedy(dec, feats, 8)
    e_ids, e_alphas = greedy(twice, feats, 8)
    assert torch.equal(ids, e_ids)
    if alphas is not None:
        # tolerance basis: the mean of two equal float32 maps is the map up to one rounding
        torch.testing.assert_close(alphas, e_alphas, rtol=1e-6, atol=1e-7)
    assert [[h["ids"].tolist() for h in image] for image in beam_search(dec, feats, 8, 3)] \
        == [[h["ids"].tolist() for h in image] for image in beam_search(twice, feats, 8, 3)]


def test_the_ensemble_averages_the_members_probabilities():
    members = [make(DecoderWithAttention, 0), make(DecoderWithAttention, 1), make(DecoderWithoutAttention, 2)]
    ensemble = SeedEnsemble(members)
    assert not ensemble.uses_attention  # a member without attention: no map to average
    feats = torch.randn(B, R, C)
    words = torch.full((B,), START_ID)
    with torch.no_grad():
        memory = ensemble.prepare(feats)
        logp, state, alpha = ensemble.step(words, ensemble.init_state(memory), memory)
        probs = [m.step(words, m.init_state(m.prepare(feats)), m.prepare(feats))[0].double().softmax(-1)
                 for m in members]
    assert alpha is None and len(state) == 3
    # tolerance basis: float32 logsumexp of log-softmaxes against the float64 mean of the
    # softmaxes: float32 rounding of log-probabilities of order 1 (measured at most 3.4e-7 over
    # 20 random inputs; 1e-5 leaves 30x for other CPUs and thread counts)
    torch.testing.assert_close(logp.double(), torch.stack(probs).mean(0).log(), rtol=0, atol=1e-5)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(B), atol=1e-5)


@pytest.fixture(scope="module")
def two_seeds(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensembled")
    experiment.run(ENSEMBLED, tiny_data, out, device="cpu", quiet=True)
    return out


def test_caption_ensemble_scores_validation_and_test_against_the_seeds(two_seeds, capsys):
    assert main(["caption", "ensemble", f"{two_seeds}:attention", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((two_seeds / "ensemble_attention.json").read_text())
    assert printed["val"] == stored["val"] and len(stored["val"]["seeds_cider"]) == 2
    summary = json.loads((two_seeds / "summary.json").read_text())
    assert stored["seeds"] == summary["seeds"] == [42, 43]
    assert len(stored["test"]["cider_per_image"]) == summary["dataset"]["images"]["test"]
    v = stored["vs_seeds"]
    per_seed = summary["models"]["attention"]["cider_per_image"]
    assert v["difference"] == pytest.approx(
        sum(stored["test"]["cider_per_image"]) / len(per_seed) - sum(per_seed) / len(per_seed), abs=1e-9)
    assert v["ci_low"] <= v["difference"] <= v["ci_high"]


def test_predict_with_several_models_is_the_ensemble(two_seeds, tiny_data, capsys):
    models = [str(two_seeds / "runs" / "blocks" / "attention" / f"seed{s}" / "model.pt") for s in (42, 43)]
    image = str(next((tiny_data / "images").iterdir()))
    capsys.readouterr()
    assert main(["caption", "predict", "--model", models[0], "--model", models[1], image]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith(image + "\t")
    ensemble, _ = load_ensemble(models, "cpu")
    assert isinstance(ensemble, SeedEnsemble) and len(ensemble.members) == 2


def test_an_ensemble_of_other_runs_is_one_line(two_seeds, tmp_path, capsys):
    model = two_seeds / "runs" / "blocks" / "attention" / "seed42" / "model.pt"
    ckpt = torch.load(model, weights_only=False)
    ckpt["vocab"] = [*ckpt["vocab"][:-1], "another-word"]  # a run with another vocabulary
    torch.save(ckpt, tmp_path / "model.pt")
    with pytest.raises(UserError, match="vocab differs"):
        load_ensemble([model, tmp_path / "model.pt"], "cpu")
    assert main(["caption", "ensemble", f"{tmp_path}:attention"]) == 2
    assert "caption ensemble" in capsys.readouterr().err
