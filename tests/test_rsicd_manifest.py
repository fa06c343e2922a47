"""The shipped RSICD manifest against a clone of the images repository at the pinned commit.

Set RSICD_IMAGES_GIT to a clone (bare or not) of RitaRamo/image-caption-remote-sensing-images;
without it the test skips. Every name and size is compared with `git ls-tree`, and the
content of every 20th image is read with `git cat-file` and checked two ways: its git blob id
(the commit's own checksum) and its SHA-256 in the manifest."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from convattn.data import manifests, rsicd


@pytest.fixture
def gitdir():
    where = os.environ.get("RSICD_IMAGES_GIT")
    if not where or not Path(where).exists():
        pytest.skip("RSICD_IMAGES_GIT not set to a clone of the RSICD images repository")
    return Path(where)


def test_manifest_is_the_pinned_commits_images(gitdir):
    manifest = manifests.parse_rsicd(manifests.shipped(manifests.RSICD_MANIFEST))
    listing = subprocess.run(["git", "-C", str(gitdir), "ls-tree", "-r", "-l", rsicd.IMAGES_COMMIT,
                              rsicd.IMAGES_FOLDER + "/"], check=True, capture_output=True, text=True).stdout
    tree = {}
    for line in listing.splitlines():
        meta, path = line.split("\t")
        _, kind, blob, size = meta.split()
        tree[path.rsplit("/", 1)[1]] = (kind, blob, int(size))
    assert len(manifest) == len(tree) == 10_921
    assert {n: s for n, (_, s) in manifest.items()} == {n: s for n, (_, _, s) in tree.items()}
    assert sum(s for _, s in manifest.values()) == 564_827_768
    for name in sorted(tree)[::20]:
        data = subprocess.run(["git", "-C", str(gitdir), "cat-file", "blob", tree[name][1]],
                              check=True, capture_output=True).stdout
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == tree[name][1]
        assert hashlib.sha256(data).hexdigest() == manifest[name][0], name
