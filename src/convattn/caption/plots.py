"""Figures of a captioning run, drawn from arrays only: summary.json's numbers and what the
run decoded for the shown images. Nothing here loads a model or decodes.

    figures/curves_<model>.png     training loss and validation BLEU-4 per epoch, every seed
    figures/captions.png           the shown images beside generated and reference captions
    figures/attention_<name>.png   attention model: one heat-map over the image per word
    figures/attention_<name>_<model>.png   the same for each further attention model (transformer)

A shown image is a dict: {"name", "image": uint8 or float [H, W, 3], "references": [text],
"generated": {model: [words]}, "tokens": {model: [S generated tokens]}, "attention":
{model: [S, R] weights}} (attention models only; row s belongs to token s). Figures are matplotlib `Figure`s, not
pyplot's: no global state, no backend to choose.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from convattn.common import io

TITLES = {"no_attention": "without attention (Q3.1a)", "attention": "with attention (Q3.1b)",
          "transformer": "Transformer (cross-attention, last layer, mean of heads)"}


def plot_curves(model_summary: dict, model: str, path: Path) -> None:
    """Two panels: mean training loss and validation BLEU-4 per epoch; one thin line per seed,
    the seeds' mean in bold."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "train_loss", "mean training loss (cross-entropy)"),
                           (axes[1], "val_bleu4", "validation BLEU-4 (greedy)")):
        curves = np.array([s[key] for s in model_summary["seeds"]])  # [seeds, epochs]
        epochs = np.arange(1, curves.shape[1] + 1)
        for curve in curves:
            ax.plot(epochs, curve, color="0.7", lw=1, marker=".")
        ax.plot(epochs, curves.mean(0), color="C0" if key == "train_loss" else "C1", lw=2.2, marker="o",
                label=f"mean of {len(curves)} seeds" if len(curves) > 1
                else f"seed {model_summary['seeds'][0]['seed']}")
        if len(curves) > 1:
            ax.plot([], [], color="0.7", lw=1, label="each seed")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    n = len(model_summary["seeds"])
    score = (f"{model_summary['test_bleu4_mean']:.3f} ± {model_summary['test_bleu4_std']:.3f} "
             f"(mean ± std of {n} seeds)" if n > 1 else f"{model_summary['test_bleu4']:.3f}")
    fig.suptitle(f"Decoder {TITLES.get(model, model)}: test BLEU-4 {score}")
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def plot_captions(shown: list[dict], path: Path) -> None:
    """Each shown image beside its generated captions (every model) and references."""
    fig = Figure(figsize=(11, 3.3 * len(shown)))
    axes = fig.subplots(len(shown), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2.3]})
    for (ax_img, ax_txt), row in zip(axes, shown):
        ax_img.imshow(row["image"])
        ax_img.set_title(f"test image {row['name']}", fontsize=11)
        ax_img.axis("off")
        ax_txt.axis("off")
        lines = []  # (text, weight, colour)
        for model, words in row["generated"].items():
            lines.append((f"generated, {TITLES.get(model, model)}:", "bold", "black"))
            lines += [(w, "normal", "black") for w in textwrap.wrap(" ".join(words) or "(empty)", 72)]
        lines.append(("references:", "bold", "0.35"))
        for ref in row["references"]:
            lines += [(w, "normal", "0.35") for w in textwrap.wrap("- " + ref, 76, subsequent_indent="  ")]
        y = 1.0
        step = min(0.085, 1.0 / max(len(lines), 1))
        for text, weight, colour in lines:
            ax_txt.text(0, y, text, fontsize=9.5, fontweight=weight, va="top", color=colour)
            y -= step
    fig.tight_layout()
    io.save_figure(fig, path, dpi=100)


def upsample(weights: np.ndarray, grid, size) -> np.ndarray:
    """Region weights [R] (R = grid[0] * grid[1]) -> a bilinear [H, W] map, size = (H, W)."""
    small = Image.fromarray(np.asarray(weights, dtype=np.float32).reshape(grid))  # mode "F"
    return np.asarray(small.resize((size[1], size[0]), Image.BILINEAR))


def plot_attention(image: np.ndarray, words: list[str], alphas: np.ndarray, grid, title: str,
                   path: Path, columns: int = 5) -> None:
    """image [H, W, 3]; alphas [len(words), R] with R = grid[0] * grid[1]: one panel per word,
    its attention weights as an overlay (opaque red = most attended); the title gives the
    largest weight (1/R would be uniform attention)."""
    rows = -(-len(words) // columns)
    fig = Figure(figsize=(2.3 * columns, 2.5 * rows + 0.5))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, word, alpha in zip(axes.ravel(), words, alphas):
        # the region weights, upsampled to the image and scaled so the word's most attended
        # region is 1, drawn as a yellow-red glow whose opacity follows the weight
        heat = upsample(alpha, grid, image.shape[:2])
        heat = heat / heat.max()
        ax.imshow(image)
        ax.imshow(heat, cmap="autumn_r", alpha=0.7 * heat, vmin=0, vmax=1)
        ax.set_title(f"{word} (max {alpha.max():.2f})", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=90)


def draw_all(summary: dict, shown: list[dict], grid, out_dir) -> dict:
    """Every figure of a run -> {"curves": {model: path}, "captions": path,
    "attention": {image name: path}, "attention_models": {model: {image name: path}}}, paths
    relative to out_dir. "attention" holds the LSTM attention model's maps (the study's), or
    the first attention model's when it was not trained."""
    out_dir = Path(out_dir)
    figures = {"curves": {}, "attention": {}, "attention_models": {}}
    for model, model_summary in summary["models"].items():
        if not model_summary["train_loss"]:  # a reference captioner: nothing trained
            continue
        rel = f"figures/curves_{model}.png"
        plot_curves(model_summary, model, out_dir / rel)
        figures["curves"][model] = rel
    if not shown:
        return figures
    for row in shown:
        first = "attention" if "attention" in row["attention"] else next(iter(row["attention"]), None)
        for model, alphas in row["attention"].items():
            rel = f"figures/attention_{row['name']}.png" if model == first else \
                f"figures/attention_{row['name']}_{model}.png"
            label = "" if model == "attention" else f" ({TITLES.get(model, model)})"
            plot_attention(row["image"], row["tokens"][model], alphas, grid,
                           f"{row['name']}: attention over the {grid[0]}x{grid[1]} regions for each "
                           f"generated word{label} (uniform would be {1 / alphas.shape[1]:.3f})", out_dir / rel)
            figures["attention_models"].setdefault(model, {})[row["name"]] = rel
            if model == first:
                figures["attention"][row["name"]] = rel
    plot_captions(shown, out_dir / "figures/captions.png")
    figures["captions"] = "figures/captions.png"
    return figures
