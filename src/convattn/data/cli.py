"""`convattn data audit DIR [--json]`: a caption benchmark's numbers before trusting its scores.

    convattn data audit /path/to/rsicd          an aligned table, one column per split
    convattn data audit /path/to/rsicd --json   the same as one JSON object (Audit.to_dict)
"""

from __future__ import annotations

import json

from convattn.data.audit import FREQUENT, SPLITS, Audit, RefOverlap, audit
from convattn.data.splits import HELP as SPLIT_HELP, OFFICIAL

# (row label, SplitStats field) in the order the table shows them
ROWS = (
    ("images", "images"),
    ("captions", "captions"),
    ("empty captions", "empty_captions"),
    ("unique captions", "unique_captions"),
    ("images repeating a caption", "images_with_repeated_captions"),
    ("captions shared across images", "captions_shared_across_images"),
    ("vocabulary (words)", "vocabulary"),
    (f"words seen >= {FREQUENT} times", "vocabulary_min5"),
    ("length mean (tokens)", "length_mean"),
    ("length median", "length_median"),
    ("length p95", "length_p95"),
    ("length max", "length_max"),
)
NOTE = ("Empty captions count in 'captions' and 'empty captions' only; every other number is over\n"
        "the non-empty captions, as lower-cased token sequences; references keep their repeats.")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", description="Check a dataset before trusting the scores measured on it.")
    sub = parser.add_subparsers(dest="data_command", metavar="audit", required=True)
    aud = sub.add_parser(
        "audit", help="per-split counts, duplicates, vocabulary, lengths and test/train overlap",
        description="Audit a Karpathy-style caption dataset (DIR/dataset.json; images are not "
                    "read): per split and overall, images, captions, empty and duplicated "
                    "captions, vocabulary, caption lengths, and the fraction of val and test "
                    "reference captions that appear word for word among the training captions.")
    aud.add_argument("dir", metavar="DIR", help="folder holding a Karpathy-style dataset.json")
    aud.add_argument("--json", action="store_true", help="print JSON instead of tables: one object, "
                     "or a list of them with several --split")
    aud.add_argument("--split", nargs="+", default=[OFFICIAL], metavar="SCHEME",
                     help=f"{SPLIT_HELP}; several: one audit each and a table comparing them (default: official)")
    aud.set_defaults(func=_audit)


def _audit(args) -> int:
    results = [audit(args.dir, scheme, score_priors=True) for scheme in args.split]
    if args.json:
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
        return 0
    print("\n\n".join(format_audit(r) for r in results))
    if len(results) > 1:
        print("\n" + format_schemes(results))
    return 0


def format_schemes(results: list[Audit]) -> str:
    """One line per split scheme: what a re-split gives away, next to the official split."""
    lines = [f"{'split':<10} {'test refs in train':>19} {'unique test captions':>21} "
             f"{'prior CIDEr-D':>14} {'class-prior CIDEr-D':>20}"]
    for r in results:
        p = r.priors or {}
        cells = [_score(p.get(name)) for name in ("prior", "class-prior")]
        lines.append(f"{r.split:<10} {_fraction(r.test_overlap):>19} {r.splits['test'].unique_captions:>21,} "
                     f"{cells[0]:>14} {cells[1]:>20}")
    return "\n".join(lines)


def _fraction(overlap: RefOverlap) -> str:
    return "-" if overlap.fraction is None else f"{100 * overlap.fraction:.1f} %"


def _score(entry: dict | None) -> str:
    return "-" if not entry or "cider" not in entry else f"{entry['cider']:.3f}"


def format_audit(result: Audit) -> str:
    """The table: a title line, one row per measure, one column per split and 'all'."""
    columns = [result.splits[name] for name in SPLITS] + [result.overall]
    rows = [("", *SPLITS, "all")] + [(label, *(_cell(getattr(s, field)) for s in columns))
                                     for label, field in ROWS]
    label_width = max(len(r[0]) for r in rows)
    widths = [max(len(r[i]) for r in rows) for i in range(1, len(rows[0]))]
    lines = [f"{result.dataset} ({result.path}), split {result.split}"]
    lines += ["  ".join([r[0].ljust(label_width)] + [c.rjust(w) for c, w in zip(r[1:], widths)])
              for r in rows]
    lines += [_overlap_line("test", result.test_overlap), _overlap_line("val", result.val_overlap)]
    for name, entry in (result.priors or {}).items():
        lines.append(f"{name + ' on test':<19} " + (
            f"CIDEr-D {entry['cider']:.3f}, BLEU-4 {entry['bleu4']:.3f}" if "cider" in entry
            else f"-     ({entry['skipped']})") + (f"  ({entry['caption']!r} for every image)"
                                                    if "caption" in entry else ""))
    lines.append(NOTE)
    return "\n".join(lines)


def _overlap_line(split: str, overlap: RefOverlap) -> str:
    if overlap.fraction is None:
        return f"{split + '_refs_in_train':<19} -     (no non-empty {split} captions)"
    return (f"{split + '_refs_in_train':<19} {overlap.fraction:.2f}  ({overlap.in_train:,} of "
            f"{overlap.refs:,} {split} references, {100 * overlap.fraction:.1f} %, are training "
            "captions word for word)")


def _cell(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return f"{value:,}"

