"""Markdown -> one self-contained HTML page: markdown-it-py renders it, $...$ equations become
MathML, and every figure is embedded as a data: URI re-encoded within MAX_IMAGE_BYTES, so the
page needs neither the figure files, nor a script, nor a network."""

from __future__ import annotations

import base64
import mimetypes
import re
from html import escape
from io import BytesIO
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt
from PIL import Image

from convattn.report import templating

TITLE = "convattn: the study, reproduced"
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")

# An embedded figure's budget. The fast preset's report embeds 16 figures: at 200 KB each, and
# 4/3 of that in base64, the page stays under 5 MB whatever they hold. The biggest drawn today,
# grids of attention maps over aerial photographs (1-1.3 MB as the stages' PNGs), take 120-190 KB
# as JPEG at quality 85. A larger figure gets quality 70 first, and is scaled down only if that
# is not enough.
MAX_IMAGE_BYTES = 200_000
JPEG_QUALITIES = (85, 70)  # 85: no visible blocking on the photographs nor around the text


def _encodings(image: Image.Image, quality: int) -> list[tuple[str, bytes]]:
    """`image` (RGB) as a 256-colour PNG (plots: flat colours, exact lines and text) and as a
    JPEG (photographs), each as (MIME type, bytes)."""
    palette, jpeg = BytesIO(), BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(palette, "PNG", optimize=True)
    image.save(jpeg, "JPEG", quality=quality, optimize=True)
    return [("image/png", palette.getvalue()), ("image/jpeg", jpeg.getvalue())]


def _figure(path: Path) -> tuple[str, bytes]:
    """A figure file as (MIME type, bytes) for the page. A PNG becomes the smallest of itself
    and its _encodings, at a lower JPEG quality, then scaled down by 3/4 at a time, while that
    is over MAX_IMAGE_BYTES; the figure files on disk stay as the stages wrote them."""
    data = path.read_bytes()
    if path.suffix.lower() != ".png":
        return mimetypes.guess_type(path.name)[0] or "application/octet-stream", data
    with Image.open(path) as opened:
        rgba = opened.convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    candidates = [("image/png", data)]
    while True:
        for quality in JPEG_QUALITIES:
            mime, best = min(candidates + _encodings(image, quality), key=lambda c: len(c[1]))
            if len(best) <= MAX_IMAGE_BYTES:
                return mime, best
        if min(image.size) < 100:
            return mime, best
        image, candidates = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS), []


def _data_uri(path: Path) -> str:
    mime, data = _figure(path)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# An equation in the text is $...$ (as in pandoc): no space just inside the dollars, no digit
# right after the closing one, no backtick inside, so "$5 and $6" and `$x` stay text. Inside:
# plain-text maths that reads well in report.md, X^T, W_Q', B^-1, sqrt(d), floor(x), <=, |x|.
MATH = re.compile(r"\$(?=\S)((?:\\.|[^$\\\n`])+?)(?<=\S)\$(?!\d)")
MATH_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([^\W\d_]+)|(<=|>=|->|\S))")  # number | name | operator
MATH_SYMBOLS = {"-": "\u2212", "*": "\u00d7", "<=": "\u2264", ">=": "\u2265", "->": "\u2192"}
# opening bracket -> (closing one, fences drawn); |x| is a group too, so that MathML draws its
# bars as fences, not as an operator with space around it
MATH_GROUPS = {"(": (")", "<mo>(</mo>", "<mo>)</mo>"), "|": ("|", "<mo>|</mo>", "<mo>|</mo>"), "{": ("}", "", "")}


def _math_base(tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
    """The MathML element that starts at tokens[i] ((kind, text) pairs) and the index after it:
    a number, a name (several letters are upright: softmax), an operator, a bracketed group,
    sqrt(...) or floor(...)."""
    kind, text = tokens[i]
    i += 1
    if text in ("sqrt", "floor") and i < len(tokens):
        inner, i = _math_atom(tokens, i)
        inner = inner.removeprefix("<mrow><mo>(</mo>").removesuffix("<mo>)</mo></mrow>")  # the root replaces ()
        return (f"<msqrt>{inner}</msqrt>" if text == "sqrt"
                else f"<mrow><mo>\u230a</mo>{inner}<mo>\u230b</mo></mrow>"), i
    if text in MATH_GROUPS:
        close, left, right = MATH_GROUPS[text]
        row = []
        while i < len(tokens) and tokens[i][1] != close:
            item, i = _math_atom(tokens, i)
            row.append(item)
        closed = i < len(tokens)  # a lone | (a | b) draws no second bar
        return f"<mrow>{left}{''.join(row)}{right if closed else ''}</mrow>", i + closed
    tag = {"number": "mn", "name": "mi"}.get(kind, "mo")
    node = f"<{tag}>{escape(MATH_SYMBOLS.get(text, text))}</{tag}>"
    if kind == "name" and len(text) > 1 and i < len(tokens) and tokens[i][1] != "(":
        node += '<mspace width="0.17em"/>'  # max |x|: a thin space, as TeX leaves after \max
    return node, i


def _math_atom(tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
    """_math_base with its subscript and superscripts (X^T, W_Q', B^-1, W_K'^T), which are
    bases themselves: in W_K'^T, K, ' and T all belong to W."""
    base, i = _math_base(tokens, i)
    sub, sup = "", []
    while i < len(tokens) and tokens[i][1] in ("_", "^", "'"):
        mark, i = tokens[i][1], i + 1
        if mark == "'":
            sup.append("<mo>\u2032</mo>")
            continue
        minus = i < len(tokens) - 1 and tokens[i][1] == "-"
        script, i = _math_base(tokens, i + minus) if i + minus < len(tokens) else ("", i)
        script = f"<mrow><mo>\u2212</mo>{script}</mrow>" if minus else script
        if mark == "_":
            sub = script
        elif script:
            sup.append(script)
    sup = sup[0] if len(sup) == 1 else f"<mrow>{''.join(sup)}</mrow>" if sup else ""
    if sub and sup:
        return f"<msubsup>{base}{sub}{sup}</msubsup>", i
    if sub or sup:
        return f"<msub>{base}{sub}</msub>" if sub else f"<msup>{base}{sup}</msup>", i
    return base, i


def mathml(text: str) -> str:
    """'P = softmax(X A X^T)' -> an inline <math> element: MathML Core, which browsers draw
    without a script or a font to fetch."""
    tokens = [("number" if number else "name" if name else "operator", number or name or op)
              for number, name, op in MATH_TOKEN.findall(text)]
    row, i = [], 0
    while i < len(tokens):
        item, i = _math_atom(tokens, i)
        row.append(item)
    return f"<math><mrow>{''.join(row)}</mrow></math>"


def _math_rule(state, silent: bool) -> bool:
    """markdown-it's inline rule for $...$: a math_inline token holding the equation's text."""
    match = MATH.match(state.src, state.pos)
    if not match:
        return False
    if not silent:
        state.push("math_inline", "math", 0).content = match.group(1)
    state.pos = match.end()
    return True


MARKDOWN.inline.ruler.before("escape", "math_inline", _math_rule)
MARKDOWN.add_render_rule("math_inline", lambda self, tokens, idx, options, env: mathml(tokens[idx].content))


def _anchor(text: str) -> str:
    """'Q2.2 Training the CNN' -> 'q2-2-training-the-cnn', for links to a section."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def markdown_to_html(markdown: str, base: Path, title: str = TITLE) -> str:
    """One HTML page; images found under `base` are embedded, headings get ids."""
    tokens = MARKDOWN.parse(markdown)
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            token.attrSet("id", _anchor(tokens[i + 1].content))  # the heading's inline text follows
        for child in token.children or []:
            if child.type == "image":
                path = base / unquote(str(child.attrGet("src")))
                if path.is_file():
                    child.attrSet("src", _data_uri(path))
    body = MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})
    return templating.render("report.html.j2", title=title, body=body)
