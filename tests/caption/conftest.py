"""Shared fixtures: a tiny generated captioning dataset and a private feature cache."""

from __future__ import annotations

import pytest

from tiny_captions import make_tiny_captions


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Every captioning test caches features in its own folder, never in ~/.cache; and runs
    torch on one thread: the tests' tensors are tiny, and on a busy machine two threads make
    small ops many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("convattn-cache")
    mp.setenv("CONVATTN_CACHE", str(folder))
    yield folder
    mp.undo()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A read-only tiny dataset shared by the tests that do not modify it."""
    return make_tiny_captions(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_copy(tmp_path):
    """A tiny dataset a test may modify."""
    return make_tiny_captions(tmp_path / "tiny")
