"""A dataset of one's own: other file names than Sydney's, and an empty caption (as RSICD has)."""

import json
import time

import pytest

from convattn.caption import experiment
from convattn.caption.presets import PRESETS
from convattn.cli import main
from convattn.common.errors import UserError
from convattn.data.captions import load_dataset
from tiny_captions import make_tiny_captions


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """20 images of 32x32, scene_000.png ... scene_019.png (test: scene_016 to scene_019);
    scene_003.png's third caption and scene_005.png's first are empty."""
    root = make_tiny_captions(tmp_path_factory.mktemp("own"), n_train=12, n_val=4, n_test=4, size=32,
                              names="scene_{:03d}.png")
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data["images"][3]["sentences"][2]["tokens"] = []
    data["images"][5]["sentences"][0]["tokens"] = [" ", ""]
    path.write_text(json.dumps(data))
    return root


def test_empty_captions_are_skipped_with_one_warning(own_data, capsys):
    ds = load_dataset(own_data)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.strip() == (f"{own_data / 'dataset.json'}: skipped 2 empty captions "
                           "(scene_003.png #2, scene_005.png #0)")
    assert [len(im.captions) for im in ds.images[3:6]] == [4, 5, 4]


def test_an_image_without_any_caption_is_an_error(tmp_path):
    root = make_tiny_captions(tmp_path / "d", names="scene_{:03d}.png")
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    for sentence in data["images"][7]["sentences"]:
        sentence["tokens"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"images\[7\] \(scene_007.png\): every caption is empty"):
        load_dataset(root)


def test_show_defaults_to_the_first_test_images(own_data, capsys):
    shown = experiment.choose_shown(load_dataset(own_data), PRESETS["homework"].show)
    assert [im.name for im in shown] == ["scene_016", "scene_017", "scene_018"]
    assert "lacks the study's images 219, 540, 357; showing its first test images instead: " \
           "scene_016, scene_017, scene_018" in capsys.readouterr().err


def test_an_explicit_show_naming_a_missing_image_is_an_error(own_data):
    with pytest.raises(UserError, match="--show 219: no image 219 in"):
        experiment.choose_shown(load_dataset(own_data), ("219",))
    assert [im.name for im in experiment.choose_shown(load_dataset(own_data), ("scene_019.png",))] \
        == ["scene_019"]


def test_caption_with_no_flag_but_data(own_data, tmp_path, monkeypatch, capsys):
    """`convattn caption --data DIR`: the homework preset (5 seeds of both decoders, 6 epochs)
    end to end on a small dataset of one's own, in seconds. Java is hidden from PATH: METEOR
    would start a JVM that loads its paraphrase tables for each of the 10 runs (~20 s each)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-java"))
    start = time.perf_counter()
    assert main(["caption", "--data", str(own_data)]) == 0
    seconds = time.perf_counter() - start
    summary = json.loads((tmp_path / "runs/caption/summary.json").read_text())
    assert summary["preset"] == "homework" and summary["seeds"] == [42, 43, 44, 45, 46]
    assert summary["config"]["show"] == ["scene_016", "scene_017", "scene_018"]
    assert set(summary["figures"]["attention"]) == {"scene_016", "scene_017", "scene_018"}
    assert set(summary["captions"]) == {"scene_016", "scene_017", "scene_018", "scene_019"}
    assert summary["models"]["attention"]["meteor"] is None
    err = capsys.readouterr().err
    assert err.count("skipped 2 empty captions") == 1
    print(f"homework preset on {len(summary['captions'])} test images: {seconds:.1f} s")
