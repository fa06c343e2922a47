"""Figures of a classify sweep, drawn from summary.json's run records and the best run's
kernels (arrays; the sweep reads them from its checkpoint).

Curves: the best run's training loss and dev accuracy per epoch (the study's two plots),
and every learning rate overlaid with the best drawn bold (the one the report shows).
Kernels (Q2.3): conv1's 16 kernels (3x3), conv2's full 32x16 grid of 3x3 kernels, and
conv2's first input channel (the study's view). Kernel figures share one colour scale per
figure, symmetric around zero, shown by a colour bar.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from convattn.common import io  # noqa: E402

CMAP = "RdBu_r"  # diverging: red positive, blue negative, white zero


def _save(fig, out_dir: Path, name: str, pdf: bool) -> str:
    io.save_figure(fig, out_dir / "figures" / f"{name}.png", dpi=150, bbox_inches="tight")
    if pdf:
        io.save_figure(fig, out_dir / "figures" / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}.png"


def _epochs(values: list) -> np.ndarray:
    return np.arange(1, len(values) + 1)


def _epoch_axis(ax, n: int) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(n, 1) + 0.5)


def _as_float(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def best_curve(run: dict, key: str, ylabel: str, title: str):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    y = _as_float(run[key])
    ax.plot(_epochs(y), y, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _epoch_axis(ax, len(y))
    ax.grid(alpha=0.3)
    return fig


def sweep_curves(runs: list[dict], best_lr: float | None = None):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        best = run["lr"] == best_lr
        label = f"lr {run['lr']:g}" + (" (best)" if best else "")
        label += "" if run["status"] == "ok" else f" ({run['status']})"
        style = {"marker": "o", "markersize": 4 if best else 3, "linewidth": 2.4 if best else 1.2,
                 "label": label}
        loss, acc = _as_float(run["train_loss"]), _as_float(run["val_acc"])
        ax_loss.plot(_epochs(loss), loss, **style)
        ax_acc.plot(_epochs(acc), acc, **style)
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="dev accuracy", title="Dev accuracy")
    for ax in (ax_loss, ax_acc):
        _epoch_axis(ax, max(len(r["train_loss"]) for r in runs))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def _limit(w: np.ndarray) -> float:
    return float(np.abs(w).max()) or 1.0


def kernel_grid(kernels: np.ndarray, rows: int, cols: int, title: str,
                row_label: str | None = None, col_label: str | None = None,
                row_names: list[str] | None = None, clip_percentile: float | None = None):
    """kernels (rows * cols, 3, 3) shown as one mosaic with 1-pixel gaps, one colour scale,
    symmetric around 0: up to max |w|, or to a percentile of |w| so that a few large
    weights do not wash out the other kernels (the colour bar then says so)."""
    k = kernels.shape[-1]
    mosaic = np.full((rows * (k + 1) - 1, cols * (k + 1) - 1), np.nan)
    for idx, w in enumerate(kernels):
        r, c = divmod(idx, cols)
        mosaic[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = w
    vmax = _limit(kernels)
    label, extend = "weight", "neither"
    if clip_percentile is not None:
        vmax = float(np.percentile(np.abs(kernels), clip_percentile)) or vmax
        label, extend = f"weight (colours clipped at the {clip_percentile:g}th percentile of |w|)", "both"
    cell = 0.42 if rows * cols <= 32 else 0.24
    fig, ax = plt.subplots(figsize=(cols * cell + 1.6, rows * cell + 0.9))
    cmap = plt.get_cmap(CMAP).with_extremes(bad="white")  # the gaps between kernels
    image = ax.imshow(mosaic, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    centres = lambda n: np.arange(n) * (k + 1) + (k - 1) / 2  # noqa: E731
    step_c = 1 if cols <= 16 else 2
    ax.set_xticks(centres(cols)[::step_c], [str(i) for i in range(cols)][::step_c])
    step_r = 1 if rows <= 16 else 2
    row_names = row_names or [str(i) for i in range(rows)]
    ax.set_yticks(centres(rows)[::step_r], row_names[::step_r])
    ax.tick_params(length=0, labelsize=7)
    if col_label:
        ax.set_xlabel(col_label)
    if row_label:
        ax.set_ylabel(row_label)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046 if rows > 4 else 0.02, pad=0.02,
                 label=label, extend=extend)
    return fig


def draw_all(runs: list[dict], best_lr: float | None, out_dir, *, kernels: dict | None = None,
             scheduled: bool = False, pdf: bool = False) -> dict:
    """Draw every figure into out_dir/figures; return {name: relative PNG path}.

    runs: summary.json's run records; best_lr: the chosen run's lr (None: none finished);
    kernels: the best run's {"conv1": (16, 1, 3, 3), "conv2": (32, 16, 3, 3)} weights;
    scheduled: the lr followed a schedule, so a run's lr is its peak."""
    out_dir = Path(out_dir)
    figures: dict[str, str] = {}
    if runs:
        figures["sweep_curves"] = _save(sweep_curves(runs, best_lr), out_dir, "sweep-curves", pdf)
    best = next((r for r in runs if r["lr"] == best_lr), None)
    if best is None:
        return figures
    lr = ("peak " if scheduled else "") + f"{best['lr']:g}"
    figures["best_train_loss"] = _save(
        best_curve(best, "train_loss", "training loss (epoch mean)",
                   f"Training loss, best run (lr {lr})"), out_dir, "best-train-loss", pdf)
    figures["best_val_acc"] = _save(
        best_curve(best, "val_acc", "dev accuracy", f"Dev accuracy, best run (lr {lr})"),
        out_dir, "best-val-acc", pdf)
    if kernels is None:
        return figures

    conv1, conv2 = kernels["conv1"], kernels["conv2"]   # (16, 1, 3, 3), (32, 16, 3, 3)
    figures["conv1_kernels"] = _save(
        kernel_grid(conv1[:, 0], 2, 8, f"conv1: 16 kernels 3x3 (lr {lr})",
                    col_label="kernel = row label + column", row_names=["0 +", "8 +"]),
        out_dir, "conv1-kernels", pdf)
    figures["conv2_kernels"] = _save(
        kernel_grid(conv2.reshape(-1, 3, 3), 32, 16,
                    f"conv2: all 32x16 kernels 3x3 (lr {lr})",
                    row_label="output channel", col_label="input channel", clip_percentile=99),
        out_dir, "conv2-kernels", pdf)
    figures["conv2_kernels_channel0"] = _save(
        kernel_grid(conv2[:, 0], 4, 8, f"conv2: input channel 0 of each of the 32 kernels "
                    f"(lr {lr})", col_label="output channel = row label + column",
                    row_names=["0 +", "8 +", "16 +", "24 +"]),
        out_dir, "conv2-kernels-channel0", pdf)
    return figures
