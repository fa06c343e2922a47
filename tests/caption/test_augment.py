"""Augmentation (--augment dihedral): the 8 flips and quarter turns of every training image,
encoded and cached per symmetry; each training pair is read under one drawn per epoch,
except the pairs whose caption names a direction, which keep their image as it is."""

import json

import numpy as np
import pytest
import torch

from convattn.caption import experiment, run
from convattn.caption.data import Data, load_data, names_direction
from convattn.caption.encoders import EncoderSpec, dihedral
from convattn.caption.features import cache_key
from convattn.caption.presets import HOMEWORK, PRESETS
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset

AUGMENTED = PRESETS["smoke"].replace(models=("attention",), augment="dihedral")


def test_the_eight_symmetries_of_the_square():
    image = torch.arange(2 * 3 * 3.0).reshape(2, 3, 3)   # no symmetry of its own
    out = [dihedral(image, t) for t in range(8)]
    assert out[0] is image
    assert torch.equal(out[1], torch.rot90(image, 1, dims=(-2, -1)))
    assert torch.equal(out[4], image.flip(-1))
    assert len({tuple(x.flatten().tolist()) for x in out}) == 8     # all different
    for t in range(8):  # each is a permutation of the pixels, channels kept together
        assert sorted(out[t][0].flatten().tolist()) == sorted(image[0].flatten().tolist())
        assert torch.equal(out[t][1] - out[t][0], torch.full((3, 3), 9.0))


def test_directions_are_words_of_orientation():
    assert names_direction("a road on the left of the river".split())
    assert names_direction("the upper part is a vertical bridge".split())
    assert not names_direction("many green trees around a lake".split())
    assert not names_direction("a lefty player".split())  # words, not substrings


def test_a_symmetry_enters_the_cache_key_only_when_set(tiny_data):
    dataset = load_dataset(tiny_data)
    assert "transform" not in cache_key(dataset, EncoderSpec(image_size=64))
    assert cache_key(dataset, EncoderSpec(image_size=64, transform=3))["transform"] == 3
    assert "augment" not in HOMEWORK.run_key() and AUGMENTED.run_key()["augment"] == "dihedral"


@pytest.fixture
def directional(tiny_copy):
    """The tiny dataset with "left" added to every third training caption."""
    path = tiny_copy / "dataset.json"
    meta = json.loads(path.read_text())
    n = 0
    for image in meta["images"]:
        for sentence in image["sentences"]:
            if image["split"] == "train":
                if n % 3 == 0:
                    sentence["tokens"] = sentence["tokens"] + ["on", "the", "left"]
                n += 1
    path.write_text(json.dumps(meta))
    return tiny_copy


def test_pairs_naming_a_direction_keep_their_image(directional):
    dataset = load_dataset(directional)
    data, _ = load_data(dataset, EncoderSpec(image_size=64), AUGMENTED, "cpu", quiet=True)
    assert data.variants.shape[0] == 8 and torch.equal(data.variants[0], data.features)
    assert int(data.train_directional.sum()) == (len(data.train_images) + 2) // 3
    state = torch.random.get_rng_state()
    draws = torch.stack([data.symmetries(42, epoch) for epoch in range(20)])   # [20, pairs]
    assert torch.equal(torch.random.get_rng_state(), state)   # the training's stream untouched
    assert torch.equal(draws[0], data.symmetries(42, 0))       # a resumed epoch draws the same
    assert (draws[:, data.train_directional] == 0).all()
    assert set(draws[:, ~data.train_directional].unique().tolist()) == set(range(8))
    # the rows read under a symmetry are that symmetry's features: the images' own, turned
    pairs = torch.arange(6)
    s = torch.tensor([0, 1, 2, 5, 7, 4])
    images = data.train_images[pairs]
    for i in range(6):
        assert torch.equal(data.rows(images[i:i + 1], s[i:i + 1]), data.variants[s[i], images[i]][None].float())
    # a turned image's features are not the image's own (the cache holds the real encodings)
    assert not torch.equal(data.variants[1], data.variants[0])


def test_an_augmented_run_trains_on_every_symmetry_and_differs(tiny_data, tmp_path):
    plain = experiment.run(AUGMENTED.replace(augment="none"), tiny_data, tmp_path / "plain", device="cpu",
                           quiet=True)
    augmented = experiment.run(AUGMENTED, tiny_data, tmp_path / "aug", device="cpu", quiet=True)
    loss = [s["models"]["attention"]["seeds"][0]["train_loss"] for s in (plain, augmented)]
    assert loss[0] != loss[1] and np.isfinite(loss[1]).all()
    stored = json.loads((run.run_dir(tmp_path / "aug", "blocks", "attention", 42) / "result.json").read_text())
    assert stored["config"]["augment"] == "dihedral"


def test_turns_need_a_square_grid(tiny_data, monkeypatch):
    from convattn.caption import data as data_module

    dataset = load_dataset(tiny_data)
    features = np.random.default_rng(0).standard_normal((len(dataset.images), 6, 4)).astype(np.float16)
    monkeypatch.setattr(data_module, "dataset_features", lambda *a, **k: (features, (2, 3), {}))
    with pytest.raises(UserError, match="--augment dihedral: quarter turns need square images"):
        load_data(dataset, EncoderSpec(image_size=64), AUGMENTED, "cpu", quiet=True)
    assert Data(dataset, features, (2, 3), "cpu").symmetries(42, 0) is None
