import json
import os
import shutil
import time

import pytest
from PIL import Image

from convattn.caption.encoders import load_image
from convattn.common.errors import UserError
from convattn.data import captions
from convattn.data.captions import (END, END_ID, PAD_ID, SPECIALS, START_ID, UNK, UNK_ID,
                                    Vocabulary, build_vocabulary, load_dataset)


def _edit(root, change):
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_loads_splits_and_lower_cases(tiny_data):
    ds = load_dataset(tiny_data)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [30, 8, 8]
    assert all(t == t.lower() for im in ds.images for c in im.captions for t in c)
    assert ds.sizes == {(48, 48): 46}
    assert ds.by_name("219").split == "test"


def test_vocabulary_comes_from_training_captions_only(tiny_copy):
    # a word that only a test caption has must not enter the vocabulary
    def add_test_word(data):
        test = next(im for im in data["images"] if im["split"] == "test")
        test["sentences"][0]["tokens"] = ["A", "Zebra", "Crossing"]
    _edit(tiny_copy, add_test_word)
    ds = load_dataset(tiny_copy)
    vocab, max_len = build_vocabulary(ds)
    assert tuple(vocab.words[:4]) == SPECIALS
    assert "zebra" not in vocab.index and "a" in vocab.index
    train_words = {t for im in ds.split("train") for c in im.captions for t in c}
    assert len(vocab) == len(train_words) + 4
    assert max_len == max(len(c) for im in ds.split("train") for c in im.captions) + 2


def test_encode_decode_round_trip():
    vocab = Vocabulary.from_captions([["a", "red", "square"], ["a", "blue", "circle"]])
    ids = vocab.encode(["a", "green", "square"], max_len=7)
    assert ids[0] == START_ID and ids[4] == END_ID and ids[5:] == [PAD_ID, PAD_ID]
    assert ids[2] == UNK_ID  # unknown word
    # decode stops at <end> and drops specials, so BLEU never sees them
    assert vocab.decode(ids) == ["a", "square"]
    assert vocab.decode([vocab.index["red"], END_ID, vocab.index["a"]]) == ["red"]
    # too long: cut, but still ends with <end>
    assert vocab.encode(["a"] * 10, max_len=5)[-1] == END_ID


def test_missing_folder_and_json(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(UserError, match="no dataset.json"):
        load_dataset(tmp_path)


def test_malformed_json(tiny_copy):
    (tiny_copy / "dataset.json").write_text('{"images": [')
    with pytest.raises(UserError, match="malformed JSON"):
        load_dataset(tiny_copy)


def test_not_karpathy_format(tiny_copy):
    (tiny_copy / "dataset.json").write_text('{"annotations": []}')
    with pytest.raises(UserError, match="images"):
        load_dataset(tiny_copy)


def test_empty_split(tiny_copy):
    _edit(tiny_copy, lambda d: [im.update(split="train") for im in d["images"] if im["split"] == "val"])
    with pytest.raises(UserError, match="val split is empty"):
        load_dataset(tiny_copy)


def test_caption_without_a_tokens_list(tiny_copy):
    _edit(tiny_copy, lambda d: d["images"][3]["sentences"][2].pop("tokens"))
    with pytest.raises(UserError, match="4.png.*caption 2 has no \"tokens\" list"):
        load_dataset(tiny_copy)


def test_an_empty_caption_is_skipped(tiny_copy, capsys):
    _edit(tiny_copy, lambda d: d["images"][3]["sentences"][2].update(tokens=[]))
    ds = load_dataset(tiny_copy)
    assert len(ds.images[3].captions) == 4
    assert "skipped 1 empty caption (4.png #2)" in capsys.readouterr().err


def test_missing_images_are_listed(tiny_copy):
    (tiny_copy / "images" / "2.png").unlink()
    (tiny_copy / "images" / "5.png").unlink()
    with pytest.raises(UserError, match=r"2 missing image file\(s\): 2.png, 5.png"):
        load_dataset(tiny_copy)


def test_unreadable_image(tiny_copy):
    (tiny_copy / "images" / "3.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="unreadable image file.*3.png"):
        load_dataset(tiny_copy)


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.new("L", (40, 30), 128).save(tmp_path / "grey.jpg")
    Image.new("RGBA", (40, 30), (10, 20, 30, 128)).save(tmp_path / "rgba.png")
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "red.tif")
    for name in ("grey.jpg", "rgba.png", "red.tif"):
        x = load_image(tmp_path / name)
        assert x.shape == (3, 30, 40) and 0 <= x.min() <= x.max() <= 1
    assert load_image(tmp_path / "red.tif", size=32).shape == (3, 32, 32)


def test_tokens_keep_one_entry_per_decoding_step():
    # the attention figures pair token t with the weights of step t: <unk> must stay, and
    # <end> appears only when it was generated
    vocab = Vocabulary(list(SPECIALS) + ["a", "river"])
    a, river = 4, 5
    assert vocab.tokens([a, UNK_ID, river, END_ID, PAD_ID]) == ["a", UNK, "river", END]
    assert vocab.decode([a, UNK_ID, river, END_ID, PAD_ID]) == ["a", "river"]
    assert vocab.tokens([a, river, a]) == ["a", "river", "a"]  # cut at max_steps: no <end>


# --- the fingerprint: the images' content, remembered by stat -------------------------------

DAY = 86_400 * 10**9


def _set_dates(root, ns):
    """Every image's mtime (and atime) to `ns`: as a copy or a restore leaves them."""
    for path in (root / "images").iterdir():
        os.utime(path, ns=(ns, ns))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, so its memo starts empty."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CONVATTN_CACHE", str(folder))
    return folder


@pytest.fixture
def hashed(monkeypatch):
    """The names of the image files read and hashed, in order."""
    names = []
    real = captions._file_sha256

    def counting(path):
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(captions, "_file_sha256", counting)
    return names


def test_fingerprint_is_the_same_for_a_copy_with_new_dates(tiny_copy, tmp_path, own_cache):
    _set_dates(tiny_copy, 1000 * DAY)
    original = load_dataset(tiny_copy).fingerprint
    copy = shutil.copytree(tiny_copy, tmp_path / "copy")
    _set_dates(copy, 2000 * DAY)
    assert load_dataset(copy).fingerprint == original
    # and the original's, now remembered, once more with new dates
    assert load_dataset(tiny_copy).fingerprint == original
    _set_dates(tiny_copy, 3000 * DAY)
    assert load_dataset(tiny_copy).fingerprint == original


def test_fingerprint_changes_with_an_image_s_bytes(tiny_copy, own_cache, hashed):
    _set_dates(tiny_copy, 1000 * DAY)
    before = load_dataset(tiny_copy).fingerprint
    # one byte changed in place: same name, same size, and the old mtime put back, so only
    # the inode's ctime tells; the image header stays readable
    path = tiny_copy / "images" / "7.png"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1000 * DAY, 1000 * DAY))
    hashed.clear()
    after = load_dataset(tiny_copy, check_images=False).fingerprint
    assert hashed == ["7.png"] and after != before
    # the old bytes back: the old fingerprint
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_dataset(tiny_copy).fingerprint == before


def test_fingerprint_changes_with_a_renamed_or_missing_image(tiny_copy, own_cache):
    _set_dates(tiny_copy, 1000 * DAY)
    before = load_dataset(tiny_copy).fingerprint
    # the same bytes under another name, in dataset.json and on disk
    os.rename(tiny_copy / "images" / "4.png", tiny_copy / "images" / "renamed.png")
    _edit(tiny_copy, lambda d: d["images"][3].update(filename="renamed.png"))
    renamed = load_dataset(tiny_copy).fingerprint
    assert renamed != before
    (tiny_copy / "images" / "renamed.png").unlink()
    missing = load_dataset(tiny_copy, check_images=False).fingerprint
    assert len({before, renamed, missing}) == 3


def test_unchanged_images_are_not_read_again(tiny_copy, own_cache, hashed):
    _set_dates(tiny_copy, 1000 * DAY)
    first = load_dataset(tiny_copy).fingerprint
    assert len(hashed) == 46 and list(own_cache.glob("image-digests/*.json"))
    hashed.clear()
    assert load_dataset(tiny_copy).fingerprint == first and hashed == []
    # a new date on one file (touched, restored, copied over itself): only that one is read
    os.utime(tiny_copy / "images" / "9.png", ns=(1001 * DAY, 1001 * DAY))
    assert load_dataset(tiny_copy).fingerprint == first and hashed == ["9.png"]


def test_a_file_written_just_now_is_not_remembered(tiny_copy, own_cache, hashed):
    # a second write in the same timestamp tick could keep (size, mtime): a file modified
    # just before it was hashed is hashed again on the next load
    _set_dates(tiny_copy, 1000 * DAY)
    now = time.time_ns()
    os.utime(tiny_copy / "images" / "9.png", ns=(now, now))
    load_dataset(tiny_copy)
    hashed.clear()
    load_dataset(tiny_copy)
    assert hashed == ["9.png"]


@pytest.mark.parametrize("memo", [b"{not json", b"\xff\xfe", b"[]", b'{"version": 1}', "files"])
def test_a_corrupt_memo_means_hashing_everything(tiny_copy, own_cache, hashed, memo):
    _set_dates(tiny_copy, 1000 * DAY)
    first = load_dataset(tiny_copy).fingerprint
    (path,) = own_cache.glob("image-digests/*.json")
    if memo == "files":  # the right frame, wrong entries
        raw = json.loads(path.read_text())
        raw["files"] = {name: ["x"] * 6 for name in raw["files"]} | {"1.png": "x", "2.png": None}
        memo = json.dumps(raw).encode()
    path.write_bytes(memo)
    hashed.clear()
    assert load_dataset(tiny_copy).fingerprint == first and len(hashed) == 46
    # and the memo is whole again
    hashed.clear()
    assert load_dataset(tiny_copy).fingerprint == first and hashed == []


def test_an_unwritable_cache_means_hashing_every_time(tiny_copy, tmp_path, monkeypatch, hashed):
    _set_dates(tiny_copy, 1000 * DAY)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CONVATTN_CACHE", str(blocker))
    first = load_dataset(tiny_copy).fingerprint
    second = load_dataset(tiny_copy).fingerprint
    assert first == second and len(hashed) == 2 * 46
