"""Reading a Karpathy-style dataset.json (no torch, no images): what the caption datasets
(captions.load_dataset) and the benchmark audit (audit.audit) both start from."""

from __future__ import annotations

import json
from pathlib import Path

from convattn.common.errors import UserError


def read_dataset_json(root: Path, flag: str = "") -> tuple[Path, dict, bytes]:
    """DIR/dataset.json -> (its path, the parsed object, its bytes); every problem is a
    one-line UserError naming the folder (after `flag`, the option that gave it) or file."""
    where = f"{flag} {root}" if flag else str(root)
    if not root.is_dir():
        raise UserError(f"{where}: no such folder; pass a folder holding a Karpathy-style dataset.json")
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise UserError(f"{json_path}: no such file; {where} has no dataset.json: a captioning dataset is "
                        "a Karpathy-style dataset.json (an object with an \"images\" list) beside an images/ folder")
    raw_bytes = json_path.read_bytes()
    try:
        raw = json.loads(raw_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{json_path}: malformed JSON ({exc}); fix or re-download the file") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
        raise UserError(f"{json_path}: expected an object with an \"images\" list "
                        "(Karpathy format); fix or re-download the file")
    return json_path, raw, raw_bytes


def caption_tokens(tokens: list) -> tuple[str, ...]:
    """A caption's tokens lower-cased, blank ones dropped: the one rule of every reader."""
    return tuple(str(t).lower() for t in tokens if str(t).strip())
