"""Figures of a captioning run, drawn from summary.json's numbers and the saved decoders.

    figures/curves_<model>.png     training loss and validation BLEU-4 per epoch, every seed
    figures/captions.png           the --show images beside generated and reference captions
    figures/attention_<name>.png   attention model: one heat-map over the image per word
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch

from convattn.caption.decode import decode
from convattn.caption.encoders import load_image
from convattn.common import io
from convattn.data.captions import END

TITLES = {"no_attention": "without attention (Q3.1a)", "attention": "with attention (Q3.1b)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(model_summary: dict, model: str, path: Path) -> None:
    """Two panels: mean training loss and validation BLEU-4 per epoch; one thin line per seed,
    the seeds' mean in bold."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "train_loss", "mean training loss (cross-entropy)"),
                           (axes[1], "val_bleu4", "validation BLEU-4 (greedy)")):
        curves = np.array([s[key] for s in model_summary["seeds"]])  # [seeds, epochs]
        epochs = np.arange(1, curves.shape[1] + 1)
        for s, curve in zip(model_summary["seeds"], curves):
            ax.plot(epochs, curve, color="0.7", lw=1, marker=".", label=None)
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
    plt.close(fig)


def plot_captions(rows: list[dict], path: Path) -> None:
    """rows: {"name", "image" [3, H, W], "generated": {model: text}, "references": [text]}."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.3 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.3]})
    for (ax_img, ax_txt), row in zip(axes, rows):
        ax_img.imshow(row["image"].permute(1, 2, 0).numpy())
        ax_img.set_title(f"test image {row['name']}", fontsize=11)
        ax_img.axis("off")
        ax_txt.axis("off")
        lines = []  # (text, weight, colour)
        for model, text in row["generated"].items():
            lines.append((f"generated, {TITLES.get(model, model)}:", "bold", "black"))
            lines += [(w, "normal", "black") for w in textwrap.wrap(text or "(empty)", 72)]
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
    plt.close(fig)


def plot_attention(image: torch.Tensor, words: list[str], alphas: np.ndarray, grid, title: str,
                   path: Path, columns: int = 5) -> None:
    """image [3, H, W]; alphas [len(words), R] with R = grid[0] * grid[1]: one panel per word,
    its attention weights as an overlay (opaque red = most attended); the title gives the
    largest weight (1/R would be uniform attention)."""
    plt = _pyplot()
    rows = -(-len(words) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows + 0.5), squeeze=False)
    rgb = image.permute(1, 2, 0).numpy()
    h, w = rgb.shape[:2]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, word, alpha in zip(axes.ravel(), words, alphas):
        # the region weights, upsampled to the image and scaled so the word's most attended
        # region is 1, drawn as a yellow-red glow whose opacity follows the weight
        heat = torch.nn.functional.interpolate(torch.as_tensor(alpha).reshape(1, 1, *grid).float(),
                                               size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        heat = (heat / heat.max()).numpy()
        ax.imshow(rgb)
        ax.imshow(heat, cmap="autumn_r", alpha=0.7 * heat, vmin=0, vmax=1)
        ax.set_title(f"{word} (max {alpha.max():.2f})", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=90)
    plt.close(fig)


def draw_all(summary: dict, data, results: dict, spec, out_dir, device) -> dict:
    """Every figure of a run -> {"curves": {model: path}, "captions": path,
    "attention": {image name: path}}, paths relative to out_dir."""
    from convattn.caption.checkpoint import load_decoder
    from convattn.caption.train import run_checkpoint_dir

    out_dir = Path(out_dir)
    figures = {"curves": {}, "attention": {}}
    for model, model_summary in summary["models"].items():
        rel = f"figures/curves_{model}.png"
        plot_curves(model_summary, model, out_dir / rel)
        figures["curves"][model] = rel

    config = summary["config"]
    shown = [data.dataset.by_name(name) for name in config["show"]]
    if not shown:
        return figures
    idx = torch.tensor([im.index for im in shown], device=data.features.device)
    features = data.region_features(idx)
    max_steps = config["max_steps"] or data.max_len
    images = [load_image(data.dataset.path(im), spec.image_size) for im in shown]
    generated = {im.name: {} for im in shown}
    for model in summary["models"]:
        decoder, _ = load_decoder(run_checkpoint_dir(out_dir, summary, model) / "model.pt", device)
        ids, alphas = decode(decoder, features, max_steps, config["beam"])
        for i, im in enumerate(shown):
            words = data.vocab.decode(ids[i].tolist())
            generated[im.name][model] = " ".join(words)
            if alphas is not None:
                rel = f"figures/attention_{im.name}.png"
                shown_words = words + [END]
                plot_attention(images[i], shown_words, alphas[i, :len(shown_words)].cpu().numpy(),
                               data.grid, f"{im.name}: attention over the {data.grid[0]}x{data.grid[1]} "
                               f"regions for each generated word (uniform would be {1 / len(alphas[i, 0]):.3f})",
                               out_dir / rel)
                figures["attention"][im.name] = rel
    rows = [{"name": im.name, "image": img, "generated": generated[im.name],
             "references": [" ".join(c) for c in im.captions]} for im, img in zip(shown, images)]
    plot_captions(rows, out_dir / "figures/captions.png")
    figures["captions"] = "figures/captions.png"
    return figures
