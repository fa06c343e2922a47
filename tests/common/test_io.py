"""Files are written atomically with the mode the user's umask gives a new file."""

import os
import stat

import pytest

from convattn.common import io


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert io.current_umask() == old
