"""The honest protocol: the checkpoint chosen on validation CIDEr-D, per-epoch test scores
kept for the "as published" column only, and paired comparisons between two recipes."""

import json

import pytest

from convattn.caption import experiment
from convattn.caption.compare import compare_summaries, load_model_summary
from convattn.caption.presets import PRESETS
from convattn.cli import main
from convattn.common import io

CHOSEN = PRESETS["smoke"].replace(epochs=3, seeds=2, bootstrap=100, models=("attention",),
                                  select="val_cider")


@pytest.fixture(scope="module")
def chosen(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("chosen")
    return out, experiment.run(CHOSEN, tiny_data, out, device="cpu", quiet=True)


def test_the_run_reports_the_epoch_with_the_best_validation_cider(chosen):
    _, summary = chosen
    for s in summary["models"]["attention"]["seeds"]:
        assert len(s["val_cider"]) == len(s["test_cider"]) == len(s["test_coco_bleu4"]) == 3
        best = max(range(3), key=lambda e: s["val_cider"][e])  # the first of equals, as the run
        # the reported test scores are that epoch's: the same decoder, decoding and references
        assert s["cider"] == pytest.approx(s["test_cider"][best], rel=1e-9)
        assert s["coco"]["bleu4"] == pytest.approx(s["test_coco_bleu4"][best], rel=1e-9)
        assert s["test_bleu4"] == s["test_bleu4_best"]
    assert summary["models"]["attention"]["best_epoch"] == 1 + max(
        range(3), key=lambda e: summary["models"]["attention"]["seeds"][0]["val_cider"][e])


def test_as_published_is_the_best_test_epoch_and_seed(chosen):
    _, summary = chosen
    m = summary["models"]["attention"]
    every = [(c, s["seed"], e + 1) for s in m["seeds"] for e, c in enumerate(s["test_cider"])]
    cider, seed, epoch = max(every)
    assert (m["as_published"]["cider"], m["as_published"]["seed"], m["as_published"]["epoch"]) == (cider, seed, epoch)
    run = next(s for s in m["seeds"] if s["seed"] == seed)
    assert m["as_published"]["bleu4"] == run["test_coco_bleu4"][epoch - 1]
    assert m["as_published"]["cider"] >= max(s["cider"] for s in m["seeds"])


def test_the_final_decoder_is_the_studys_default(tiny_data, tmp_path):
    summary = experiment.run(CHOSEN.replace(select="final", seeds=1), tiny_data, tmp_path, device="cpu", quiet=True)
    s = summary["models"]["attention"]["seeds"][0]
    assert s["cider"] == pytest.approx(s["test_cider"][-1], rel=1e-9)


def test_model_pt_carries_the_chosen_decoder(chosen, tiny_data, capsys):
    out, summary = chosen
    names = list(summary["captions"])[:3]
    files = [str(tiny_data / "images" / summary["captions"][n]["filename"]) for n in names]
    model = out / "runs" / "blocks" / "attention" / "seed42" / "model.pt"
    capsys.readouterr()
    assert main(["caption", "predict", "--model", str(model), *files]) == 0
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == [summary["captions"][n]["attention"] for n in names]


def _summary(fingerprint: str, preset: str, per_image: list[float]) -> dict:
    return {"data": {"fingerprint": fingerprint}, "dataset": {"path": "/d"}, "config": {"preset": preset},
            "seeds": [42, 43], "models": {"attention": {"cider_per_image": per_image}}}


def test_two_recipes_are_compared_image_by_image(tmp_path, capsys):
    a = _summary("f", "rsicd", [1.0, 2.0, 3.0, 4.0])
    b = _summary("f", "rsicd-best", [1.5, 2.5, 3.5, 4.5])
    out = compare_summaries((a, "attention"), (b, "attention"), samples=200)
    # every image gains exactly 0.5: each resample's mean difference is 0.5
    assert out["difference"] == out["ci_low"] == out["ci_high"] == pytest.approx(0.5)
    assert out["excludes_zero"] and out["pair"] == "rsicd-best:attention - rsicd:attention"
    for name, s in (("a", a), ("b", b)):
        io.write_json(tmp_path / name / "summary.json", s)
    assert main(["caption", "compare", f"{tmp_path / 'a'}:attention", f"{tmp_path / 'b'}:attention", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["difference"] == pytest.approx(0.5)


@pytest.mark.parametrize("spec, message", [("nowhere:attention", "no summary.json"),
                                           ("{a}:lstm", "has no model 'lstm'"), ("{a}", "expected OUT:MODEL")])
def test_compare_errors_name_the_fix(tmp_path, spec, message):
    io.write_json(tmp_path / "a" / "summary.json", _summary("f", "x", [1.0]))
    with pytest.raises(Exception, match=message):
        load_model_summary(spec.format(a=tmp_path / "a"))
    other = _summary("g", "y", [1.0])
    with pytest.raises(Exception, match="different datasets"):
        compare_summaries((_summary("f", "x", [1.0]), "attention"), (other, "attention"))
