"""What the protocol does to a number: `convattn caption protocol OUT [OUT ...]`.

Reads experiments (their summary.json) of one dataset, on its official split and on named
random re-splits (`--split random-N`), and lays out per captioner four test scores:

    official, validation     the checkpoint each run chose on validation (ours); mean ± std over seeds
    official, test-picked    "as published": the epoch and seed with the best test score
    re-split, validation     every (re-split, seed) run's validation-chosen checkpoint; mean ± std
    re-split, test-picked    each re-split's "as published" score; mean ± std over re-splits

A row is a decoder of one preset (`rsicd-tuned:attention`) or a reference captioner (`prior`,
`class-prior`, `nearest`: the same in every experiment of one split, so read once per split).
Each cell says over how many runs it is; nothing here trains or decodes.
"""

from __future__ import annotations

from pathlib import Path

from convattn.caption import metrics
from convattn.caption.presets import PRESETS
from convattn.common import io
from convattn.common.errors import UserError

COLUMNS = (("official", "val"), ("official", "test"), ("random", "val"), ("random", "test"))
HEADERS = ("official split, validation-chosen", "official split, test-picked",
           "random re-split, validation-chosen", "random re-split, test-picked")


def read_summaries(folders) -> list[dict]:
    """Each folder's (or file's) summary.json, all of one dataset (by dataset.json's name)."""
    summaries = []
    for folder in map(Path, folders):
        path = folder / "summary.json" if folder.is_dir() else folder
        if not path.is_file():
            raise UserError(f"caption protocol: {path}: no summary.json; run `convattn caption --out {folder}` first")
        summaries.append(io.read_json(path))
    names = {s["dataset"]["name"] for s in summaries}
    if len(names) > 1:
        raise UserError(f"caption protocol: the experiments are of several datasets ({', '.join(sorted(names))}); "
                        "give experiments of one dataset")
    return summaries


def slim(summary: dict) -> dict:
    """The parts of a summary.json that protocol_table reads (what the report keeps of an
    experiment run only for this table). A summary from before splits, reference captioners
    or the "as published" column reads as official, decoders, and no test-picked score."""
    return {"dataset": {"name": summary["dataset"]["name"], "split": summary["dataset"].get("split", "official")},
            "config": {"preset": (summary.get("config") or {}).get("preset") or summary.get("preset", "?"),
                       "select": (summary.get("config") or {}).get("select")},
            "models": {name: {"kind": m.get("kind", "decoder"), "as_published": m.get("as_published"),
                              "seeds": [{"cider": s["cider"], "coco": {"bleu4": s["coco"]["bleu4"]}}
                                        for s in m.get("seeds", []) if "coco" in s]}
                       for name, m in summary["models"].items()}}


def protocol_table(summaries: list[dict]) -> dict:
    """{"dataset", "rows": [{"row", "cells": {"official/val": {...}, ...}}]}; a cell holds the
    mean and std of CIDEr-D and coco BLEU-4 and how many runs and splits it is over."""
    runs = {}  # (row, column) -> {split: [(cider, bleu4) per run]}
    for s in map(slim, summaries):
        split = s["dataset"].get("split", "official")
        kind = "official" if split == "official" else "random"
        preset, select = s["config"]["preset"], s["config"]["select"]
        # a checkpoint rule other than the preset's own is part of the row's name
        suffix = f" --select {select}" if preset in PRESETS and select not in (None, PRESETS[preset].select) else ""
        for model, m in s["models"].items():
            reference = m.get("kind") == "reference"
            row = model if reference else f"{preset}:{model}{suffix}"
            val = [(seed["cider"], seed["coco"]["bleu4"]) for seed in m["seeds"]]
            published = [(p["cider"], p["bleu4"])] if (p := m["as_published"]) else []
            for column, values in (("val", val), ("test", published)):
                if not values:
                    continue
                by_split = runs.setdefault((row, f"{kind}/{column}"), {})
                if reference and split in by_split:
                    continue  # the same deterministic captions, from another experiment of this split
                by_split.setdefault(split, []).extend(values)
    rows = list(dict.fromkeys(row for row, _ in runs))  # [row] in first-seen order
    rows.sort(key=lambda r: (":" in r, r))  # reference captioners first
    return {"dataset": summaries[0]["dataset"]["name"],
            "rows": [{"row": row, "cells": {f"{k}/{c}": _cell(runs.get((row, f"{k}/{c}")))
                                            for k, c in COLUMNS}} for row in rows]}


def _cell(by_split: dict | None) -> dict | None:
    if not by_split:
        return None
    values = [v for split in by_split.values() for v in split]
    cider, bleu4 = metrics.mean_std([v[0] for v in values]), metrics.mean_std([v[1] for v in values])
    return {"cider": cider, "bleu4": bleu4, "runs": len(values), "splits": sorted(by_split)}


def format_protocol(table: dict) -> str:
    """The table as Markdown: CIDEr-D (BLEU-4) per cell, mean ± std, with its number of runs."""
    lines = [f"{table['dataset']}: test CIDEr-D (coco BLEU-4), mean ± std over the runs counted in brackets",
             "", "| captioner | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
    for row in table["rows"]:
        cells = []
        for k, c in COLUMNS:
            cell = row["cells"][f"{k}/{c}"]
            if cell is None:
                cells.append("—")
                continue
            (cm, cs), (bm, bs) = cell["cider"], cell["bleu4"]
            spread = f" ± {cs:.3f}" if cell["runs"] > 1 else ""
            cells.append(f"{cm:.3f}{spread} ({bm:.3f}) [{cell['runs']}]")
        lines.append(f"| `{row['row']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
