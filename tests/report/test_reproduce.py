"""`convattn reproduce --preset smoke` end to end on tiny generated data."""

import json
import re

import pytest
from tiny_captions import make_tiny_captions
from tiny_fashion import write_tiny_fashion

from convattn.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_fashion(root / "fashion")
    make_tiny_captions(root / "sydney")
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVATTN_SYDNEY", raising=False)
    monkeypatch.delenv("CONVATTN_RSICD", raising=False)
    monkeypatch.chdir(tmp_path)  # so ./data/sydney-captions does not exist


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d{4}", text))


def test_smoke_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["reproduce", "--preset", "smoke", "--out", str(out), "--quiet",
                 "--data", str(tiny / "fashion"), "--sydney", str(tiny / "sydney"),
                 "--rsicd", str(tiny / "sydney")])  # the tiny set stands in for RSICD too
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert {st["status"] for st in results["stages"].values()} == {"ok"}
    assert list(results["stages"]) == ["theory", "classify", "caption", "caption-best", "caption-splits",
                                       "rsicd", "rsicd-best", "rsicd-splits"]
    # the protocol table: the study's and best stages on the official split, the reference
    # captioners on the three re-splits as well
    assert [s["dataset"]["split"] for s in results["stages"]["caption-splits"]["resplits"]] == \
        ["random-1", "random-2", "random-3"]
    assert "### What the protocol does to a number" in md
    assert "| `prior` | " in md and "| `smoke:attention` | " in md

    # the report's numbers are results.json's numbers, in both renderings
    classify = results["stages"]["classify"]["summary"]
    caption = results["stages"]["caption"]["summary"]
    test_acc = f"{classify['best']['test_acc']:.4f}"
    bleu = f"{caption['models']['attention']['test_bleu4_mean']:.4f}"
    for text in (md, html):
        assert test_acc in text and bleu in text
        assert "10,298" in text and "236,310" in text
    assert _numbers(md) <= _numbers(html)

    # the best recipe's stage beside the study's: its own folder, preset, section and time
    best = results["stages"]["caption-best"]
    assert best["preset"] == "best-smoke" and (out / "caption-best" / "summary.json").is_file()
    assert best["summary"]["config"]["preset"] == "best-smoke"
    assert set(best["summary"]["models"]) == {"attention", "transformer"}
    assert [(c["pair"], c["metric"]) for c in best["summary"]["comparisons"]] == [
        ("transformer - attention", "bleu4"), ("transformer - attention", "cider"),
        ("transformer - attention", "cider_before_scst")]  # the cross-entropy models, before SCST
    assert best["run_seconds"] == best["summary"]["timing"]["runs_seconds"] > 0
    assert results["stages"]["caption"]["run_seconds"] > 0
    section = md.split("## Beyond the study: the best recipe")[1].split("## This run against")[0]
    cider = best["summary"]["models"]["transformer"]["coco"]["cider"]["mean"]
    # one seed: each score alone, without a "± 0"
    assert "| best recipe, Transformer | efficientnet-lite0, seed 42 | " in section
    assert f"| {cider:.3f} |" in section and "± 0.000" not in section
    ratio = best["run_seconds"] / results["stages"]["caption"]["run_seconds"]
    assert f"**{ratio:.2f}x** the study's time" in section
    assert "(caption-best/figures/attention_219_transformer.png)" in section

    # the benchmark section: the RSICD stages, the paired comparison, the "as published" column
    bench = md.split("## Beyond the study: the RSICD benchmark")[1].split("## This run against")[0]
    rsicd, rsicd_best = (results["stages"][n]["summary"] for n in ("rsicd", "rsicd-best"))
    assert rsicd["config"]["preset"] == "smoke" and rsicd_best["config"]["preset"] == "best-smoke"
    for summary in (caption, rsicd_best):
        published = summary["models"]["attention"]["as_published"]
        assert f"| {published['cider']:.3f} | {published['bleu4']:.4f} | seed 42, epoch {published['epoch']} |" in bench
    assert "- RSICD, best-smoke:attention - smoke:attention: **" in bench
    assert "- Sydney-Captions, best-smoke:attention - smoke:attention: **" in bench
    assert "**Sydney-Captions**" in bench and "| MLSFF" in bench

    # every figure the report links exists, and the HTML embeds them all
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links)
    assert html.count("data:image/png;base64,") == len(links)

    # --render-only rebuilds the same report from results.json alone
    (out / "report.md").unlink()
    assert main(["reproduce", "--render-only", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == md

    # a rerun reuses the finished runs: the same numbers come back
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--quiet",
                 "--data", str(tiny / "fashion"), "--sydney", str(tiny / "sydney")]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["stages"]["classify"]["summary"]["best"] == classify["best"]
    assert again["stages"]["caption"]["summary"]["models"]["attention"]["test_bleu4_mean"] == \
        caption["models"]["attention"]["test_bleu4_mean"]


def test_without_sydney_q3_says_how_and_exit_is_zero(tiny, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--quiet",
                 "--data", str(tiny / "fashion")]) == 0
    assert "Sydney-Captions not found" in capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "Karpathy-style `dataset.json`" in md and "--sydney DIR" in md
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert stages["caption"]["status"] == stages["caption-best"]["status"] == "skipped"
    assert "> Stage `caption-best` was skipped: Sydney-Captions not found" in md


def test_failed_stage_keeps_the_others(tiny, tmp_path, capsys):
    out = tmp_path / "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--quiet", "--data", str(empty)]) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["stages"]["theory"]["status"] == "ok"
    assert results["stages"]["classify"]["status"] == "failed"
    assert "train-images-idx3-ubyte" in results["stages"]["classify"]["error"]
    assert "Stage `classify` failed" in (out / "report.md").read_text()


def test_bad_sydney_flag_is_an_error_before_any_work(tmp_path, capsys):
    assert main(["reproduce", "--sydney", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "--sydney" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_render_only_without_results(tmp_path, capsys):
    assert main(["reproduce", "--render-only", "--out", str(tmp_path)]) == 2
    assert "results.json not found" in capsys.readouterr().err


def test_a_missing_rsicd_is_skipped_with_how_to_get_it(monkeypatch):
    from convattn.report.reproduce import find_rsicd

    folder, why = find_rsicd(None)
    assert folder is None and "RSICD not found" in why and "$CONVATTN_RSICD unset" in why
    monkeypatch.setenv("CONVATTN_RSICD", "/nowhere")
    assert "$CONVATTN_RSICD=/nowhere" in find_rsicd(None)[1]
    with pytest.raises(Exception, match="--rsicd /nowhere: no dataset.json there"):
        find_rsicd("/nowhere")
