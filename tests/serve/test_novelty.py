"""The out-of-domain warning (serve/novelty.py) on the tiny data of conftest: the threshold
is the 1st percentile of the validation images' nearest-training cosine similarities,
recomputed here from the run's feature cache; noise and a flat colour fall below it, every
training and test image does not; models without their dataset's cache say why.

On the tiny data (9 training images, all on white; 3 validation and 4 test images, on
black), measured: validation nearest similarities 0.80-0.85 (threshold 0.800), test images
0.85-0.88, training images 1.0, uniform noise 0.26, flat grey 0.16."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from convattn.caption.features import dataset_features
from convattn.caption.rerank import global_features
from convattn.data.captions import load_dataset
from convattn.serve.catalog import given_models
from convattn.serve.cli import build
from convattn.serve.models import ModelStore

CPU = torch.device("cpu")


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def noise() -> bytes:
    rng = np.random.default_rng(0)
    return png(Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)))


def grey() -> bytes:
    return png(Image.new("RGB", (128, 128), (128, 128, 128)))


def caption(client, data: bytes, model: str) -> dict:
    r = client.post("/api/caption", files={"image": ("x.png", data)}, data={"model": model, "beam": "1"})
    assert r.status_code == 200, r.text
    return r.json()["novelty"]


@pytest.fixture(scope="module")
def threshold(tiny_data, fake_run) -> float:
    """The 1st percentile of the validation images' nearest-training similarities, from the
    cached features as the run's reranker reads them."""
    dataset = load_dataset(tiny_data)
    features = torch.from_numpy(np.array(dataset_features(dataset, fake_run.spec, CPU, quiet=True)[0]))
    train, val = (global_features(features[[im.index for im in dataset.split(s)]]) for s in ("train", "val"))
    return float(np.percentile((val @ train.T).max(dim=1).values.numpy(), 1))


def test_threshold_is_the_1st_percentile_of_validation_images(client, threshold):
    for m in client.get("/api/models").json():
        assert m["novelty"]["threshold"] == pytest.approx(threshold, abs=1e-6)  # float32 either way
        assert (m["novelty"]["training_images"], m["novelty"]["validation_images"]) == (9, 3)
        assert m["novelty"]["percentile"] == 1 and m["novelty"]["reason"] is None


@pytest.mark.parametrize("make", [noise, grey])
def test_images_unlike_the_training_set_are_flagged(client, make, threshold):
    for m in client.get("/api/models").json():
        out = caption(client, make(), m["id"])
        assert out["unlike_training"] is True and out["similarity"] < out["threshold"] - 0.3
        assert out["message"] == (
            f"this image is unlike every training image (nearest training image similarity "
            f"{out['similarity']:.3f}, below the 1st percentile of validation images, "
            f"{threshold:.3f}): the caption is likely wrong")


@pytest.mark.parametrize("split", ["train", "test"])
def test_images_of_the_dataset_are_not(client, tiny_data, split):
    model = client.get("/api/models").json()[0]["id"]
    dataset = load_dataset(tiny_data)
    for im in dataset.split(split):
        out = caption(client, dataset.path(im).read_bytes(), model)
        assert out["unlike_training"] is False and out["similarity"] >= out["threshold"], im.name
        assert out["message"].startswith("like the training images: nearest training image similarity")
        if split == "train":  # its own features, the cache's bytes: cosine 1 up to float32 sums
            assert out["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_a_reranker_block_gives_the_same_training_features(stages_dir):
    """rsicd-best's model.pt carries its training globals; rsicd's model reads them from the
    cache: the same calibration."""
    _, store = build(None, str(stages_dir), "cpu")
    by_recipe = {(m.recipe, m.reranker is not None): m for m in store.models.values() if m.dataset == "RSICD"}
    with_block, from_cache = by_recipe["rsicd-best", True], by_recipe["rsicd", False]
    torch.testing.assert_close(with_block.novelty.train_globals, from_cache.novelty.train_globals,
                               atol=1e-6, rtol=0)  # the same mean, summed in another order at most
    assert with_block.novelty.threshold == pytest.approx(from_cache.novelty.threshold, abs=1e-6)


def test_no_check_without_the_runs_data(report_dir, tmp_path, monkeypatch):
    loose = tmp_path / "model.pt"
    shutil.copy(report_dir / "caption" / "runs" / "blocks" / "attention" / "seed42" / "model.pt", loose)
    store = ModelStore(given_models([loose]), CPU)
    out = store.caption("m0", Image.open(io.BytesIO(noise())).convert("RGB"))["novelty"]
    assert out["unlike_training"] is None and out["similarity"] is None
    assert "not in a run folder with a summary.json" in out["reason"] and out["message"] == out["reason"]

    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "empty-cache"))  # the features are not here
    _, store = build(None, str(report_dir), "cpu")
    reason = store.info()[0]["novelty"]["reason"]
    assert "features of" in reason and "are not cached on this machine" in reason
    # the page names folders by their last part; the server's log has the whole reason
    assert "..." in reason and not re.search(r"(?<![\w.])/\w", reason), reason
    assert str(tmp_path / "empty-cache") in store.models["m0"].novelty.reason
    out = store.caption("m0", Image.open(io.BytesIO(noise())).convert("RGB"))["novelty"]
    assert out["unlike_training"] is None and out["reason"] == reason
