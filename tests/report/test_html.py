"""report.html's page: figures re-encoded under a budget, equations as MathML."""

import base64
import re
import xml.etree.ElementTree as ET
from io import BytesIO

import numpy as np
from PIL import Image

from convattn.caption.plots import plot_attention
from convattn.classify.plots import _save, sweep_curves
from convattn.report.html import MAX_IMAGE_BYTES, markdown_to_html, mathml


def _embedded(html: str) -> list[tuple[str, bytes]]:
    """(MIME type, bytes) of every data: URI image in `html`."""
    return [(mime, base64.b64decode(data)) for mime, data in re.findall(r'src="data:([^;]+);base64,([^"]+)"', html)]


def _photo(rng, size: int = 224) -> np.ndarray:
    """A stand-in for an aerial photograph, uint8 [H, W, 3]: blobs plus a little noise, which
    compress like Sydney-Captions' images do in an attention figure (~1 MB as PNG, ~145 KB as
    JPEG against 135 KB for the real ones)."""
    coarse = Image.fromarray(rng.integers(0, 256, (size // 14, size // 14, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=float)
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def _attention_grid(rng, n_words: int, path) -> None:
    words = ("a playground with a green football field surrounded by a red track and some buildings " * 2).split()
    plot_attention(_photo(rng), words[:n_words], rng.dirichlet(np.ones(49), n_words), (7, 7), "attention", path)


def test_figures_are_embedded_under_the_budget(tmp_path):
    rng = np.random.default_rng(0)
    _attention_grid(rng, 15, tmp_path / "att.png")  # as in today's reports
    _attention_grid(rng, 25, tmp_path / "att25.png")  # two rows more: over budget at JPEG quality 85
    runs = [{"lr": lr, "status": "ok", "train_loss": list(rng.random(15)), "val_acc": list(rng.random(15))}
            for lr in (0.001, 0.01, 0.1)]
    _save(sweep_curves(runs, 0.01), tmp_path, "sweep", pdf=False)
    # incompressible: no encoding fits, so only scaling down can
    Image.fromarray(rng.integers(0, 256, (1600, 1200, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    names = ["att.png", "att25.png", "figures/sweep.png", "noise.png"]
    html = markdown_to_html(" ".join(f"![{name}]({name})" for name in names), tmp_path)
    embedded = dict(zip(names, _embedded(html)))
    for name, (mime, data) in embedded.items():
        assert len(data) <= MAX_IMAGE_BYTES, (name, len(data))
    size = {name: Image.open(BytesIO(data)).size for name, (_, data) in embedded.items()}
    # attention grids (~1 MB as PNGs) become JPEGs of the same size in pixels
    for name in ("att.png", "att25.png"):
        assert embedded[name][0] == "image/jpeg" and size[name] == Image.open(tmp_path / name).size
    assert len(embedded["att.png"][1]) < (tmp_path / "att.png").stat().st_size / 5
    # a plot stays a PNG (lines and text exact), at its size
    assert embedded["figures/sweep.png"][0] == "image/png"
    assert size["figures/sweep.png"] == Image.open(tmp_path / "figures/sweep.png").size
    # the noise is scaled down, keeping its aspect ratio
    width, height = size["noise.png"]
    assert width < 1200 and abs(height / width - 1600 / 1200) < 0.01


def test_mathml_of_the_reports_notation():
    assert mathml("P = softmax(X A X^T)") == (
        "<math><mrow><mi>P</mi><mo>=</mo><mi>softmax</mi><mrow><mo>(</mo><mi>X</mi><mi>A</mi>"
        "<msup><mi>X</mi><mi>T</mi></msup><mo>)</mo></mrow></mrow></math>")
    # a subscript and a prime and a transpose on the same letter; a negative exponent
    assert "<msubsup><mi>W</mi><mi>K</mi><mrow><mo>\u2032</mo><mi>T</mi></mrow></msubsup>" in mathml("W_K'^T")
    assert "<msup><mi>B</mi><mrow><mo>\u2212</mo><mn>1</mn></mrow></msup>" in mathml("B^-1")
    assert "<msqrt><mi>d</mi></msqrt>" in mathml("Q K^T / sqrt(d)")  # the root replaces the brackets
    assert "<mo>\u230a</mo>" in mathml("floor((24-4)/2)+1 = 11")
    assert "<mo>\u2264</mo>" in mathml("rank(A) <= d") and "<mo>\u00d7</mo>" in mathml("8*(5*5*3+1)")
    assert mathml("a | b").count("|") == 1  # a lone bar stays one
    for text in ("max |conv(shift(x)) - shift(conv(x))|", "W_Q' W_K'^T = W_Q B B^-1 W_K^T", "a < b", "X^"):
        ET.fromstring(mathml(text))  # well-formed, < escaped


def test_dollars_are_equations_only_where_they_can_be(tmp_path):
    html = markdown_to_html("$x^2$ costs $5 and $6, `$y$` is code\n\n| $max \\|y\\|$ | c |\n|---|---|\n| 1 | 2 |\n",
                            tmp_path)
    assert html.count("<math>") == 2  # x^2 and the table's max |y|
    assert "costs $5 and $6, <code>$y$</code>" in html
    # in a table, \| is a bar of the equation, not a cell's border; |y| is one fenced group
    assert ('<th><math><mrow><mi>max</mi><mspace width="0.17em"/><mrow><mo>|</mo><mi>y</mi><mo>|</mo></mrow>'
            "</mrow></math></th>") in html
