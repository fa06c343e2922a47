"""`convattn reproduce`: run theory, classify and caption with one preset, write the report.

Layout of --out (default report/):
  results.json            every number in the report (the source of truth)
  report.md, report.html  rendered from results.json alone (--render-only rebuilds them)
  theory/ classify/ caption/   each stage's own outputs, figures and checkpoints
  caption-best/           the best captioning recipe beyond the study, run beside the
                          study's (preset best, best-fast or best-smoke: caption.presets.BEST_OF)
  rsicd/ rsicd-best/      with --rsicd DIR (or $CONVATTN_RSICD): the study's decoders and the
                          best recipe on RSICD (caption.presets.RSICD_OF), else skipped
  caption-splits/ rsicd-splits/   the reference captioners on three random re-splits
                          (random-1..3), for the protocol table

Re-running follows the run store's policy (common/runs.py, the same --runs/--resume/--fresh
flags as classify and caption): by default finished runs are reused, unfinished ones
continue from their last epoch, and cached features are reused. A stage that fails is recorded with its error and the others
still run; results.json is rewritten after every stage, so an interruption loses nothing.
"""

from __future__ import annotations

import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from convattn.caption import experiment
from convattn.caption.presets import BEST_OF, RSICD_OF
from convattn.caption.protocol import slim
from convattn.caption.reference import CAPTIONERS
from convattn.caption.presets import PRESETS as CAPTION_PRESETS
from convattn.classify import sweep
from convattn.classify.presets import PRESETS as CLASSIFY_PRESETS
from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runs import add_policy_flags
from convattn.common.runtime import cache_dir, choose_device, environment
from convattn.data.rsicd import download_rsicd
from convattn.data.sydney import download_sydney, fetch_when_absent
from convattn.report import templating
from convattn.report.render import write_report
from convattn.theory.answer import answer

# a preset names one recipe per stage: the presets both stages define
PRESETS = tuple(p for p in CLASSIFY_PRESETS if p in CAPTION_PRESETS)
DEFAULT_SYDNEY = Path("data/sydney-captions")
DEFAULT_RSICD = Path("data/rsicd")


def find_dataset(flag: str | None, option: str, env: str, default: Path, name: str) -> tuple[Path | None, str]:
    """A caption dataset's folder from its flag, its environment variable or its default place.

    Returns (folder, "") or (None, why). An explicit flag that is wrong is an error.
    """
    if flag:
        folder = Path(flag)
        if not (folder / "dataset.json").is_file():
            raise UserError(f"{option} {folder}: no dataset.json there; pass the folder holding "
                            f"{name}'s dataset.json and images/")
        return folder, ""
    value = os.environ.get(env)
    cached = cache_dir() / default.name  # where `convattn download` puts it
    for folder in ([Path(value)] if value else []) + [default, cached]:
        if (folder / "dataset.json").is_file():
            return folder, ""
    tried = (f"${env}={value}" if value else f"${env} unset") + f", ./{default}, {cached}"
    return None, f"{name} not found (no {option}; {tried} has no dataset.json)."


def find_sydney(flag: str | None) -> tuple[Path | None, str]:
    """Sydney-Captions where find_dataset finds it, else downloaded into the cache (one line
    why not, offline); `--sydney download` downloads it or fails."""
    if flag == "download":
        return download_sydney(), ""
    folder, why = find_dataset(flag, "--sydney", "CONVATTN_SYDNEY", DEFAULT_SYDNEY, "Sydney-Captions")
    return (folder, why) if folder else fetch_when_absent(why)


def find_rsicd(flag: str | None) -> tuple[Path | None, str]:
    if flag == "download":
        return download_rsicd(), ""
    return find_dataset(flag, "--rsicd", "CONVATTN_RSICD", DEFAULT_RSICD, "RSICD")


def _theory_stage(args, out: Path) -> dict:
    result = answer()
    io.write_text(out / "theory.md", templating.render("theory.md.j2", result=result))
    io.write_json(out / "theory.json", result)
    return {"result": result}


def _classify_stage(args, out: Path) -> dict:
    summary = sweep.run(CLASSIFY_PRESETS[args.preset], out, data_dir=args.data, device=args.device,
                        quiet=args.quiet, policy=args.runs)
    return {"summary": summary}


def _caption(preset: str, args, out: Path, data_dir=None, references: bool = False) -> dict:
    """One caption stage (on Sydney-Captions unless `data_dir`); `run_seconds`: what its runs
    recorded (training and test scoring, features excluded), so the report can set the best
    recipe's time against the study's. `references`: the reference captioners scored beside
    the decoders (seconds; class-prior only where dataset.json has scene labels)."""
    config = CAPTION_PRESETS[preset]
    if references:
        config = config.replace(models=(*config.models, *CAPTIONERS))
    summary = experiment.run(config, data_dir or args.sydney_dir, out, device=args.device,
                             quiet=args.quiet, policy=args.runs)
    return {"summary": summary, "preset": preset, "run_seconds": summary["timing"]["runs_seconds"]}


def _caption_stage(args, out: Path) -> dict:
    return _caption(args.preset, args, out, references=True)


def _caption_best_stage(args, out: Path) -> dict:
    return _caption(BEST_OF[args.preset], args, out)


def _rsicd_stage(args, out: Path) -> dict:
    return _caption(RSICD_OF[args.preset][0], args, out, args.rsicd_dir, references=True)


def _rsicd_best_stage(args, out: Path) -> dict:
    return _caption(RSICD_OF[args.preset][1], args, out, args.rsicd_dir)


def _resplits(preset: str, args, out: Path, data_dir) -> dict:
    """The reference captioners on the random re-splits RESPLITS, for the report's protocol
    table (what a re-split gives away; seconds on Sydney-Captions, minutes on RSICD, with the
    study stage's cached features). The decoders are not retrained on re-splits here:
    docs/results.md has them measured."""
    config = CAPTION_PRESETS[preset].replace(models=CAPTIONERS, seeds=1)
    return {"resplits": [slim(experiment.run(config.replace(split=split), data_dir, out / split, device=args.device,
                                             quiet=args.quiet, policy=args.runs)) for split in RESPLITS]}


def _caption_splits_stage(args, out: Path) -> dict:
    return _resplits(args.preset, args, out, args.sydney_dir)


def _rsicd_splits_stage(args, out: Path) -> dict:
    return _resplits(RSICD_OF[args.preset][0], args, out, args.rsicd_dir)


STAGES = {"theory": _theory_stage, "classify": _classify_stage, "caption": _caption_stage,
          "caption-best": _caption_best_stage, "caption-splits": _caption_splits_stage,
          "rsicd": _rsicd_stage, "rsicd-best": _rsicd_best_stage, "rsicd-splits": _rsicd_splits_stage}
# stages skipped, with the reason, when their dataset is missing: stage -> the args attribute
NEEDS = {"caption": "sydney_dir", "caption-best": "sydney_dir", "caption-splits": "sydney_dir",
         "rsicd": "rsicd_dir", "rsicd-best": "rsicd_dir", "rsicd-splits": "rsicd_dir"}
RESPLITS = ("random-1", "random-2", "random-3")


def reproduce(args) -> int:
    out = Path(args.out)
    if args.render_only:
        path = out / "results.json"
        if not path.is_file():
            raise UserError(f"--render-only: {path} not found; run `convattn reproduce --out {out}` first")
        write_report(out, io.read_json(path))
        print(out / "report.html")
        return 0

    args.sydney_dir, why_sydney = find_sydney(args.sydney)
    args.rsicd_dir, why_rsicd = find_rsicd(args.rsicd)
    missing = {"sydney_dir": why_sydney, "rsicd_dir": why_rsicd}
    device = choose_device(args.device)
    started = time.perf_counter()
    results = {
        "preset": args.preset,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "environment": environment(),
        "warnings": [],
        "stages": {},
    }
    for name, stage in STAGES.items():
        t0 = time.perf_counter()
        entry: dict = {"dir": name}
        if name in NEEDS and getattr(args, NEEDS[name]) is None:
            why = missing[NEEDS[name]]
            entry.update(status="skipped", reason=why)
            if name == "caption":  # one warning for both caption stages
                results["warnings"].append(f"Question 3 was skipped: {why} See the Question 3 section.")
                log(f"convattn: warning: {why} Q3 skipped; the report says how to get the dataset")
            elif name == "rsicd":  # optional: one line on how to get it
                log(f"convattn: {why} The RSICD benchmark is skipped; to run it, pass --rsicd download "
                    "(about 570 MB, every file verified) or --rsicd DIR")
        else:
            log(f"== {name} ==")
            try:
                entry.update(stage(args, out / name))
                entry["status"] = "ok"
            except UserError as exc:
                entry.update(status="failed", error=str(exc))
            except Exception as exc:  # keep the other stages' results; the report shows the error
                if args.debug:
                    traceback.print_exc()
                entry.update(status="failed", error=f"{exc.__class__.__name__}: {exc}")
            if entry["status"] == "failed":
                log(f"convattn: stage {name} failed: {entry['error']}")
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results["stages"][name] = entry
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        io.write_json(out / "results.json", results)
    write_report(out, results)
    failed = [n for n, st in results["stages"].items() if st["status"] == "failed"]
    log(f"report: {out / 'report.md'} and {out / 'report.html'} ({results['wall_seconds']:.0f} s)")
    if failed:
        log(f"convattn: error: stage(s) {', '.join(failed)} failed; see the report, fix, and rerun (finished work is kept)")
        return 1
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        description="Run theory, classify and caption with one preset, and the best captioning "
                    "recipe beside the study's, and write the study's report. Finished runs are "
                    "reused and unfinished ones continued unless --runs says otherwise.")
    parser.add_argument("--preset", choices=PRESETS, default="homework",
                        help="homework: the study's protocol; fast: better recipes in a few "
                             "minutes; smoke: tiny, for checks; each runs caption's best preset of "
                             "the same length beside it (best, best-fast, best-smoke) (default: homework)")
    parser.add_argument("--out", default="report", help="output folder (default: report)")
    parser.add_argument("--sydney", default=None,
                        help="Sydney-Captions folder, or `download` (default: $CONVATTN_SYDNEY, else "
                             "./data/sydney-captions, else the cache; when none has it, it is "
                             "downloaded into the cache, from $CONVATTN_SYDNEY_URL if set)")
    parser.add_argument("--rsicd", default=None,
                        help="RSICD folder, or `download` (570 MB, verified), optional: the benchmark "
                             "stages rsicd and rsicd-best (default: $CONVATTN_RSICD, else ./data/rsicd, "
                             "else the cache; skipped when absent)")
    parser.add_argument("--data", default=None,
                        help="Fashion-MNIST folder (default: the Debian package's, else the download cache)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--render-only", action="store_true", help="rebuild the report from results.json without training")
    parser.add_argument("--quiet", action="store_true", help="plain log lines instead of progress bars")
    add_policy_flags(parser)
    parser.set_defaults(func=reproduce)
