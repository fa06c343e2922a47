"""What a `convattn reproduce --out DIR` folder offers the server: its caption stages, every
trained decoder in them, and each decoder's validation score.

    stages = find_stages(DIR)       # [Stage] of caption, caption-best, rsicd, rsicd-best that ran
    entries = report_models(DIR)    # [ModelEntry], grouped by dataset, best validation first

A stage is a folder DIR/<stage>/ with summary.json and runs/<layer>/<model>/seed<N>/model.pt
(caption/experiment.py). Sydney-Captions' stages are caption (the study's decoders) and
caption-best (the best recipe); RSICD's are rsicd and rsicd-best (report/reproduce.py).
The models page and the test-set browser both read this one list of stages.

Ranking: a decoder's score is its validation CIDEr-D at the epoch its model.pt holds (the
run's reported decoder: the epoch with the best validation CIDEr-D under --select val_cider,
else the last epoch), from the run's result.json, else from summary.json's seeds; runs that
recorded no CIDEr-D fall back to validation bleu4. The test split never ranks anything.
Models are compared only within one dataset: each dataset is a group, best first; within a
group CIDEr-D scores come before bleu4 scores (two scales), and unscored models come last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from convattn.common import io
from convattn.common.errors import UserError

NAMES = {"no_attention": "no attention", "attention": "attention"}
NO_REPORT = ("run `make reproduce PRESET=fast` first (it writes ./report), or pass "
             "--report DIR or --model PATH")
# reproduce's caption stages, in the order they run, and the dataset each one trains on
STAGE_DATASETS = {"caption": "Sydney-Captions", "caption-best": "Sydney-Captions",
                  "rsicd": "RSICD", "rsicd-best": "RSICD"}
METRIC_ORDER = ("CIDEr-D", "bleu4")  # within a dataset: CIDEr-D scores first, then bleu4


@dataclass(frozen=True)
class Stage:
    """One caption stage of a reproduce run: DIR/<name>/summary.json and its runs."""
    name: str
    dataset: str     # "Sydney-Captions" or "RSICD"
    folder: Path
    summary: dict

    @property
    def recipe(self) -> str:
        """The caption preset the stage ran (summary.json config.preset)."""
        return (self.summary.get("config") or {}).get("preset") or self.name

    @property
    def data_dir(self) -> Path:
        """The dataset folder the stage trained on (dataset.json, images/)."""
        return Path(self.summary["dataset"]["path"])


@dataclass(frozen=True)
class Validation:
    """A decoder's validation score at the epoch its model.pt holds."""
    metric: str      # "CIDEr-D" or "bleu4"
    score: float
    epoch: int       # 1-based
    chosen: str      # "best validation CIDEr-D" or "last epoch": why model.pt is that epoch

    def to_dict(self) -> dict:
        return asdict(self)

    def sort_key(self) -> tuple:
        return METRIC_ORDER.index(self.metric), -self.score


@dataclass(frozen=True)
class ModelEntry:
    """A model.pt to offer and what is known of its run."""
    path: Path
    label: str | None = None         # None: a --model file, labelled from its checkpoint
    dataset: str | None = None
    recipe: str | None = None
    validation: Validation | None = None
    data_dir: Path | None = None     # the run's dataset: the novelty check's calibration data

    def sort_key(self) -> tuple:
        return self.validation.sort_key() if self.validation else (len(METRIC_ORDER), 0.0)


def find_stages(report_dir: Path) -> list[Stage]:
    """The caption stages of a reproduce folder that have a summary.json, in run order."""
    return [read_stage(report_dir, name) for name in STAGE_DATASETS
            if (Path(report_dir) / name / "summary.json").is_file()]


def read_stage(report_dir: Path, name: str) -> Stage:
    path = Path(report_dir) / name / "summary.json"
    summary = io.read_json(path)
    try:
        summary["feature_layer"]["chosen"], summary["seeds"][0], list(summary["models"])
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{path}: not the summary of a `convattn reproduce` run (it needs "
                        "feature_layer, seeds and models); rerun it or pass --model PATH") from None
    return Stage(name, STAGE_DATASETS[name], path.parent, summary)


def report_models(report_dir: Path) -> list[ModelEntry]:
    """Every decoder of every caption stage in `report_dir`, grouped by dataset (in stage
    order), each group best validation score first."""
    stages = find_stages(report_dir)
    if not stages:
        raise UserError(f"--report {report_dir}: no caption/summary.json there (nor "
                        f"{', '.join(n + '/summary.json' for n in list(STAGE_DATASETS)[1:])}); {NO_REPORT}")
    entries = [entry for stage in stages for entry in stage_models(stage)]
    if not entries:
        raise UserError(f"--report {report_dir}: no model.pt under "
                        f"{' or '.join(str(s.folder / 'runs') for s in stages)}; {NO_REPORT}")
    return ranked(entries)


def stage_models(stage: Stage) -> list[ModelEntry]:
    chosen = stage.summary["feature_layer"]["chosen"]
    entries = []
    for path in sorted(stage.folder.glob("runs/*/*/seed*/model.pt")):
        layer, model, seed = path.parts[-4], path.parts[-3], int(path.parts[-2][4:])
        where = "" if layer == chosen else f", {layer} features"
        label = f"{stage.dataset} · {stage.recipe} · {NAMES.get(model, model)}, seed {seed}{where}"
        # summary.json's seeds are the chosen layer's runs: another layer's have result.json only
        summary = stage.summary if layer == chosen else {"config": stage.summary.get("config")}
        entries.append(ModelEntry(path, label, stage.dataset, stage.recipe,
                                  validation(path.parent, summary, model, seed), stage.data_dir))
    return entries


def ranked(entries: list[ModelEntry]) -> list[ModelEntry]:
    """Grouped by dataset (groups in order of first appearance), best first in each group."""
    groups: dict = {}
    for entry in entries:
        groups.setdefault(entry.dataset, []).append(entry)
    return [entry for group in groups.values() for entry in sorted(group, key=ModelEntry.sort_key)]


def given_models(paths: list) -> list[ModelEntry]:
    """--model files, in the order given; each with its run's dataset and validation score
    when the run's summary.json is where `convattn caption` writes it (OUT/summary.json for
    OUT/runs/<layer>/<model>/seed<N>/model.pt)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file (a model.pt written by `convattn caption`)")
        out.append(run_entry(path))
    return out


def run_entry(path: Path) -> ModelEntry:
    """A --model file with what its run folder says of it (nothing when it is not in one)."""
    parts = path.resolve().parts
    summary_path = Path(*parts[:-5], "summary.json") if len(parts) > 5 else None
    in_run = summary_path is not None and parts[-5] == "runs" and parts[-2].startswith("seed")
    if not in_run or not summary_path.is_file():
        return ModelEntry(path)
    try:
        summary = io.read_json(summary_path)
        name = summary_path.parent.name  # a stage of a reproduce folder, or any caption --out
        stage = Stage(name, STAGE_DATASETS.get(name, summary["dataset"]["name"]), summary_path.parent, summary)
        score = validation(path.parent, summary, parts[-3], int(parts[-2][4:]))
        return ModelEntry(path, None, stage.dataset, stage.recipe, score, stage.data_dir)
    except (OSError, ValueError, KeyError, TypeError):  # not a summary of ours: nothing known
        return ModelEntry(path)


def validation(run: Path, summary: dict, model: str, seed: int) -> Validation | None:
    """The validation score of the run's model.pt (see the module's doc), or None when
    neither its result.json nor the summary recorded one."""
    record = run_record(run, summary, model, seed)
    if record is None:
        return None
    select = (record.get("config") or summary.get("config") or {}).get("select", "final")
    cider, bleu = record.get("val_cider") or [], record.get("val_bleu4") or []
    history = cider or bleu
    if not history:
        return None
    if select == "val_cider" and cider:  # the first epoch with the best score, as training keeps it
        epoch, chosen = record.get("best_epoch") or cider.index(max(cider)) + 1, "best validation CIDEr-D"
    else:
        epoch, chosen = len(history), "last epoch"
    return Validation("CIDEr-D" if cider else "bleu4", float(history[epoch - 1]), epoch, chosen)


def run_record(run: Path, summary: dict, model: str, seed: int) -> dict | None:
    """The run's result.json, else its seed's entry in summary.json, else None."""
    result = run / "result.json"
    if result.is_file():
        try:
            return io.read_json(result)
        except (OSError, ValueError):
            pass  # a damaged copy: the summary has the same numbers
    seeds = ((summary.get("models") or {}).get(model) or {}).get("seeds") or []
    return next((s for s in seeds if isinstance(s, dict) and s.get("seed") == seed), None)
