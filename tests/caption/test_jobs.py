"""--jobs: (decoder, seed) runs trained in parallel processes give the numbers of one at a time."""

import json

import pytest
import torch

from convattn.caption import experiment
from convattn.caption.presets import PRESETS
from convattn.common import io
from convattn.common.errors import UserError

SMOKE = PRESETS["smoke"].replace(epochs=2, bootstrap=100)  # one seed of both decoders


def _runs(out):
    """Every run's result.json and final decoder weights, by (layer, model, seed) folder."""
    found = {}
    for result in sorted(out.glob("runs/*/*/seed*/result.json")):
        folder = result.parent
        found[folder.relative_to(out).as_posix()] = (
            json.loads(result.read_text()), io.load_checkpoint(folder / "model.pt")["decoder"])
    return found


def test_parallel_runs_equal_one_at_a_time(tiny_data, tmp_path):
    one = experiment.run(SMOKE, tiny_data, tmp_path / "one", device="cpu", quiet=True)
    two = experiment.run(SMOKE.replace(jobs=2), tiny_data, tmp_path / "two", device="cpu", quiet=True)
    a, b = _runs(tmp_path / "one"), _runs(tmp_path / "two")
    assert len(a) == 2 and a.keys() == b.keys()
    for name in a:
        (ra, wa), (rb, wb) = a[name], b[name]
        # bit for bit: the same losses, validation scores, captions and weights
        for key in ("train_loss", "val_bleu4", "test_bleu4", "test_bleu4_best", "cider", "captions"):
            assert ra[key] == rb[key], (name, key)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (name, k)
    for model in ("no_attention", "attention"):
        assert one["models"][model]["test_bleu4_mean"] == two["models"][model]["test_bleu4_mean"]
    assert one["captions"] == two["captions"]
    # speed only: not part of the run key, so the stored runs are reused, not trained again
    again = experiment.run(SMOKE.replace(jobs=2), tiny_data, tmp_path / "one", device="cpu", quiet=True)
    assert again["models"] == one["models"]


def test_jobs_is_checked():
    with pytest.raises(UserError, match="--jobs -1"):
        SMOKE.replace(jobs=-1)


def test_parallel_jobs_bounds():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert experiment.parallel_jobs(SMOKE.replace(jobs=4), cpu, 2) == 2
    assert experiment.parallel_jobs(SMOKE.replace(jobs=1), cpu, 10) == 1
    assert experiment.parallel_jobs(SMOKE.replace(jobs=0), cpu, 1) == 1
    assert experiment.parallel_jobs(SMOKE.replace(jobs=4), cuda, 10) == 1
