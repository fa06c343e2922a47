"""results.json -> report.md and one self-contained report.html.

The report is drawn from results.json alone (and the figures the stages wrote beside it),
so `convattn reproduce --render-only` rebuilds it without training. Python picks and
computes the values below; the templates in report/templates/ lay them out, one per
question (q1.md.j2 ... environment.md.j2, joined by report.md.j2); report/html.py turns
the Markdown into one self-contained HTML page.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import UndefinedError

from convattn.caption.reference import TITLES as REFERENCE_TITLES
from convattn.common import io
from convattn.common.errors import UserError
from convattn.report import published, study, templating
from convattn.report.benchmark import benchmark_values
from convattn.report.html import markdown_to_html

STAGES = ("theory", "classify", "caption", "caption-best", "caption-splits", "rsicd", "rsicd-best", "rsicd-splits")

# config key -> words, in the order the recipe is told
CLASSIFY_RECIPE = {"optimizer": "optimizer", "epochs": "epochs", "batch_size": "batch size",
                   "momentum": "momentum", "weight_decay": "weight decay", "schedule": "learning-rate schedule",
                   "label_smoothing": "label smoothing", "augment": "augmentation", "dropout": "dropout",
                   "seed": "seed"}
DECODERS = {"no_attention": "without attention (Q3.1a)", "attention": "with additive attention (Q3.1b)"}
# every decoder `caption --models` trains, for the best recipe's section
DECODER_NAMES = {"no_attention": "LSTM without attention", "attention": "LSTM with additive attention",
                 "transformer": "Transformer"}
METRIC_NAMES = {"bleu4": "the study's bleu4", "cider": "CIDEr-D",
                "cider_before_scst": "CIDEr-D of the cross-entropy models (before self-critical training)"}

# CommonMark plus pipe tables; raw HTML in the text (a caption, an error message) stays text


def _last(values: list | None):
    return values[-1] if values else None


# ------------------------------------------------------------------ values for the templates


def _classify_values(stage: dict) -> dict:
    """The classify stage plus its table rows and recipe; a stage that is not ok as is."""
    if stage["status"] != "ok":
        return stage
    s = stage["summary"]
    cfg = s.get("config", {})
    runs = [{"lr": run["lr"], "best": run["lr"] == s["best_lr"], "status": run["status"],
             "train_loss": _last(run["train_loss"]), "running_mean": _last(run.get("train_loss_running_mean")),
             "val_acc": _last(run["val_acc"]), "test_acc": run.get("test_acc"), "seconds": run.get("seconds", 0)}
            for run in s["runs"]]
    recipe = ", ".join(f"{label} {cfg[k].upper() if k == 'optimizer' else cfg[k]}"
                       for k, label in CLASSIFY_RECIPE.items() if k in cfg)
    return {**stage, "runs": runs, "recipe": recipe or "the preset recipe"}


def _caption_values(stage: dict) -> dict:
    """The caption stage plus what its section tells: protocol, encoder, comparison, captions shown."""
    if stage["status"] != "ok":
        return stage
    s = stage["summary"]
    cfg = s.get("config", {})
    enc = s.get("encoder") or {}
    comparison = s.get("comparison") or None
    if comparison:
        comparison = {**comparison, "excludes_zero": comparison["ci_low"] > 1e-9 or comparison["ci_high"] < -1e-9}
    shown = []
    for image in cfg.get("show", []):
        caps = (s.get("captions") or {}).get(str(image))
        if not caps:
            continue
        lines = [("with attention", caps.get("attention")), ("without attention", caps.get("no_attention")),
                 ("another group's attention model", study.OTHER_GROUP_CAPTIONS.get(str(image))),
                 ("first reference", (caps.get("references") or [None])[0])]
        shown.append({"filename": caps.get("filename", image), "lines": [(k, v) for k, v in lines if v]})
    encoder = {key: enc.get(key) for key in ("name", "layer", "channels", "regions")}
    encoder["grid"] = "x".join(map(str, enc.get("grid", [])))  # [8, 8] -> '8x8'
    by_validation = (s.get("feature_layer") or {}).get("selected_by") == "validation"
    encoder["chosen"] = "chosen on validation BLEU-4 in this run" if by_validation else "set by the preset"
    protocol = {key: cfg.get(key) for key in ("lr", "epochs", "batch_size", "grad_clip", "attention_act")}
    protocol["decoding"] = "greedy" if cfg.get("beam", 1) == 1 else f"beam {cfg['beam']}"
    return {
        **stage,
        **_coco_and_border(s),
        "dataset": (s.get("dataset") or {}).get("name", "the dataset"),
        "encoder": encoder,
        "protocol": protocol,
        "seeds": ", ".join(map(str, s.get("seeds", []))),
        "decoders": [(DECODERS[name], s["models"][name]) for name in DECODERS],
        "comparison": comparison,
        "shown": shown,
    }


def _coco_and_border(s: dict) -> dict:
    """Q3's paper-comparable table (our decoders' coco-caption metrics beside the published
    Sydney-Captions results) and where each attention decoder looked. A summary written
    before these keys existed gives empty lists: the report then leaves both out."""
    models = s.get("models") or {}
    coco = []
    for name, label in {**DECODERS, **REFERENCE_TITLES}.items():
        m = (models.get(name) or {}).get("coco")
        if m:  # a reference captioner is deterministic: no spread to show
            std = name not in REFERENCE_TITLES
            coco.append({"label": label, **{k: (v["mean"], v["std"] if std else None) for k, v in m.items()}})
    return {"coco": coco, "published": published.scored(published.SYDNEY) if coco else [],
            "border": _border_rows(s, DECODERS)}


def _border_rows(s: dict, labels: dict) -> list[dict]:
    """Outer-ring attention of each decoder in `labels` ({name: label}) that has it."""
    models = s.get("models") or {}
    return [{"label": label, "mass": m["border_mass"], "std": m.get("border_mass_std"),
             "area": m["border_area_share"], "ratio": m["border_ratio"],
             # no sentinel in the decoder: nothing to measure, shown as a dash
             "sentinel": m.get("sentinel_weight") if (s.get("config") or {}).get("sentinel") else None}
            for name, label in labels.items() if "border_mass" in (m := models.get(name) or {})]


def _best_values(stage: dict, study_stage: dict) -> dict:
    """The best recipe's stage plus what its section tells: the recipe in words, every
    decoder's coco-caption scores, the pairwise comparisons, where the attention looked, the
    attention figures, and its runs' seconds against the study's caption runs'."""
    if stage["status"] != "ok":
        return stage
    s = stage["summary"]
    cfg, enc, models = s.get("config") or {}, s.get("encoder") or {}, s["models"]
    labels = {name: DECODER_NAMES.get(name, name) for name in models}
    seeds = s.get("seeds", [])
    one = len(seeds) == 1  # one seed: the score alone, not "± 0"

    def spread(mean, std):
        return mean, None if one else std

    rows = [{"label": labels[name], "coco": {k: spread(v["mean"], v["std"]) for k, v in m["coco"].items()},
             "bleu4": spread(m["test_bleu4_mean"], m["test_bleu4_std"]), "ratio": m.get("border_ratio")}
            for name, m in models.items()]
    comparisons = []
    for c in s.get("comparisons") or []:
        b, a = c["pair"].split(" - ")
        higher = labels.get(b, b) if c["difference"] > 0 else labels.get(a, a)
        comparisons.append({**c, "b": labels.get(b, b), "a": labels.get(a, a),
                            "metric_name": METRIC_NAMES.get(c["metric"], c["metric"]), "higher": higher})
    scst = [{"label": labels[name], "val_cider": m["val_cider"][-len(m["scst_reward"]):], "reward": m["scst_reward"],
             "before": m.get("before_scst"), "after": {"cider": m["coco"]["cider"]["mean"],
                                                       "bleu4": m["coco"]["bleu4"]["mean"]}}
            for name, m in models.items() if m.get("scst_reward")]
    figures = (s.get("figures") or {}).get("attention_models") or {}
    best_seconds = stage.get("run_seconds", (s.get("timing") or {}).get("runs_seconds"))
    study_seconds = None
    if study_stage["status"] == "ok":
        study_seconds = study_stage.get("run_seconds", (study_stage["summary"].get("timing") or {}).get("runs_seconds"))
    return {
        **stage,
        "preset": stage.get("preset") or cfg.get("preset", "best"),
        "recipe": _best_recipe(cfg, enc, labels),
        "seeds": ", ".join(map(str, seeds)),
        "runs": f"seed {seeds[0]}" if one else f"mean ± std over seeds {', '.join(map(str, seeds))}",
        "rows": rows,
        "published": published.scored(published.SYDNEY),
        "comparisons": comparisons,
        "scst": scst,
        "border": [{**b, "std": None} if one else b for b in _border_rows(s, labels)],
        "grid": "x".join(map(str, enc.get("grid", []))),
        "attention_figures": [(labels.get(name, name), images) for name, images in figures.items()],
        "seconds": {"best": best_seconds, "study": study_seconds,
                    "study_preset": study_stage.get("preset") or (study_stage.get("summary") or {}).get("preset"),
                    "ratio": best_seconds / study_seconds if best_seconds and study_seconds else None},
    }


def _count(n, noun: str) -> str:
    """(1, 'epoch') -> '1 epoch'; (4, 'epoch') -> '4 epochs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _best_recipe(cfg: dict, enc: dict, labels: dict) -> list[tuple[str, str]]:
    """The recipe as (what, how) lines, read from the stage's config and encoder."""
    size = cfg.get("image_size")
    lines = [("decoders", ", ".join(labels.values())),
             ("encoder", f"{enc.get('name')} (frozen), layer `{enc.get('layer')}` ({enc.get('channels')} channels), "
                         f"{f'images resized to {size}x{size}' if size else 'images at their own size'}, "
                         f"a grid of {'x'.join(map(str, enc.get('grid', [])))} regions"),
             ("region features", ("outer ring read from its inward neighbours" if cfg.get("outer_ring") == "inward"
                                  else "outer ring as the encoder gives it")
              + (f", each region {cfg['feature_norm']}-normalised" if cfg.get("feature_norm", "none") != "none"
                 else ", not rescaled"))]
    if "Transformer" in labels.values():
        lines.append(("Transformer", f"{_count(cfg.get('layers'), 'layer')}, width {cfg.get('model_dim')}, "
                                     f"{cfg.get('heads')} heads, dropout {cfg.get('transformer_dropout')}"))
    lines.append(("cross-entropy training", f"{_count(cfg.get('epochs'), 'epoch')}, Adam lr {cfg.get('lr')}, "
                                            f"batch {cfg.get('batch_size')}"))
    scst_epochs = cfg.get("scst_epochs") or 0
    lines.append(("self-critical training", f"{_count(scst_epochs, 'epoch')} after cross-entropy, reward "
                                            f"CIDEr-D against the training references, baseline "
                                            f"{cfg.get('scst_baseline')} of {cfg.get('scst_samples')} samples "
                                            f"per image, Adam lr {cfg.get('scst_lr')}"
                  if scst_epochs else "none (cross-entropy only)"))
    beam = cfg.get("beam", 1)
    decoding = "greedy" if beam == 1 else f"beam search, beam {beam}"
    if cfg.get("rerank"):
        decoding += (f"; of the beam's hypotheses the one with the highest mean CIDEr-D against the "
                     f"captions of the {cfg['rerank']} training images nearest in mean region feature "
                     "(consensus reranking)")
    lines.append(("decoding", decoding))
    return lines


def _closing_rows(stages: dict) -> list[dict]:
    """This run against the study: one row per headline number, formatted, with the difference."""
    rows = []

    def row(what, seed_value, ours, digits=4):
        if ours is None:
            rows.append({"what": what, "study": seed_value, "ours": "—", "difference": "—"})
        elif isinstance(seed_value, (int, float)):
            def number(x, sign=""):
                return f"{x:{sign},}" if isinstance(x, int) else f"{x:{sign}.{digits}f}"
            rows.append({"what": what, "study": number(seed_value), "ours": number(ours),
                         "difference": number(ours - seed_value, "+")})
        else:
            rows.append({"what": what, "study": seed_value, "ours": ours, "difference": ""})

    def ok(name, key):
        stage = stages[name]
        return stage[key] if stage["status"] == "ok" else None

    t = ok("theory", "result")
    row("Q1.1 CNN parameters", study.SEED["cnn_params"], t and t["cnn"]["total_params"])
    row("Q1.2 MLP parameters", study.SEED["mlp_params"], t and t["mlp"]["total_params"])
    row("Q1.2 MLP / CNN", study.SEED["ratio_stated"], t and f"{t['ratio']:.2f}x")
    c = ok("classify", "summary")
    seed = study.SEED["classify"]
    best_run = c and next((r for r in c["runs"] if r["lr"] == c["best_lr"]), None)
    row("Q2.2 best learning rate", seed["lr"], c and c["best_lr"], 3)
    row("Q2.2 final train loss (skeleton's running mean)", seed["train_loss"],
        best_run and _last(best_run.get("train_loss_running_mean")))
    row("Q2.2 dev accuracy", seed["val_acc"], c and c["best"]["val_acc"])
    row("Q2.2 test accuracy", seed["test_acc"], c and c["best"]["test_acc"])
    s = ok("caption", "summary")
    for name, label in (("no_attention", "without attention"), ("attention", "with attention")):
        row(f"Q3.1 test bleu4 {label} (mean over seeds)", study.SEED["caption"][name],
            s and s["models"][name]["test_bleu4_mean"])
    return rows


def _recorded_seconds(name: str, stage: dict) -> str:
    """Seconds the stage's runs took when they were computed (reused runs keep theirs)."""
    summary = stage.get("summary") or {}
    if name == "classify" and summary:
        return f"{sum(r.get('seconds') or 0 for r in summary['runs']):.0f} (sum over learning rates)"
    if name.startswith("caption") and summary:
        cached = (summary.get("timing") or {}).get("features") or {}
        features = sum(f.get("seconds") or 0 for f in cached.values())
        runs = sum(m["seconds_total"] for m in summary["models"].values())
        return f"{runs:.0f} training + evaluation, {features:.0f} features"
    return ""


def render_markdown(results: dict) -> str:
    """report.md's text from results.json's dict; a stage missing from it reads "not run"."""
    stages = {name: results["stages"].get(name) or {"status": "not run"} for name in STAGES}
    timing = [{"name": name, "status": st["status"], "seconds": st.get("seconds", 0),
               "recorded": _recorded_seconds(name, st)} for name, st in results["stages"].items() if st]
    return templating.render(
        "report.md.j2",
        preset=results["preset"], created=results.get("created", ""), device=results.get("device"),
        wall_seconds=results.get("wall_seconds", 0), warnings=results.get("warnings", []),
        environment=results.get("environment", {}), timing=timing, study=study,
        theory=stages["theory"], classify=_classify_values(stages["classify"]),
        caption=_caption_values(stages["caption"]), best=_best_values(stages["caption-best"], stages["caption"]),
        bench=benchmark_values(stages), closing=_closing_rows(stages))


# -------------------------------------------------------------------------------- HTML

def write_report(out: Path, results: dict) -> None:
    """Write report.md and the self-contained report.html from `results`."""
    try:
        markdown = render_markdown(results)
    except UndefinedError as exc:  # a key the report needs is not in results.json
        raise UserError(f"{out / 'results.json'}: {exc.message}; it was written by another version of "
                        f"convattn: rerun `convattn reproduce --out {out}` (finished runs are reused)") from exc
    io.write_text(out / "report.md", markdown)
    io.write_text(out / "report.html", markdown_to_html(markdown, out))
