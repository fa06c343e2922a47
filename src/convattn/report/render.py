"""results.json -> report.md and report.html.

The report is drawn from results.json alone (and the figures the stages wrote beside it),
so `convattn reproduce --render-only` rebuilds it without training. Its sections follow
the study's report: Q1.1-Q1.3, Q2.1-Q2.3, Q3.1a-c, then this run against the study.
"""

from __future__ import annotations

from pathlib import Path

from convattn.common import io
from convattn.report import study, templating
from convattn.report.html import markdown_to_html


def _f(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pm(mean, std, digits: int = 4) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _figure(stage_dir: str, summary: dict, key: str, alt: str) -> str:
    """A Markdown image for figures[key] (a path, or {name: path} for one image per name)."""
    path = (summary.get("figures") or {}).get(key)
    if not path:
        return f"*(figure `{key}` missing)*"
    if isinstance(path, dict):
        return "\n\n".join(f"![{alt} ({name.replace('_', ' ')})]({stage_dir}/{p})" for name, p in path.items())
    return f"![{alt}]({stage_dir}/{path})"


def _stage_problem(stage: dict, name: str) -> str | None:
    """A paragraph explaining a stage that did not produce results, else None."""
    if stage is None:
        return f"> Stage `{name}` was not run."
    if stage["status"] == "failed":
        return f"> Stage `{name}` failed: `{stage.get('error')}`. Rerun `convattn reproduce` to retry it."
    if stage["status"] == "skipped":
        return f"> Stage `{name}` was skipped: {stage.get('reason')}"
    return None


# ------------------------------------------------------------------------------ sections


def _theory_section(stage: dict) -> str:
    problem = _stage_problem(stage, "theory")
    if problem:
        return "## Question 1\n\n" + problem + "\n"
    sections = templating.ENV.get_template("_theory.md.j2").module
    result = stage["result"]
    return ("## Question 1\n\n" + str(sections.q1(result, "###")) + "\n## Question 2\n\n"
            + str(sections.q21(result["equivariance"], "###")))


def _classify_section(stage: dict) -> str:
    problem = _stage_problem(stage, "classify")
    if problem:
        return "### Q2.2 and Q2.3\n\n" + problem + "\n"
    s, d = stage["summary"], stage["dir"]
    cfg = s.get("config", {})
    best = s["best"]
    rows = []
    for run in s["runs"]:
        loss = run["train_loss"][-1] if run["train_loss"] else None
        running = (run.get("train_loss_running_mean") or [None])[-1]
        val = run["val_acc"][-1] if run["val_acc"] else None
        mark = " **(best)**" if run["lr"] == s["best_lr"] else ""
        rows.append(f"| {run['lr']:g}{mark} | {run['status']} | {_f(loss)} | {_f(running)} | {_f(val)} | "
                    f"{_f(run.get('test_acc'))} | {run.get('seconds', 0):.0f} |")
    others = "\n".join(f"| {src} | {dr:g} | {lr:g} | {_f(tl)} | {_f(va)} | {_f(te)} |"
                       for src, dr, lr, tl, va, te in study.OTHER_CLASSIFY)
    seed = study.SEED["classify"]
    labels = {"optimizer": "optimizer", "epochs": "epochs", "batch_size": "batch size",
              "momentum": "momentum", "weight_decay": "weight decay", "schedule": "learning-rate schedule",
              "label_smoothing": "label smoothing", "augment": "augmentation", "dropout": "dropout",
              "seed": "seed"}
    recipe = ", ".join(f"{label} {cfg[k].upper() if k == 'optimizer' else cfg[k]}"
                       for k, label in labels.items() if k in cfg)
    return f"""### Q2.2 Training the CNN

The model of the study ({s['params']:,} parameters) trained with {recipe or 'the preset recipe'};
the learning rate is chosen on the dev set (the last epoch's dev accuracy). "Train loss"
is the mean of the last epoch's batch losses; the course skeleton printed instead a
running mean of every batch loss since epoch 1, which is what the study's 0.3175 is, so
both are shown.

| learning rate | status | train loss (last epoch mean) | running mean since epoch 1 | dev accuracy | test accuracy | seconds |
|---:|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

The best learning rate is **{s['best_lr']:g}**: dev accuracy **{_f(best['val_acc'])}**, test accuracy
**{_f(best['test_acc'])}** (the study: lr {seed['lr']:g}, train loss {seed['train_loss']}, dev {seed['val_acc']},
test {seed['test_acc']}, dropout {seed['dropout']}). Other groups' runs of the same protocol:

| source | dropout | lr | train loss | dev accuracy | test accuracy |
|---|---:|---:|---:|---:|---:|
{others}

{_figure(d, s, 'best_train_loss', 'training loss per epoch, best learning rate')}

{_figure(d, s, 'best_val_acc', 'dev accuracy per epoch, best learning rate')}

{_figure(d, s, 'sweep_curves', 'training loss and dev accuracy per epoch, every learning rate')}

### Q2.3 Kernels

{_figure(d, s, 'conv1_kernels', 'the 16 kernels of the first convolution')}

{_figure(d, s, 'conv2_kernels', 'the 32x16 kernels of the second convolution')}

{_figure(d, s, 'conv2_kernels_channel0', "the second convolution's kernels on its first input channel")}

The first layer's 3x3 kernels act directly on pixels, so each can only weigh a pixel
against its 8 neighbours: look in the figure for sign patterns split along a line
(edge and bar detectors of one orientation) and for same-sign kernels (local brightness),
the simple, generic features any image has. The second layer's kernels combine the 16 first-layer
maps, so a single 3x3 slice means little on its own: each output channel responds to a
pattern of first-layer features (corners, textures, parts of a garment's outline) over a
larger receptive field (8x8 pixels after the first pooling). Deeper layers build
increasingly specific, class-related features from these.
"""


def _caption_section(stage: dict) -> str:
    problem = _stage_problem(stage, "caption")
    if problem:
        if stage and stage["status"] == "skipped":
            problem += "\n\n" + study.SYDNEY_HOWTO
        return "## Question 3\n\n" + problem + "\n"
    s, d = stage["summary"], stage["dir"]
    models = s["models"]
    cfg = s.get("config", {})
    names = {"no_attention": "without attention (Q3.1a)", "attention": "with additive attention (Q3.1b)"}

    def metric_row(name):
        m = models[name]
        return (f"| {names[name]} | {_pm(m['test_bleu4_mean'], m['test_bleu4_std'])} | "
                f"{_pm(m['test_bleu4_best_mean'], m['test_bleu4_best_std'])} | "
                f"{_pm(m['corpus_bleu4_mean'], m['corpus_bleu4_std'])} | {_pm(m['cider_mean'], m['cider_std'], 3)} | "
                f"{_pm(m['rouge_l_mean'], m['rouge_l_std'])} | {m['seconds_total']:.0f} |")

    comp = s.get("comparison") or {}
    interval = ""
    if comp:
        interval = (f"Paired bootstrap over the {comp['images']} test images ({comp['samples']:,} resamples, "
                    f"per-image bleu4 averaged over the {comp['seeds']} seed(s)) of (attention − no attention): "
                    f"**{comp['difference']:+.4f}**, 95% interval [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}]. "
                    + ("The interval excludes 0." if comp["ci_low"] > 1e-9 or comp["ci_high"] < -1e-9 else
                       "The interval includes 0: this data cannot tell the two decoders apart."))
    shown = []
    for image in cfg.get("show", []):
        caps = (s.get("captions") or {}).get(str(image))
        if not caps:
            continue
        other = study.OTHER_GROUP_CAPTIONS.get(str(image))
        lines = [f"- with attention: *{caps['attention']}*" if "attention" in caps else "",
                 f"- without attention: *{caps['no_attention']}*" if "no_attention" in caps else "",
                 f"- another group's attention model: *{other}*" if other else "",
                 f"- first reference: *{caps['references'][0]}*" if caps.get("references") else ""]
        shown.append(f"**Test image {caps.get('filename', image)}** (seed {s['seeds'][0]})\n\n"
                     + "\n".join(x for x in lines if x))
    enc = s.get("encoder") or {}
    layer = s.get("feature_layer") or {}
    grid = "x".join(map(str, enc.get("grid", [])))
    chosen = ("chosen on validation BLEU-4 in this run" if layer.get("selected_by") == "validation"
              else "set by the preset")
    encoder = (f"{enc.get('name')} encoder, layer `{enc.get('layer')}` ({enc.get('channels')} channels, "
               f"a {grid} grid of {enc.get('regions')} regions; {chosen})")
    seeds = ", ".join(map(str, s.get("seeds", [])))

    return f"""## Question 3

Remote-sensing captioning on {(s.get('dataset') or {}).get('name', 'the dataset')}: a frozen ImageNet-pretrained
{encoder} and an LSTM decoder; vocabulary of {s['vocab_size']} entries, captions up to {s['max_len']} tokens.
Protocol: Adam lr {cfg.get('lr')}, {cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, gradients clipped to
±{cfg.get('grad_clip')}, attention activation {cfg.get('attention_act')}, {'greedy' if cfg.get('beam', 1) == 1 else 'beam ' + str(cfg.get('beam'))} decoding; seeds {seeds}.
Values are mean ± std over the seeds.
`bleu4` is the study's metric: the mean over test images of nltk's `sentence_bleu` against
the image's 5 references (uniform 4-gram weights, no smoothing); corpus BLEU-4 (nltk
`corpus_bleu`), CIDEr-D and ROUGE-L (pycocoevalcap) are given beside it.

### Q3.1a and Q3.1b

| decoder | test bleu4 (final model) | test bleu4 (best on val) | corpus BLEU-4 | CIDEr-D | ROUGE-L | seconds |
|---|---:|---:|---:|---:|---:|---:|
{metric_row('no_attention')}
{metric_row('attention')}

{interval}

{_figure(d, s, 'curves', 'training loss and validation BLEU-4 per epoch, both decoders')}

### Q3.1c Generated captions

{_figure(d, s, 'captions', 'test images with generated and reference captions')}

{(chr(10) * 2).join(shown)}

{_figure(d, s, 'attention', 'attention over the image for each generated word')}

Read the attention maps with care: each panel shows where the decoder put its weight
before emitting that word (the title gives the largest weight; uniform attention would be
1/regions). A decoder that has learned one stock sentence per scene class can generate
fluent, correct captions while its attention rests on uninformative regions such as
image borders after the first word; the maps show what the model looked at, not that it
grounded each word in the object it names.
"""


def _closing_table(results: dict) -> str:
    rows = []

    def row(what, seed_value, ours, digits=4):
        if ours is None:
            rows.append(f"| {what} | {seed_value} | — | — |")
            return
        if isinstance(seed_value, (int, float)):
            diff = ours - seed_value
            sv = f"{seed_value:,}" if isinstance(seed_value, int) else f"{seed_value:.{digits}f}"
            ov = f"{ours:,}" if isinstance(ours, int) else f"{ours:.{digits}f}"
            dv = f"{diff:+,}" if isinstance(diff, int) else f"{diff:+.{digits}f}"
            rows.append(f"| {what} | {sv} | {ov} | {dv} |")
        else:
            rows.append(f"| {what} | {seed_value} | {ours} | |")

    stages = results["stages"]
    th = stages.get("theory") or {}
    t = th.get("result") if th.get("status") == "ok" else None
    row("Q1.1 CNN parameters", study.SEED["cnn_params"], t and t["cnn"]["total_params"])
    row("Q1.2 MLP parameters", study.SEED["mlp_params"], t and t["mlp"]["total_params"])
    row("Q1.2 MLP / CNN", study.SEED["ratio_stated"], t and f"{t['ratio']:.2f}x")
    cl = stages.get("classify") or {}
    c = cl.get("summary") if cl.get("status") == "ok" else None
    seed = study.SEED["classify"]
    best_run = c and next((r for r in c["runs"] if r["lr"] == c["best_lr"]), None)
    row("Q2.2 best learning rate", seed["lr"], c and c["best_lr"], 3)
    row("Q2.2 final train loss (skeleton's running mean)", seed["train_loss"],
        best_run and (best_run.get("train_loss_running_mean") or [None])[-1])
    row("Q2.2 dev accuracy", seed["val_acc"], c and c["best"]["val_acc"])
    row("Q2.2 test accuracy", seed["test_acc"], c and c["best"]["test_acc"])
    ca = stages.get("caption") or {}
    s = ca.get("summary") if ca.get("status") == "ok" else None
    for name, label in (("no_attention", "without attention"), ("attention", "with attention")):
        m = s and s["models"][name]
        row(f"Q3.1 test bleu4 {label} (mean over seeds)", study.SEED["caption"][name],
            m and m["test_bleu4_mean"])
    return ("## This run against the study\n\n| quantity | study (seed report) | this run | difference |\n"
            "|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")


def _environment_section(results: dict) -> str:
    env = results.get("environment", {})
    def recorded(name, st):
        """Seconds the stage's runs took when they were computed (reused runs keep theirs)."""
        summary = st.get("summary") or {}
        if name == "classify" and summary:
            return f"{sum(r.get('seconds') or 0 for r in summary['runs']):.0f} (sum over learning rates)"
        if name == "caption" and summary:
            timing = summary.get("timing") or {}
            features = sum(f.get("seconds") or 0 for f in (timing.get("features") or {}).values())
            runs = sum(summary["models"][m]["seconds_total"] for m in summary["models"])
            return f"{runs:.0f} training + evaluation, {features:.0f} features"
        return ""

    stage_rows = "\n".join(f"| {name} | {st['status']} | {st.get('seconds', 0):.0f} | {recorded(name, st)} |"
                           for name, st in results["stages"].items() if st)
    env_rows = "\n".join(f"| {k} | {v} |" for k, v in env.items())
    return f"""## Environment and timing

| stage | status | seconds, this call | seconds recorded by the runs |
|---|---|---:|---|
{stage_rows}

Wall time of this call: {results.get('wall_seconds', 0):.0f} s (finished runs and cached features are reused,
so a rerun is quicker than the runs' own recorded times), preset `{results['preset']}`, device `{results.get('device')}`.

| | |
|---|---|
{env_rows}
"""


def render_markdown(results: dict) -> str:
    header = f"""# CNNs and attention: the study, reproduced

Preset `{results['preset']}`, written {results.get('created', '')} by `convattn reproduce`.
Every number below comes from `results.json` beside this file; the figures were drawn from
the runs' own histories.
"""
    warnings = "".join(f"> {w}\n\n" for w in results.get("warnings", []))
    stages = results["stages"]
    return "\n".join([
        header, warnings,
        _theory_section(stages.get("theory")),
        _classify_section(stages.get("classify")),
        _caption_section(stages.get("caption")),
        _closing_table(results),
        _environment_section(results),
    ])


def write_report(out: Path, results: dict) -> None:
    """Write report.md and the self-contained report.html from `results`."""
    markdown = render_markdown(results)
    io.write_text(out / "report.md", markdown)
    io.write_text(out / "report.html", markdown_to_html(markdown, out, "convattn: the study, reproduced"))
