"""summary["comparisons"] (every pair of decoders, bleu4 and CIDEr-D) and the self-critical
fields of a model's summary, on the tiny dataset with the best-smoke recipe shrunk."""

import numpy as np
import pytest

from convattn.caption import experiment, metrics
from convattn.caption.presets import PRESETS
from convattn.data.captions import load_dataset

# the best-smoke recipe (self-critical epoch, beam, outer ring, layer norm) with all three
# decoders, two seeds, small sizes so it trains in seconds
THREE = PRESETS["best-smoke"].replace(models=("no_attention", "attention", "transformer"), seeds=2,
                                      bootstrap=200, embed_dim=16, hidden_dim=32, attention_dim=16,
                                      model_dim=32, layers=1, heads=2)
KEYS = {"pair", "metric", "difference", "ci_low", "ci_high", "excludes_zero", "seeds", "images", "samples"}


@pytest.fixture(scope="module")
def summary(tiny_data, tmp_path_factory):
    return experiment.run(THREE, tiny_data, tmp_path_factory.mktemp("three"), device="cpu", quiet=True)


def test_every_pair_on_bleu4_and_cider(summary):
    comparisons = summary["comparisons"]
    # the recipe trains with a self-critical stage: its cross-entropy models are compared too
    metrics_ = ("bleu4", "cider", "cider_before_scst")
    assert [(c["pair"], c["metric"]) for c in comparisons] == [
        (pair, metric) for pair in ("attention - no_attention", "transformer - no_attention",
                                    "transformer - attention") for metric in metrics_]
    models = summary["models"]
    for c in comparisons:
        assert KEYS <= set(c) and c["seeds"] == 2 and c["images"] == 8 and c["samples"] == 200
        assert c["ci_low"] <= c["difference"] <= c["ci_high"]
        assert c["excludes_zero"] == (c["ci_low"] > 0 or c["ci_high"] < 0)
        b, a = c["pair"].split(" - ")
        # per-image scores averaged over seeds and images: the difference of the models' means
        if c["metric"] == "cider_before_scst":
            before = {m: models[m]["before_scst"]["coco"]["cider"]["mean"] for m in (a, b)}
            assert c["difference"] == pytest.approx(before[b] - before[a], abs=1e-9)
            continue
        mean = "test_bleu4_mean" if c["metric"] == "bleu4" else "cider_mean"
        assert c["difference"] == pytest.approx(models[b][mean] - models[a][mean], abs=1e-9)
    # the study's own comparison is kept as it was, and agrees with its pair's bleu4 entry
    study = summary["comparison"]
    assert study["pair"] == "attention - no_attention" and study["metric"] == "bleu4"
    for key in ("difference", "ci_low", "ci_high", "images", "samples"):
        assert comparisons[0][key] == study[key]


def test_per_image_cider_is_against_the_test_references(summary, tiny_data):
    dataset = load_dataset(tiny_data)
    test = dataset.split("test")
    references = [[list(c) for c in im.captions] for im in test]
    run = summary["models"]["transformer"]
    hyps = [summary["captions"][im.name]["transformer"].split() for im in test]
    # the first seed's captions scored per image average to that seed's CIDEr-D
    assert np.mean(metrics.cider_per_image(references, hyps)) == pytest.approx(run["seeds"][0]["cider"])


def test_self_critical_fields(summary):
    for model in THREE.models:
        m = summary["models"][model]
        # one cross-entropy epoch, then one self-critical epoch: one reward; val scores after each
        assert len(m["scst_reward"]) == THREE.scst_epochs == 1
        assert len(m["val_bleu4"]) == len(m["val_cider"]) == THREE.epochs + THREE.scst_epochs
        assert all(len(s["scst_reward"]) == 1 for s in m["seeds"])
        assert m["scst_reward"] == m["seeds"][0]["scst_reward"]
        # the cross-entropy models' test scores, and the paired gain of the self-critical stage
        before = m["before_scst"]
        assert set(before["coco"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l"}
        gain = before["scst_gain"]
        assert gain["difference"] == pytest.approx(m["coco"]["cider"]["mean"] - before["coco"]["cider"]["mean"])
        assert gain["ci_low"] <= gain["difference"] <= gain["ci_high"]


def test_no_self_critical_fields_without_the_stage(summary, tiny_data, tmp_path):
    one = THREE.replace(models=("no_attention",), seeds=1, scst_epochs=0, beam=1, rerank=0)
    plain = experiment.run(one, tiny_data, tmp_path, device="cpu", quiet=True)
    assert "scst_reward" not in plain["models"]["no_attention"] and "before_scst" not in plain["models"]["no_attention"]
    assert plain["comparisons"] == [] and "comparison" not in plain
