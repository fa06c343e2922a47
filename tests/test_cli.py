import subprocess
import sys

import pytest

from convattn.cli import main
from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.runtime import choose_device


def test_debug_shows_the_traceback():
    with pytest.raises(UserError):
        main(["--debug", "theory", "--stack", "nonsense"])


def test_console_script_exit_code_and_one_line():
    proc = subprocess.run([sys.executable, "-m", "convattn", "theory", "--input", "3x3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "convattn: error: --input 3x3: expected HxWxC with positive integers, e.g. 28x28x3"
    assert "Traceback" not in proc.stderr


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    with pytest.raises(UserError, match="--device tpu"):
        choose_device("tpu")
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            choose_device("cuda")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert io.read_json(target) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "run.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="run.pt: not a readable convattn checkpoint"):
        io.load_checkpoint(bad)
