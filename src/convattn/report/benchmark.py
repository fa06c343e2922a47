"""The report's benchmark section: RSICD under the honest protocol, the "as published"
column for every caption stage (Sydney-Captions and RSICD), the paired comparison of the
best recipe with the study's attention decoder, and the published results with the
protocol behind each (report/published.py).

Python picks and computes the values here; templates/q3_rsicd.md.j2 lays them out.
"""

from __future__ import annotations

from convattn.caption.compare import compare_summaries
from convattn.caption.protocol import COLUMNS, HEADERS, protocol_table
from convattn.caption.reference import TITLES as REFERENCE_TITLES
from convattn.report import published, study

CAPTION_STAGES = {"caption": "Sydney-Captions, the study's decoders", "caption-best": "Sydney-Captions, best recipe",
                  "rsicd": "RSICD, the study's decoders", "rsicd-best": "RSICD, best recipe"}
NAMES = {"no_attention": "LSTM without attention", "attention": "LSTM with attention", "transformer": "Transformer",
         **REFERENCE_TITLES}
SPECIFICITY = ("distinct_per_image", "copied_from_training", "vocabulary", "length_mean")
COCO = ("bleu1", "bleu4", "meteor", "rouge_l", "cider")


def _rows(stage: dict) -> list[dict]:
    """One row per decoder of a caption stage: coco metrics (mean, std), the study's bleu4,
    the epoch chosen and the "as published" scores."""
    s = stage["summary"]
    cfg = s.get("config") or {}
    one = len(s.get("seeds", [])) == 1
    rows = []
    for name, m in s["models"].items():
        if "coco" not in m:  # a summary from before the coco-caption metrics
            continue
        reference = m.get("kind") == "reference"
        spec = m.get("specificity") or {}
        rows.append({"model": NAMES.get(name, name), "preset": cfg.get("preset") or s.get("preset"),
                     "reference": reference, "runs": "deterministic" if reference else
                     f"{len(s.get('seeds', []))} seed{'s' if len(s.get('seeds', [])) > 1 else ''}",
                     "seeds": len(s.get("seeds", [])),
                     "selected": "val_cider" if "choice" in m else cfg.get("select") or "final",
                     "specificity": {k: spec[k]["mean"] for k in SPECIFICITY} if spec else None,
                     **{k: (m["coco"][k]["mean"], None if one or reference else m["coco"][k]["std"]) for k in COCO},
                     "bleu4_study": (m["test_bleu4_mean"], None if one or reference else m["test_bleu4_std"]),
                     "as_published": m.get("as_published")})
    return rows


def _comparison(stages: dict, study: str, best: str) -> dict | None:
    """Paired bootstrap of test CIDEr-D, best recipe's attention decoder - the study's."""
    a, b = stages.get(study) or {}, stages.get(best) or {}
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    if "attention" not in a["summary"]["models"] or "attention" not in b["summary"]["models"]:
        return None
    if "cider_per_image" not in a["summary"]["models"]["attention"]:
        return None
    return compare_summaries((a["summary"], "attention"), (b["summary"], "attention"))


def _protocol(stages: dict, label: str, study: str, best: str, splits: str) -> dict | None:
    """The protocol table (caption/protocol.py) of one dataset's stages: the official split's
    experiments and the reference captioners' re-splits; None when the study stage did not run."""
    ok = [stages.get(n) or {} for n in (study, best, splits)]
    if ok[0].get("status") != "ok":
        return None
    summaries = [s["summary"] for s in ok[:2] if s.get("status") == "ok"]
    summaries += ok[2].get("resplits", []) if ok[2].get("status") == "ok" else []
    table = protocol_table(summaries)
    return {**table, "dataset": label, "headers": HEADERS, "columns": [f"{k}/{c}" for k, c in COLUMNS]}


def _references_text(stage: dict) -> dict:
    """The test references' mean length and vocabulary (what the specificity table sets the
    captions against), from any model's specificity in the stage."""
    if stage.get("status") != "ok":
        return {}
    for m in stage["summary"]["models"].values():
        if m.get("specificity"):
            first = m["specificity"]["seeds"][0]
            return {"references_length": first["references_length_mean"],
                    "references_vocabulary": first["references_vocabulary"]}
    return {}


def benchmark_values(stages: dict) -> dict:
    """What q3_rsicd.md.j2 shows: the RSICD stages (or why they did not run), the protocol
    table over every caption stage that ran, the comparisons and the published rows."""
    rsicd = stages.get("rsicd") or {"status": "not run"}
    protocol = [{"stage": label, **row} for name, label in CAPTION_STAGES.items()
                if (stages.get(name) or {}).get("status") == "ok" for row in _rows(stages[name])]
    data = rsicd["summary"]["dataset"] if rsicd.get("status") == "ok" else None
    return {
        "status": rsicd["status"], "reason": rsicd.get("reason") or rsicd.get("error"),
        "howto": study.RSICD_HOWTO_SHORT, "dataset": data,
        "rows": [r for name in ("rsicd", "rsicd-best") if (stages.get(name) or {}).get("status") == "ok"
                 for r in _rows(stages[name])],
        "protocol": [r for r in protocol if r["as_published"] and (not r["reference"] or "k" in r["as_published"])],
        **_references_text(rsicd),
        "protocol_tables": [t for t in (_protocol(stages, "Sydney-Captions", "caption", "caption-best", "caption-splits"),
                                        _protocol(stages, "RSICD", "rsicd", "rsicd-best", "rsicd-splits")) if t],
        "comparisons": [c for c in ({"data": "RSICD", **(_comparison(stages, "rsicd", "rsicd-best") or {})},
                                    {"data": "Sydney-Captions", **(_comparison(stages, "caption", "caption-best") or {})})
                        if "difference" in c],
        "published": {"Sydney-Captions": published.SYDNEY, "RSICD": published.RSICD},
    }
