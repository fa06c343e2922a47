"""Integration on the real Sydney-Captions (../shared/datasets/sydney-captions from the repo
root); skipped when it is absent. Images at 64x64 (a 2x2 grid) keep feature extraction to
seconds; the metric is the study's bleu4, unchanged."""

from pathlib import Path

import pytest

from convattn.caption import experiment
from convattn.caption.presets import PRESETS
from convattn.data.captions import build_vocabulary, load_dataset

SYDNEY = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "sydney-captions"

pytestmark = pytest.mark.skipif(not (SYDNEY / "dataset.json").is_file(),
                                reason=f"Sydney-Captions not found at {SYDNEY.resolve()}")


def test_sydney_facts():
    ds = load_dataset(SYDNEY)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [497, 58, 58]
    vocab, max_len = build_vocabulary(ds)
    assert (len(vocab), max_len) == (190, 22)
    assert ds.sizes == {(500, 500): 613}
    assert {ds.by_name(n).split for n in ("219", "540", "357")} == {"test"}


def test_one_epoch_gives_positive_bleu4(tmp_path):
    config = PRESETS["smoke"].replace(models=("attention",), epochs=1, seeds=1, image_size=64)
    summary = experiment.run(config, SYDNEY, tmp_path, device="cpu", quiet=True)
    m = summary["models"]["attention"]
    assert summary["vocab_size"] == 190 and summary["max_len"] == 22
    assert m["test_bleu4"] > 0 and m["val_bleu4"][0] > 0
    assert len(summary["captions"]) == 58
