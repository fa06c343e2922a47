"""report.md and report.html from a results.json made here, without training."""

import base64
import copy
import json
import re

import pytest
from PIL import Image

from convattn.cli import main
from convattn.common import io
from convattn.common.errors import UserError
from convattn.report import published, study
from convattn.report.html import markdown_to_html
from convattn.report.render import write_report
from convattn.theory.answer import answer

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")

CLASSIFY_FIGURES = {"best_train_loss": "figures/loss.png", "best_val_acc": "figures/acc.png",
                    "sweep_curves": "figures/sweep.png", "conv1_kernels": "figures/k1.png",
                    "conv2_kernels": "figures/k2.png", "conv2_kernels_channel0": "figures/k2c0.png"}
CAPTION_FIGURES = {"curves": {"no_attention": "figures/curves_a.png", "attention": "figures/curves_b.png"},
                   "captions": "figures/captions.png", "attention": {"219": "figures/att_219.png"}}


def _model(bleu: float) -> dict:
    return {"test_bleu4_mean": bleu, "test_bleu4_std": 0.0123, "test_bleu4_best_mean": bleu + 0.01,
            "test_bleu4_best_std": None, "corpus_bleu4_mean": 0.4444, "corpus_bleu4_std": 0.0011,
            "cider_mean": 1.2346, "cider_std": 0.0456, "rouge_l_mean": 0.6789, "rouge_l_std": 0.0022,
            "seconds_total": 61.4,
            "coco": {k: {"mean": v, "std": 0.01} for k, v in (("bleu1", 0.7712), ("bleu2", 0.6623), ("bleu3", 0.5834),
                                                                ("bleu4", bleu), ("meteor", None), ("rouge_l", 0.6789),
                                                                ("cider", 1.2346))}}


def _border(model: dict) -> dict:
    return {**model, "border_mass": 0.6401, "border_mass_std": 0.0, "border_area_share": 60 / 256,
            "border_ratio": 0.6401 / (60 / 256), "sentinel_weight": 0.0}


@pytest.fixture(scope="module")
def theory_result():
    return answer()


@pytest.fixture
def results(tmp_path, theory_result):
    """A results.json as `convattn reproduce` writes it, with its figures on disk."""
    for stage, figures in (("classify", CLASSIFY_FIGURES), ("caption", CAPTION_FIGURES)):
        for value in figures.values():
            for path in value.values() if isinstance(value, dict) else [value]:
                (tmp_path / stage / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / stage / path).write_bytes(PNG)
    runs = [{"lr": lr, "status": "ok", "train_loss": [0.9, loss], "train_loss_running_mean": [0.9, loss + 0.1],
             "val_acc": [0.8, acc], "test_acc": acc - 0.002, "seconds": 12.0}
            for lr, loss, acc in ((0.001, 0.5123, 0.8711), (0.01, 0.3011, 0.9133))]
    classify = {"params": 769_930, "best_lr": 0.01, "best": {"val_acc": 0.9133, "test_acc": 0.9113},
                "runs": runs, "config": {"optimizer": "sgd", "epochs": 15, "batch_size": 8, "dropout": 0.2},
                "figures": CLASSIFY_FIGURES}
    caption = {"dataset": {"name": "Sydney-Captions"}, "vocab_size": 180, "max_len": 30,
               "encoder": {"name": "efficientnet-lite0", "layer": "blocks", "channels": 320, "grid": [8, 8],
                           "regions": 64},
               "feature_layer": {"selected_by": "config"}, "seeds": [42, 43],
               "config": {"lr": 0.0004, "epochs": 10, "batch_size": 8, "grad_clip": 5.0, "attention_act": "tanh",
                          "beam": 1, "show": ["219"]},
               "models": {"no_attention": _model(0.4911), "attention": _border(_model(0.5307))},
               "comparison": {"images": 58, "samples": 10_000, "seeds": 2, "difference": 0.0396,
                              "ci_low": 0.0101, "ci_high": 0.0702},
               "captions": {"219": {"filename": "219.tif", "attention": "a residential area with houses",
                                    "no_attention": "many buildings", "references": ["a dense residential area"]}},
               "timing": {"features": {"blocks": {"seconds": 30.0}}},
               "figures": CAPTION_FIGURES}
    results = {"preset": "homework", "created": "2026-01-01 00:00 UTC", "device": "cpu",
               "environment": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "warnings": [], "wall_seconds": 120.0,
               "stages": {"theory": {"dir": "theory", "status": "ok", "result": theory_result, "seconds": 1.0},
                          "classify": {"dir": "classify", "status": "ok", "summary": classify, "seconds": 30.0},
                          "caption": {"dir": "caption", "status": "ok", "summary": caption, "seconds": 90.0}}}
    return json.loads(json.dumps(results))  # as read back from results.json


def test_markdown_to_html(tmp_path):
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "a.png").write_bytes(PNG)
    md = """# Title <x>

A paragraph with **bold**, *italics*, `code <b>` and <script>alert(1)</script>.

| name | value |
|---|---:|
| a \\| b | 1.5 |

> a warning

![a figure](fig/a.png) ![gone](nope.png)
"""
    html = markdown_to_html(md, tmp_path)
    assert '<h1 id="title-x">Title &lt;x&gt;</h1>' in html
    assert "<strong>bold</strong>" in html and "<em>italics</em>" in html
    assert "<code>code &lt;b&gt;</code>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # raw HTML in the text stays text
    assert "<td>a | b</td>" in html and '<td style="text-align:right">1.5</td>' in html
    assert "<blockquote>\n<p>a warning</p>\n</blockquote>" in html
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}" alt="a figure"' in html
    assert 'src="nope.png"' in html  # a missing file keeps its path


def test_report_is_results_json_laid_out(tmp_path, results):
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    for text in (md, html):
        for number in ("10,298", "236,310", "22.95x", "769,930", "0.3011", "0.4011", "0.9133", "0.9113",
                       "0.5307 ± 0.0123", "0.5407", "1.235 ± 0.046", "+0.0396", "[+0.0101, +0.0702]",
                       "a residential area with houses", study.OTHER_GROUP_CAPTIONS["219"]):
            assert number in text, number
    assert "The interval excludes 0." in md
    headings = re.findall(r"^#+ (Q\d\.\d\w?|Question \d|This run|Environment)", md, re.M)
    assert headings == ["Question 1", "Q1.1", "Q1.2", "Q1.3", "Question 2", "Q2.1", "Q2.2", "Q2.3",
                        "Question 3", "Q3.1a", "Q3.1c", "This run", "Environment"]
    # formulas are code, so that markdown-it does not read 5*5*3 as emphasis
    assert "<code>8*(5*5*3+1)</code>" in html and "<em>" not in html.split("Question 3")[0]


def test_q3_has_the_coco_table_beside_published_results_and_the_border_mass(tmp_path, results):
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    assert "| this study, with additive attention (Q3.1b) | efficientnet-lite0, mean ± std over seeds 42, 43 | " \
           "0.7712 ± 0.0100 | 0.6623 ± 0.0100 | 0.5834 ± 0.0100 | 0.5307 ± 0.0100 | — | 0.6789 ± 0.0100 | " \
           "1.235 ± 0.010 |" in md
    # the published rows: those whose numbers a stored source confirms, each with its protocol
    rows = published.scored(published.SYDNEY)
    assert rows and all(r.bleu4 is not None or r.cider is not None for r in rows)
    aware = next(r for r in rows if r.method.startswith("Aware-Transformer"))
    assert f"| {aware.method} ({aware.year}) | {aware.split} split; checkpoint chosen on {aware.selection}; " \
           f"runs: {aware.runs} | — | — | — | {aware.bleu4:.3f} | — | — | {aware.cider:.2f} |" in md
    # numbers no stored source confirms stay out (docs/published.md)
    assert "| 2.98 |" not in md and "MLSFF" not in md.split("Beside the published results")[1].split("###")[0]
    # no sentinel in this run's decoder: a dash, not a measured 0
    assert "| with additive attention (Q3.1b) | 0.640 ± 0.000 | 0.234 | 2.73x | — |" in md
    assert "| without attention (Q3.1a) | 0." not in md.split("Where the attention looks")[1]


def test_q3_shows_the_sentinel_weight_when_the_decoder_has_one(tmp_path, results):
    summary = results["stages"]["caption"]["summary"]
    summary["config"]["sentinel"] = True
    summary["models"]["attention"]["sentinel_weight"] = 0.25
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    assert "| with additive attention (Q3.1b) | 0.640 ± 0.000 | 0.234 | 2.73x | 0.250 |" in md


def test_q3_without_the_newer_keys_leaves_those_tables_out(tmp_path, results):
    for model in results["stages"]["caption"]["summary"]["models"].values():
        for key in ("coco", "border_mass"):
            model.pop(key, None)
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    assert "Beside the published results" not in md and "Where the attention looks" not in md


def test_report_html_is_self_contained(tmp_path, results):
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 8 and all((tmp_path / link).is_file() for link in links)
    assert html.count('src="data:image/png;base64,') == len(links)
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # every image is embedded, nothing linked
    assert not re.search(r"https?://", html)


def test_question_2_shows_each_figure_once(tmp_path, results):
    """The best run's loss and dev-accuracy curves are also in the every-learning-rate figure:
    Q2 shows that one only."""
    figures = results["stages"]["classify"]["summary"]["figures"]
    for i, path in enumerate(figures.values()):  # a different image per file, to tell them apart in the page
        Image.new("RGB", (2, 2), (40 * i, 0, 0)).save(tmp_path / "classify" / path)
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    shown = re.findall(r"\]\((classify/[^)]+)\)", md.split("## Question 2")[1].split("## Question 3")[0])
    assert shown == [f"classify/{figures[key]}" for key in ("sweep_curves", "conv1_kernels", "conv2_kernels",
                                                            "conv2_kernels_channel0")]
    images = re.findall(r'src="(data:[^"]+)"', html.split('id="question-2"')[1].split('id="question-3"')[0])
    assert len(images) == len(set(images)) == 4
    assert not re.search(r"<td>\s*<img", html)  # a figure is its own paragraph, not a table's last row


def test_equations_are_mathml_and_the_page_runs_no_script(tmp_path, results):
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    # report.md keeps them as readable text
    assert "### Q1.3 Self-attention: $P = softmax(X A X^T)$ with $rank(A) ≤ d$" in md
    assert "$max |conv(shift(x)) - shift(conv(x))|$ = **" in md
    theory = html.split('id="question-1"')[1].split("Q2.2 Training the CNN")[0]
    assert theory.count("<math>") == md.split("## Question 1")[1].split("### Q2.2")[0].count("$") // 2 > 20
    assert "$" not in theory and "softmax(X" not in theory  # no equation left as text
    assert "<mi>softmax</mi>" in theory and "<msqrt><mi>d</mi></msqrt>" in theory
    assert "<script" not in html.lower()


def test_numeric_columns_are_right_aligned(tmp_path, results):
    write_report(tmp_path, results)
    html = (tmp_path / "report.html").read_text()
    assert '<td style="text-align:right">10,298</td>' in html  # the closing table
    assert '<td style="text-align:right">0.9113</td>' in html  # test accuracy of lr 0.01
    assert "<td>ok</td>" in html  # a text column is not


def test_failed_skipped_and_missing_stages(tmp_path, results):
    del results["stages"]["theory"]
    results["stages"]["classify"] = {"dir": "classify", "status": "failed", "seconds": 0.1,
                                     "error": "--data /x: no train-images-idx3-ubyte(.gz) found; run "
                                              "`convattn download fashion-mnist`"}
    results["stages"]["caption"] = {"dir": "caption", "status": "skipped", "seconds": 0.0,
                                    "reason": "Sydney-Captions not found."}
    results["warnings"] = ["Question 3 was skipped: Sydney-Captions not found."]
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "> Stage `theory` was not run." in md
    assert "> Stage `caption` was skipped: Sydney-Captions not found." in md
    assert study.SYDNEY_HOWTO in md
    # the error holds backticks, yet stays one code span
    assert ("<code>--data /x: no train-images-idx3-ubyte(.gz) found; run `convattn download fashion-mnist`"
            "</code>") in html
    assert "| Q1.1 CNN parameters | 10298 | — | — |" in md
    assert "| Q2.2 test accuracy | 0.9025 | — | — |" in md
    assert "> Stage `caption-best` was not run." in md
    assert html.count("<blockquote>") == 5  # the warning, three stages and the best recipe's
    assert "data:image" not in html


def test_a_missing_key_is_an_error_not_a_blank(tmp_path, results):
    broken = copy.deepcopy(results)
    del broken["stages"]["caption"]["summary"]["vocab_size"]
    with pytest.raises(UserError, match=r"results.json: .*'vocab_size'.*rerun `convattn reproduce --out "):
        write_report(tmp_path, broken)
    assert not (tmp_path / "report.md").exists()


def test_missing_figure_is_said(tmp_path, results):
    del results["stages"]["classify"]["summary"]["figures"]["conv1_kernels"]
    write_report(tmp_path, results)
    assert "*(figure `conv1_kernels` missing)*" in (tmp_path / "report.md").read_text()


def test_render_only_rebuilds_from_results_json(tmp_path, results, capsys):
    io.write_json(tmp_path / "results.json", results)
    assert main(["reproduce", "--render-only", "--out", str(tmp_path)]) == 0
    first = (tmp_path / "report.md").read_text()
    write_report(tmp_path / "again", results)  # the same dict, rendered directly
    assert "0.5307 ± 0.0123" in first
    assert first == (tmp_path / "again" / "report.md").read_text()


BEST_FIGURES = {"attention": "figures/attention_219.png",
                "transformer": "figures/attention_219_transformer.png"}


def _scst(model: dict) -> dict:
    return {**model, "scst_reward": [0.8123], "val_cider": [1.4567]}


@pytest.fixture
def with_best(results, tmp_path):
    """`results` with a caption-best stage: the LSTM with attention and the Transformer."""
    for path in BEST_FIGURES.values():
        (tmp_path / "caption-best" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "caption-best" / path).write_bytes(PNG)
    study_caption = results["stages"]["caption"]
    study_caption.update(run_seconds=100.0, preset="homework")
    caption = copy.deepcopy(study_caption["summary"])
    transformer = _border(_model(0.5811))
    transformer["coco"]["cider"] = {"mean": 2.9876, "std": 0.0543}
    transformer["border_ratio"] = 1.1234
    caption.update(
        preset="best",
        config={**caption["config"], "preset": "best", "outer_ring": "inward", "feature_norm": "layernorm",
                "scst_epochs": 1, "scst_baseline": "mean", "scst_samples": 5, "scst_lr": 5e-05, "beam": 3,
                "layers": 2, "model_dim": 256, "heads": 4, "transformer_dropout": 0.1, "image_size": None},
        models={"attention": _scst(_border(_model(0.5507))), "transformer": _scst(transformer)},
        comparisons=[{"pair": "transformer - attention", "metric": "bleu4", "difference": 0.0304,
                      "ci_low": -0.0102, "ci_high": 0.0711, "excludes_zero": False, "seeds": 2, "images": 58,
                      "samples": 10_000},
                     {"pair": "transformer - attention", "metric": "cider", "difference": 0.2468,
                      "ci_low": 0.1012, "ci_high": 0.3913, "excludes_zero": True, "seeds": 2, "images": 58,
                      "samples": 10_000}],
        timing={"features": {}, "runs_seconds": 250.0},
        figures={"curves": {}, "captions": "figures/captions.png", "attention": {"219": BEST_FIGURES["attention"]},
                 "attention_models": {m: {"219": path} for m, path in BEST_FIGURES.items()}})
    del caption["comparison"]  # no no-attention decoder in the recipe
    results["stages"]["caption-best"] = {"dir": "caption-best", "status": "ok", "summary": caption,
                                         "preset": "best", "run_seconds": 250.0, "seconds": 300.0}
    return results


def test_best_recipe_section(tmp_path, with_best):
    write_report(tmp_path, with_best)
    md = (tmp_path / "report.md").read_text()
    best = md.split("## Beyond the study: the best recipe")[1].split("## This run against the study")[0]
    # after Question 3, before the closing table
    assert md.index("## Question 3") < md.index("## Beyond the study") < md.index("## This run against")
    # the recipe, read from the summary's config
    assert "| decoders | LSTM with additive attention, Transformer |" in best
    assert "| region features | outer ring read from its inward neighbours, each region layernorm-normalised |" in best
    assert "| self-critical training | 1 epoch after cross-entropy, reward CIDEr-D against the training " \
           "references, baseline mean of 5 samples per image, Adam lr 5e-05 |" in best
    assert "| decoding | beam search, beam 3 |" in best
    # every decoder's coco metrics, its study bleu4 and border ratio; the published rows below
    assert "| best recipe, Transformer | efficientnet-lite0, mean ± std over seeds 42, 43 | 0.7712 ± 0.0100 | " \
           "0.6623 ± 0.0100 | 0.5834 ± 0.0100 | 0.5811 ± 0.0100 | — | 0.6789 ± 0.0100 | 2.988 ± 0.054 | " \
           "0.5811 ± 0.0123 | 1.12x |" in best
    assert "| best recipe, LSTM with additive attention |" in best
    for row in published.scored(published.SYDNEY):
        assert f"| {row.method} ({row.year}) | {row.split} split; checkpoint chosen on {row.selection}; " \
               f"runs: {row.runs} | — | — | — | {row.bleu4:.3f} | — | — | {row.cider:.2f} | — | — |" in best
        assert best.index("| best recipe, Transformer") < best.index(f"| {row.method}")
    # the comparisons in words, on both metrics
    assert "- Transformer − LSTM with additive attention, CIDEr-D: **+0.2468**, 95% interval [+0.1012, +0.3913]. " \
           "The interval excludes 0: the Transformer scores higher." in best
    assert "- Transformer − LSTM with additive attention, the study's bleu4: **+0.0304**, 95% interval " \
           "[-0.0102, +0.0711]. The interval includes 0: this data cannot tell the two decoders apart." in best
    assert "Paired bootstrap over the 58 test images (10,000 resamples" in best
    # self-critical history, the outer-ring table, both attention models' figures, the time ratio
    assert "| Transformer | 0.812 | 1.457 |" in best
    assert "| Transformer | 0.640 ± 0.000 | 0.234 | 1.12x | — |" in best
    assert "![Transformer: attention over test image 219 for each generated word]" \
           "(caption-best/figures/attention_219_transformer.png)" in best
    assert "(caption-best/figures/attention_219.png)" in best
    assert "The best recipe's runs took 250 s, the study's caption runs (preset `homework`) 100 s: " \
           "**2.50x** the study's time." in best
    # still one self-contained page
    html = (tmp_path / "report.html").read_text()
    assert "caption-best/figures" not in html and html.count('src="data:image/png;base64,') == 10


def test_best_recipe_without_the_study_stage_or_comparisons(tmp_path, with_best):
    with_best["stages"]["caption"] = {"dir": "caption", "status": "failed", "error": "boom", "seconds": 1.0}
    summary = with_best["stages"]["caption-best"]["summary"]
    summary["comparisons"] = []
    for model in summary["models"].values():
        del model["scst_reward"], model["val_cider"]
    write_report(tmp_path, with_best)
    best = (tmp_path / "report.md").read_text().split("## Beyond the study: the best recipe")[1]
    assert "Which decoder is better" not in best and "Self-critical stage" not in best
    assert "The best recipe's runs took 250 s (training and test scoring, as recorded by the runs); the " \
           "study's caption stage gave no time to compare it with." in best


@pytest.mark.parametrize("stage, line", [
    ({"status": "failed", "error": "CUDA out of memory"}, "> Stage `caption-best` failed: `CUDA out of memory`."),
    ({"status": "skipped", "reason": "Sydney-Captions not found."},
     "> Stage `caption-best` was skipped: Sydney-Captions not found."),
])
def test_best_stage_that_gave_no_results(tmp_path, with_best, stage, line):
    with_best["stages"]["caption-best"] = {"dir": "caption-best", "seconds": 0.0, **stage}
    write_report(tmp_path, with_best)
    md = (tmp_path / "report.md").read_text()
    best = md.split("## Beyond the study: the best recipe")[1].split("## This run against")[0]
    assert line in best and "runs the best captioning recipe beside the study's caption stage" in best
    assert "0.5307 ± 0.0123" in md  # the study's Question 3 is still there


def test_best_recipe_says_what_self_critical_training_and_reranking_added(tmp_path, with_best):
    caption = with_best["stages"]["caption-best"]["summary"]
    caption["config"].update(beam=5, rerank=20)
    caption["models"]["attention"]["before_scst"] = {
        "coco": {"cider": {"mean": 2.5012, "std": 0.1}, "bleu4": {"mean": 0.5432, "std": 0.01}},
        "scst_gain": {"difference": 0.1234, "ci_low": -0.0456, "ci_high": 0.2901}}
    caption["comparisons"].append({"pair": "transformer - attention", "metric": "cider_before_scst",
                                   "difference": -0.3012, "ci_low": -0.5123, "ci_high": -0.1001,
                                   "excludes_zero": True, "seeds": 2, "images": 58, "samples": 10_000})
    write_report(tmp_path, with_best)
    best = (tmp_path / "report.md").read_text().split("## Beyond the study: the best recipe")[1]
    assert "| decoding | beam search, beam 5; of the beam's hypotheses the one with the highest mean " \
           "CIDEr-D against the captions of the 20 training images nearest in mean region feature " \
           "(consensus reranking) |" in best
    assert "| LSTM with additive attention | 2.501 | " in best and "| +0.1234 [-0.0456, +0.2901] | 0.543 | " in best
    assert "- Transformer − LSTM with additive attention, CIDEr-D of the cross-entropy models (before " \
           "self-critical training): **-0.3012**" in best
