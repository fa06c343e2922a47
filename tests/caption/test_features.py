import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convattn.caption import features
from convattn.caption.encoders import EncoderSpec, build_encoder, load_image
from convattn.caption.features import dataset_features
from convattn.caption.inference import image_features
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset

CPU = torch.device("cpu")


def test_features_are_cached_and_match_the_encoder(tiny_copy):
    ds = load_dataset(tiny_copy)
    spec = EncoderSpec(layer="blocks")
    f1, grid, info = dataset_features(ds, spec, CPU, quiet=True)
    assert not info["cached"] and f1.dtype == np.float16 and grid == (2, 2)
    assert f1.shape == (len(ds.images), 4, 320)
    assert isinstance(f1, np.memmap)
    f2, _, info2 = dataset_features(ds, spec, CPU, quiet=True)
    assert info2["cached"] and info2["folder"] == info["folder"]
    np.testing.assert_array_equal(np.asarray(f1), np.asarray(f2))
    # row i is dataset.json's image i, flattened row-major over the grid
    im = ds.images[7]
    with torch.inference_mode():
        direct = build_encoder(spec)(load_image(ds.path(im))[None])[0].flatten(1).T
    np.testing.assert_allclose(np.asarray(f1[7], dtype=np.float32), direct.numpy(), rtol=1e-2, atol=1e-2)


def test_an_image_encoded_on_its_own_gets_the_caches_features(tiny_data):
    """caption predict encodes each image file alone; encoded as the extraction encodes
    (channels-last) and rounded as the cache rounds (float16), an image of the dataset gets
    the very features the run's decoders were trained on and its captions decoded from."""
    ds = load_dataset(tiny_data)
    spec = EncoderSpec(layer="blocks")
    cached, grid, _ = dataset_features(ds, spec, CPU, quiet=True)
    images = ds.split("test") + ds.split("train")[:4]
    fresh, grids = image_features([ds.path(im) for im in images], spec, CPU)
    assert set(grids) == {grid}
    for im, f in zip(images, fresh):
        assert f.dtype == torch.float32
        assert torch.equal(f, torch.from_numpy(np.array(cached[im.index])).float()), im.name


def test_cache_is_invalidated_by_each_ingredient(tiny_copy):
    ds = load_dataset(tiny_copy)
    spec = EncoderSpec(layer="blocks")
    _, _, base = dataset_features(ds, spec, CPU, quiet=True)
    _, _, other_layer = dataset_features(ds, EncoderSpec(layer="head"), CPU, quiet=True)
    # a size no other test extracts at: the session cache is shared, and an identical tiny
    # dataset elsewhere would already hold it
    _, grid, other_size = dataset_features(ds, EncoderSpec(layer="blocks", image_size=80), CPU, quiet=True)
    assert grid == (3, 3)
    # an edited image: same name, new content
    path = ds.path(ds.images[0])
    Image.new("RGB", (48, 48), (0, 0, 255)).save(path)
    os.utime(path, ns=(1, 1))
    edited, _, after_edit = dataset_features(load_dataset(tiny_copy), spec, CPU, quiet=True)
    # an edited caption file
    assert '"coloured"' in (tiny_copy / "dataset.json").read_text()
    text = (tiny_copy / "dataset.json").read_text().replace('"coloured"', '"tinted"', 1)
    (tiny_copy / "dataset.json").write_text(text)
    _, _, after_json = dataset_features(load_dataset(tiny_copy), spec, CPU, quiet=True)
    folders = {base["folder"], other_layer["folder"], other_size["folder"], after_edit["folder"],
               after_json["folder"]}
    assert len(folders) == 5
    assert not any(i["cached"] for i in (other_layer, other_size, after_edit, after_json))


def test_an_incomplete_cache_is_recomputed(tiny_copy):
    ds = load_dataset(tiny_copy)
    spec = EncoderSpec(layer="blocks")
    _, _, info = dataset_features(ds, spec, CPU, quiet=True)
    os.remove(os.path.join(info["folder"], "meta.json"))  # as if killed before the end
    _, _, again = dataset_features(ds, spec, CPU, quiet=True)
    assert not again["cached"] and again["folder"] == info["folder"]


def test_an_interrupted_extraction_resumes_where_it_stopped(tiny_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(tiny_copy)
    spec = EncoderSpec(layer="blocks")
    monkeypatch.setattr(features, "RESUME_EVERY", 4)
    real_encode, encoded, stop_at = features.encode, [], [10]

    def recorded(encoder, dataset, spec, device, rows, batch_size):
        for lo, f in real_encode(encoder, dataset, spec, device, rows, batch_size):
            if lo in stop_at:
                raise KeyboardInterrupt  # as Ctrl-C after 10 images
            encoded.append(lo)
            yield lo, f

    monkeypatch.setattr(features, "encode", recorded)
    with pytest.raises(KeyboardInterrupt):
        dataset_features(ds, spec, CPU, quiet=True)
    assert encoded == list(range(10))
    encoded.clear()
    stop_at.clear()
    resumed, grid, info = dataset_features(ds, spec, CPU, quiet=True)
    assert encoded[0] == 8 and not info["cached"]  # the last flush was after 8 images
    assert not (Path(info["folder"]) / "partial.json").exists()
    monkeypatch.setattr(features, "encode", real_encode)
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "fresh"))
    whole, _, _ = dataset_features(ds, spec, CPU, quiet=True)
    np.testing.assert_array_equal(np.asarray(resumed), np.asarray(whole))  # same code, same machine


def test_mixed_image_sizes_need_image_size(tiny_copy):
    Image.new("RGB", (64, 40)).save(tiny_copy / "images" / "1.png")
    ds = load_dataset(tiny_copy)
    with pytest.raises(UserError, match="different sizes.*--image-size"):
        dataset_features(ds, EncoderSpec(layer="blocks"), CPU, quiet=True)
    _, grid, _ = dataset_features(ds, EncoderSpec(layer="blocks", image_size=64), CPU, quiet=True)
    assert grid == (2, 2)
