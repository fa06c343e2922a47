"""Reference captioners (prior, class-prior, nearest), named re-splits and the specificity
of captions: each on small data made here, against what it must give by hand."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from convattn.caption import metrics
from convattn.caption.data import Data
from convattn.caption.experiment import run
from convattn.caption.presets import PRESETS
from convattn.caption.reference import K_CANDIDATES, Nearest, class_prior, prior, unavailable
from convattn.caption.reward import CiderD, PairwiseCiderD, ngram_counts
from convattn.common.errors import UserError
from convattn.data.captions import CaptionDataset, CaptionImage, load_dataset
from convattn.data.splits import split_names

from tiny_captions import make_tiny_captions


def test_random_resplit_is_80_10_10_deterministic_and_named_by_its_seed():
    official = ["train"] * 70 + ["val"] * 15 + ["test"] * 15
    one = split_names(official, "random-1")
    assert [one.count(s) for s in ("train", "val", "test")] == [80, 10, 10]
    assert split_names(official, "random-1") == one               # same seed, same split
    assert split_names(official, "random-2") != one               # another seed, another split
    assert split_names(official, "official") == official
    # a shuffle of all images: some official test images land in training
    assert any(o == "test" and r == "train" for o, r in zip(official, one))
    with pytest.raises(UserError, match="--split random: expected official or random-N"):
        split_names(official, "random")


def test_load_dataset_applies_the_split_and_keeps_the_fingerprint(tiny_data):
    official = load_dataset(tiny_data)
    resplit = load_dataset(tiny_data, scheme="random-3")
    assert [im.split for im in resplit.images] == split_names([im.split for im in official.images], "random-3")
    assert resplit.fingerprint == official.fingerprint  # the files, whatever the split: one feature cache
    assert PRESETS["smoke"].replace(split="random-3").run_key()["split"] == "random-3"
    assert "split" not in PRESETS["smoke"].run_key()    # official: run keys as before


def _data(captions_by_image, splits, labels=None, features=None) -> Data:
    """A Data over hand-made captions; features [N, 1, C] (one region) default to one-hot rows."""
    images = [CaptionImage(index=i, filename=f"{i}.png", split=s, captions=[c.split() for c in caps],
                           label=None if labels is None else labels[i])
              for i, (caps, s) in enumerate(zip(captions_by_image, splits))]
    dataset = CaptionDataset(root=Path("hand"), images_dir=Path("hand/images"), name="hand", images=images)
    if features is None:
        features = np.eye(len(images), dtype=np.float16)[:, None, :]
    return Data(dataset, features, (1, 1), torch.device("cpu"))


def test_prior_and_class_prior_pick_the_most_frequent_training_caption():
    caps = [["a red roof", "a red roof", "green grass"], ["green grass", "a red roof"],
            ["blue sea", "blue sea"], ["blue sea", "white sand"], ["x"], ["y"], ["z"]]
    splits = ["train", "train", "train", "train", "val", "test", "test"]
    labels = ["town", "town", "beach", "beach", "town", "beach", "desert"]
    data = _data(caps, splits, labels)
    assert prior(data, "test") == [["a", "red", "roof"]] * 2         # 3 times, against blue sea's 3: met first
    # beach's own most frequent; desert has no training image: the prior
    assert class_prior(data, "test") == [["blue", "sea"], ["a", "red", "roof"]]
    assert unavailable("class-prior", data) is None
    unlabelled = _data(caps, splits)
    assert "needs a scene \"label\" on every image" in unavailable("class-prior", unlabelled)


def test_pairwise_cider_equals_the_reward_scorer_against_one_reference():
    rng = random.Random(0)
    words = "a b c d e the of and".split()
    refs = [[[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 5))]
            for _ in range(25)]
    flat = [c for r in refs for c in r]
    pairwise, scorer = PairwiseCiderD(refs).matrix(range(len(flat))), CiderD(refs)
    for i, caption in enumerate(flat):
        for j, reference in enumerate(flat):
            scorer.references[0] = [scorer._vector(ngram_counts(reference))]  # image 0 = this one reference
            # the same float64 formula summed in another order: rounding only
            assert pairwise[i, j] == pytest.approx(scorer.score(0, caption), rel=1e-12, abs=1e-12)


def test_nearest_picks_the_consensus_caption_of_the_k_nearest_images():
    # training images 0-2 are near the query (features close to its own), 3 far; the
    # caption the three near images share in substance is "a bridge over a river"
    caps = [["a bridge over a river", "a road near trees"],
            ["a bridge over a river", "many cars on a road"],
            ["a long bridge over a wide river", "a boat"],
            ["a dense residential area", "a dense residential area"],
            ["a bridge"], ["q"]]
    splits = ["train"] * 4 + ["val", "test"]
    features = np.array([[1, 0.1], [1, 0.2], [1, 0.3], [0, 1], [1, 0.15], [1, 0.15]], dtype=np.float16)
    data = _data(caps, splits, features=features[:, None, :])
    nearest = Nearest(data)
    picks = nearest.choices("test", ks=(1, 3))
    # k = 1: image 0 alone; each of its captions is scored against the other one, a tie:
    # the first
    assert picks[1] == [["a", "bridge", "over", "a", "river"]]
    # k = 3: the bridge caption, said twice, agrees with every near image; the far image's
    # caption is never a candidate
    assert picks[3] == [["a", "bridge", "over", "a", "river"]]
    # and the scores behind k = 3 by hand: candidate i's summed mean CIDEr-D against images 0-2
    flat = [c.split() for im in caps[:4] for c in im]
    pair = PairwiseCiderD([[c.split() for c in im] for im in caps[:4]]).matrix(range(len(flat)))
    owner = [0, 0, 1, 1, 2, 2]
    by_hand = [sum(np.mean([pair[i, j] for j in range(6) if owner[j] == m and j != i]) for m in range(3))
               for i in range(6)]
    assert int(np.argmax(by_hand)) == 0


def test_specificity_counts_distinct_copied_words_and_lengths():
    out = metrics.specificity(["a b", "a b", "c d e"], {"a b"}, [[["x", "y", "z", "w"]], [["x"]], [["y"]]])
    assert out == {"distinct_per_image": 2 / 3, "copied_from_training": 2 / 3, "vocabulary": 5,
                   "length_mean": pytest.approx(7 / 3), "references_length_mean": 2.0,
                   "references_vocabulary": 4}


@pytest.mark.parametrize("labels", [True, False])
def test_experiment_scores_reference_captioners_beside_a_decoder(tmp_path, labels):
    data_dir = make_tiny_captions(tmp_path / "d", labels=labels)
    config = PRESETS["smoke"].replace(models=("attention", "prior", "class-prior", "nearest"))
    summary = run(config, data_dir, tmp_path / "out", quiet=True)
    models = summary["models"]
    expected = ["attention", "prior", "class-prior", "nearest"] if labels else ["attention", "prior", "nearest"]
    assert list(models) == expected
    if not labels:
        assert "class-prior" in summary["skipped"]
    for name in expected:
        assert set(models[name]["specificity"]) >= {"distinct_per_image", "copied_from_training", "seeds"}
        assert models[name]["kind"] == ("decoder" if name == "attention" else "reference")
        assert len(models[name]["cider_per_image"]) == 8
    # a retrieved caption is a training caption by construction
    assert models["nearest"]["specificity"]["copied_from_training"]["mean"] == 1.0
    assert models["nearest"]["choice"]["k"] in K_CANDIDATES
    strongest = max((m for m in expected if m != "attention"), key=lambda m: models[m]["best_val_cider"])
    assert [c["pair"] for c in summary["against_reference"]] == [f"attention - {strongest}"] * 2
    # the test-set view and the report read them from "captions" like a decoder's
    first = next(iter(summary["captions"].values()))
    assert all(name in first for name in expected)
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stored["models"]["prior"]["deterministic"] is True


def _summary(split, preset, models):
    """A summary.json's parts that the protocol table reads: per model its seeds' test
    CIDEr-D and BLEU-4 and the "as published" pick."""
    return {"dataset": {"name": "hand", "split": split}, "config": {"preset": preset},
            "models": {name: {"kind": kind, "seeds": [{"cider": c, "coco": {"bleu4": c / 10}} for c in seeds],
                              "as_published": {"cider": max(seeds) + 0.1, "bleu4": 0.0}}
                       for name, (kind, seeds) in models.items()}}


def test_protocol_table_puts_each_run_in_its_column(tmp_path):
    from convattn.caption.protocol import format_protocol, protocol_table, read_summaries

    summaries = [_summary("official", "best", {"attention": ("decoder", [1.0, 1.2]), "prior": ("reference", [0.5])}),
                 _summary("official", "homework", {"attention": ("decoder", [0.8]), "prior": ("reference", [0.5])}),
                 _summary("random-1", "best", {"attention": ("decoder", [2.0]), "prior": ("reference", [1.5])}),
                 _summary("random-2", "best", {"attention": ("decoder", [3.0]), "prior": ("reference", [2.5])})]
    table = protocol_table(summaries)
    rows = {r["row"]: r["cells"] for r in table["rows"]}
    assert list(rows) == ["prior", "best:attention", "homework:attention"]  # references first
    assert rows["best:attention"]["official/val"]["cider"][0] == pytest.approx(1.1)
    assert rows["best:attention"]["official/test"]["cider"][0] == pytest.approx(1.3)
    assert rows["best:attention"]["random/val"]["cider"] == (pytest.approx(2.5), pytest.approx(2 ** 0.5 / 2))
    assert rows["best:attention"]["random/val"]["splits"] == ["random-1", "random-2"]
    assert rows["prior"]["official/val"]["runs"] == 1   # the same captions in two experiments: once
    assert rows["homework:attention"]["random/val"] is None
    assert "| `homework:attention` | 0.800 (0.080) [1] |" in format_protocol(table)
    for i, s in enumerate(summaries[:1] + [{**summaries[0], "dataset": {"name": "other"}}]):
        (tmp_path / f"e{i}").mkdir()
        (tmp_path / f"e{i}" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(UserError, match="several datasets"):
        read_summaries([tmp_path / "e0", tmp_path / "e1"])


def test_compare_refuses_two_splits():
    from convattn.caption.compare import compare_summaries

    def summary(split):
        return {"data": {"fingerprint": "f"}, "dataset": {"path": "d", "split": split},
                "config": {"preset": "p"}, "seeds": [42], "models": {"m": {"cider_per_image": [1.0, 2.0]}}}

    assert compare_summaries((summary("random-1"), "m"), (summary("random-1"), "m"))["difference"] == 0
    with pytest.raises(UserError, match="different splits"):
        compare_summaries((summary("official"), "m"), (summary("random-1"), "m"))
