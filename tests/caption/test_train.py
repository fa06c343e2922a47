"""End to end on the tiny dataset: summary schema, figures, reuse, resume, predict, CLI."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from convattn.caption import train
from convattn.caption.presets import PRESETS
from convattn.cli import main

SMOKE = replace(PRESETS["smoke"], epochs=2, seeds=2, bootstrap=100)


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption-run")
    summary = train.run(SMOKE, tiny_data, out, device="cpu", quiet=True)
    return out, summary


def test_summary_schema(finished):
    out, summary = finished
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("vocab_size", "max_len", "encoder", "feature_layer", "config", "environment",
                "models", "comparison", "captions", "figures", "seeds", "timing"):
        assert key in summary, key
    assert summary["seeds"] == [42, 43]
    assert summary["encoder"]["grid"] == [2, 2] and summary["feature_layer"]["chosen"] == "blocks"
    for model in ("no_attention", "attention"):
        m = summary["models"][model]
        assert len(m["train_loss"]) == len(m["val_bleu4"]) == 2
        assert m["train_loss"][1] < m["train_loss"][0]
        for key in ("test_bleu4", "test_bleu4_best", "cider", "rouge_l", "seconds",
                    "test_bleu4_mean", "test_bleu4_std", "cider_mean", "cider_std"):
            assert isinstance(m[key], float), key
        assert set(m["corpus_bleu"]) == {"bleu1", "bleu2", "bleu3", "bleu4"}
        assert [s["seed"] for s in m["seeds"]] == [42, 43]
        assert m["test_bleu4"] == m["seeds"][0]["test_bleu4"]
        assert m["test_bleu4_mean"] == pytest.approx(sum(s["test_bleu4"] for s in m["seeds"]) / 2)
    comp = summary["comparison"]
    assert comp["ci_low"] <= comp["difference"] <= comp["ci_high"] and comp["images"] == 8
    assert set(summary["captions"]) == {im for im in summary["captions"]} and "219" in summary["captions"]
    assert len(summary["captions"]["219"]["references"]) == 5
    figures = summary["figures"]
    paths = [*figures["curves"].values(), figures["captions"], *figures["attention"].values()]
    assert set(figures["attention"]) == {"219", "540", "357"}
    for rel in paths:
        assert not Path(rel).is_absolute() and (out / rel).stat().st_size > 1000


def test_rerun_reuses_finished_runs_and_retrains_on_a_new_config(finished, tiny_data, capsys):
    out, summary = finished
    result = out / "runs/blocks/attention/seed42/result.json"
    stamp = result.stat().st_mtime_ns
    again = train.run(SMOKE, tiny_data, out, device="cpu", quiet=True)
    assert result.stat().st_mtime_ns == stamp
    assert again["models"]["attention"]["seeds"] == summary["models"]["attention"]["seeds"]
    # a different decoder setting must not reuse the stored run
    other = train.run(replace(SMOKE, seeds=1, models=("attention",), attention_act="relu"), tiny_data,
                      out, device="cpu", quiet=True)
    assert result.stat().st_mtime_ns != stamp
    assert other["config"]["attention_act"] == "relu"


def test_resume_continues_exactly(tiny_data, tmp_path, monkeypatch):
    config = replace(SMOKE, epochs=3, seeds=1, models=("attention",))
    straight = train.run(config, tiny_data, tmp_path / "straight", device="cpu", quiet=True)

    real = train.train_one_epoch
    def interrupted(*args, **kwargs):
        if args[4] == 2:  # the third epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.run(config, tiny_data, tmp_path / "resumed", device="cpu", quiet=True)
    monkeypatch.setattr(train, "train_one_epoch", real)
    resumed = train.run(config, tiny_data, tmp_path / "resumed", device="cpu", quiet=True, resume=True)
    a, b = straight["models"]["attention"], resumed["models"]["attention"]
    assert a["train_loss"] == b["train_loss"] and a["val_bleu4"] == b["val_bleu4"]
    assert a["test_bleu4"] == b["test_bleu4"]


def test_predict_matches_the_runs_captions(finished, tiny_data, capsys):
    out, summary = finished
    model = out / "runs/blocks/attention/seed42/model.pt"
    maps = out / "maps"
    assert main(["caption", "predict", "--model", str(model), str(tiny_data / "images/219.png"),
                 "--attention-maps", str(maps), "--device", "cpu"]) == 0
    path, caption = capsys.readouterr().out.strip().split("\t")
    assert path.endswith("219.png")
    assert caption == summary["captions"]["219"]["attention"]
    assert (maps / "219.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["caption", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convattn: error: --data") and err.count("\n") == 1
    assert main(["caption", "predict", "--model", str(tmp_path / "none.pt"), "x.png"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
