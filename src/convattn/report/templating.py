"""The Jinja2 environment that lays out every text convattn writes from its results.

Templates live in report/templates/: theory.md.j2 and stack.md.j2 (`convattn theory`),
report.md.j2 with one file per question (`convattn reproduce`), and report.html.j2 (the
page around the rendered report). Python computes the values; the filters below only
format them, and the templates lay them out. A key a template names but the data lacks
is an error (StrictUndefined), never a blank.
"""

from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def fixed(value: float | None, digits: int = 4) -> str:
    """0.90251 -> '0.9025'; None (not measured) -> '—'."""
    return "—" if value is None else f"{value:.{digits}f}"


def plus_minus(mean: float | None, std: float | None, digits: int = 4) -> str:
    """Mean ± std over seeds; the mean alone when there is no std."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def code_span(text: str) -> str:
    """`text` as one Markdown code span, even when it holds backticks (an error message may)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence, pad = "`" * (longest + 1), " " if longest else ""  # one space each side is stripped
    return f"{fence}{pad}{text}{pad}{fence}"


FILTERS = {
    "code": code_span,
    "fixed": fixed,
    "pm": plus_minus,
    "thousands": lambda n: f"{n:,}",  # 10298 -> '10,298'
    "sci": lambda x: f"{x:.1e}",  # round-off errors: 7.8e-16
    "g": lambda x: f"{x:g}",  # learning rates: 0.01
    "signed": lambda x, digits=4: f"{x:+.{digits}f}",
    "percent": lambda x: f"{100 * x:.1f}%",
    "shape": lambda dims: "x".join(map(str, dims)),  # [24, 24, 8] -> '24x24x8'
}

ENV = Environment(
    loader=PackageLoader("convattn.report", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,  # a line holding only {% ... %} leaves no blank line behind
    lstrip_blocks=True,
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
)
ENV.filters.update(FILTERS)


def render(name: str, **context) -> str:
    """Render templates/`name` with `context`."""
    return ENV.get_template(name).render(**context)
