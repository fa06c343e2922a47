"""`convattn data audit`: every number of a tiny dataset.json known by construction, the CLI's
table, JSON and errors, and the real Sydney-Captions' test/train overlap when it is present."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from convattn.cli import main
from convattn.common.errors import UserError
from convattn.data.audit import RefOverlap, audit

SYDNEY = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "sydney-captions"

# image -> (split, captions); "" is an empty caption (no tokens); a double space makes a blank
# token, which is dropped as load_dataset does ("a  blue square" is "a blue square")
TINY = {
    "t1.jpg": ("train", ["a red circle", "a red circle", "a big red circle"]),
    "t2.jpg": ("train", ["a blue square", "a red circle", ""]),
    "t3.jpg": ("restval", ["a green triangle", "A Green Triangle"]),  # same once lower-cased
    "v1.jpg": ("val", ["a red circle", "a yellow star", "a pink moon"]),
    "x1.jpg": ("test", ["a  blue square", "a purple circle", ""]),
    "x2.jpg": ("test", ["a green triangle", "a tiny dot"]),
}


def write_dataset(folder: Path, images: dict = TINY) -> Path:
    entries = [{"filename": name, "split": split,
                "sentences": [{"tokens": text.split(" ") if text else [], "raw": text}
                              for text in captions]}
               for name, (split, captions) in images.items()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({"dataset": "tiny", "images": entries}))
    return folder


@pytest.fixture
def tiny(tmp_path):
    return write_dataset(tmp_path / "tiny")


def test_split_numbers_by_construction(tiny):
    result = audit(tiny)
    # train: 8 captions, one empty; 7 non-empty of lengths 3,3,4,3,3,3,3; "a red circle"
    # thrice over t1 and t2; t1 and t3 repeat a caption; "a" is the one word seen 5+ times
    assert asdict(result.splits["train"]) == dict(
        images=3, captions=8, empty_captions=1, unique_captions=4,
        images_with_repeated_captions=2, captions_shared_across_images=3,
        vocabulary=8, vocabulary_min5=1,
        length_mean=pytest.approx(22 / 7), length_median=3.0, length_p95=4, length_max=4)
    assert result.splits["test"].empty_captions == 1
    assert result.splits["test"].captions_shared_across_images == 0  # within test, none
    # all: "a red circle" on t1 (2), t2, v1; "a blue square" on t2, x1; "a green triangle" on t3 (2), x2
    overall = result.overall
    assert (overall.images, overall.captions, overall.empty_captions, overall.unique_captions) == (6, 16, 2, 8)
    assert overall.captions_shared_across_images == 4 + 2 + 3
    assert overall.vocabulary == 15  # the 8 training words, yellow, star, pink, moon, purple, tiny, dot


def test_refs_in_train_by_construction(tiny):
    result = audit(tiny)
    # test: 4 non-empty references, "a blue square" and "a green triangle" are training captions
    assert result.test_overlap == RefOverlap(refs=4, in_train=2, fraction=0.5)
    assert result.val_overlap == RefOverlap(refs=3, in_train=1, fraction=pytest.approx(1 / 3))
    assert result.to_dict()["test_refs_in_train"] == 0.5


def test_cli_json_is_to_dict(tiny, capsys):
    assert main(["data", "audit", str(tiny), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(audit(tiny, score_priors=True).to_dict()))
    assert printed["test_refs_in_train"] == 0.5
    assert printed["splits"]["test"]["empty_captions"] == 1
    assert printed["splits"]["train"]["unique_captions"] == 4


def test_priors_scored_on_test_with_and_without_labels(tmp_path):
    # the most frequent training caption is "a red circle" (3 times): the prior of every image
    result = audit(write_dataset(tmp_path / "plain"), score_priors=True)
    assert result.priors["prior"]["caption"] == "a red circle"
    assert "skipped" in result.priors["class-prior"]
    labelled = json.loads((tmp_path / "plain" / "dataset.json").read_text())
    for entry in labelled["images"]:  # the class: what the first caption's last word names
        entry["label"] = {"t1": "circle", "t2": "square", "t3": "triangle", "v1": "circle",
                          "x1": "square", "x2": "triangle"}[entry["filename"][:2]]
    (tmp_path / "labelled").mkdir()
    (tmp_path / "labelled" / "dataset.json").write_text(json.dumps(labelled))
    scored = audit(tmp_path / "labelled", score_priors=True).priors
    # x2 is a triangle: its class caption "a green triangle" is one of its references; x1's
    # class (square) is t2's, whose most frequent is "a blue square": one of x1's references
    assert scored["class-prior"]["cider"] > scored["prior"]["cider"]


def test_a_random_split_is_audited_as_its_images(tiny, capsys):
    result = audit(tiny, "random-1")
    assert result.split == "random-1"
    assert sum(result.splits[s].images for s in ("train", "val", "test")) == 6
    assert main(["data", "audit", str(tiny), "--split", "official", "random-1"]) == 0
    table = capsys.readouterr().out
    assert "split random-1" in table and "test refs in train" in table
    assert main(["data", "audit", str(tiny), "--split", "shuffled"]) == 2


def test_cli_table_shows_the_numbers(tiny, capsys):
    assert main(["data", "audit", str(tiny)]) == 0
    out = capsys.readouterr().out
    rows = {line[:30].strip(): line[30:].split() for line in out.splitlines()[1:14]}
    assert rows[""] == ["train", "val", "test", "all"]
    assert rows["empty captions"] == ["1", "0", "1", "2"]
    assert rows["unique captions"] == ["4", "3", "4", "8"]
    assert rows["length max"] == ["4", "3", "3", "4"]
    assert "test_refs_in_train  0.50  (2 of 4 test references, 50.0 %" in out
    assert "val_refs_in_train   0.33  (1 of 3 val references" in out


def test_a_split_without_captions_prints_a_dash(tmp_path, capsys):
    folder = write_dataset(tmp_path / "noval", {k: v for k, v in TINY.items() if k != "v1.jpg"})
    assert audit(folder).to_dict()["val_refs_in_train"] is None
    assert main(["data", "audit", str(folder)]) == 0
    assert "val_refs_in_train   -     (no non-empty val captions)" in capsys.readouterr().out


def _missing(folder: Path) -> Path:
    return folder


def _without_json(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _truncated_json(folder: Path) -> Path:
    folder.mkdir()
    (folder / "dataset.json").write_text('{"images": [')
    return folder


def _unknown_split(folder: Path) -> Path:
    return write_dataset(folder, {"a.jpg": ("dev", ["a cat"])})


@pytest.mark.parametrize("make, says", [
    (_missing, "no such folder"),
    (_without_json, "dataset.json: no such file"),
    (_truncated_json, "malformed JSON"),
    (_unknown_split, "split 'dev' is not one of"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make, says):
    folder = make(tmp_path / "d")
    assert main(["data", "audit", str(folder)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(UserError):
        main(["--debug", "data", "audit", str(folder)])


def test_console_script_missing_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convattn", "data", "audit", str(tmp_path / "no")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"convattn: error: {tmp_path / 'no'}: no such folder; pass a folder "
                           "holding a Karpathy-style dataset.json\n")


@pytest.mark.skipif(not (SYDNEY / "dataset.json").is_file(),
                    reason=f"Sydney-Captions not found at {SYDNEY.resolve()}")
def test_sydney_test_refs_in_train():
    result = audit(SYDNEY)
    assert round(result.test_overlap.fraction, 2) == 0.27  # 79 of 290
    assert (result.overall.unique_captions, result.overall.captions) == (1099, 3065)
    assert [result.splits[s].images for s in ("train", "val", "test")] == [497, 58, 58]


RSICD = Path(os.environ.get("CONVATTN_RSICD", "data/rsicd"))


@pytest.mark.skipif(not (RSICD / "dataset.json").is_file(),
                    reason=f"RSICD not found (set CONVATTN_RSICD; tried {RSICD}); docs/rsicd.md says how to lay it out")
def test_rsicd_audit():
    result = audit(RSICD, score_priors=True)
    assert [result.splits[s].images for s in ("train", "val", "test")] == [8734, 1094, 1093]
    assert round(result.test_overlap.fraction, 3) == 0.112 and result.overall.empty_captions == 5
    # the scene-class caption on the official test split, and on a random re-split
    assert round(result.priors["class-prior"]["cider"], 2) == 0.79
    resplit = audit(RSICD, "random-1", score_priors=True)
    assert resplit.priors["class-prior"]["cider"] > 2.0 and resplit.test_overlap.fraction > 0.3
