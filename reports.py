"""Plots shared by the tasks' reports: training curves, confusion matrices, image grids (PNG).

matplotlib runs headless (Agg); every function writes one PNG and returns its path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay ``fig`` out, write it to ``path`` (folders made), close it; ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)  # rect: the part of the figure the axes may use (room for a figure legend)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(metrics_jsonl: str | Path, out_dir: str | Path) -> list[Path]:
    """``loss.png`` (per-step and per-epoch train losses), ``lr.png`` and ``metrics.png``
    (validation metrics per epoch) from a run's ``metrics.jsonl``."""
    metrics_jsonl, out_dir = Path(metrics_jsonl), Path(out_dir)
    if not metrics_jsonl.exists():
        return []
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r["split"] == "train"]
    epochs = [r for r in rows if r["split"] == "train_epoch"]
    vals = [r for r in rows if r["split"] == "val"]
    written = []
    if steps or epochs:
        fig, ax = plt.subplots(figsize=(6, 4))
        if steps:
            ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, label="train loss (step)")
        if epochs:
            ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], "o-", label="train loss (epoch mean)")
        ax.set(xlabel="optimizer step", ylabel="loss", title="Training loss")
        ax.set_yscale("log")
        ax.legend()
        written.append(save_figure(fig, out_dir / "loss.png"))
        fig, ax = plt.subplots(figsize=(6, 3))
        source = steps or epochs
        ax.plot([r["step"] for r in source], [r["lr"] for r in source])
        ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate (largest group)")
        written.append(save_figure(fig, out_dir / "lr.png"))
    keys = sorted({k for r in vals for k, v in r.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")})
    if vals and keys:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot([r["epoch"] + 1 for r in vals], [r.get(key, np.nan) for r in vals], "o-", label=key)
        ax.set(xlabel="epoch", ylabel="value", title="Validation metrics")
        ax.legend(fontsize=8)
        written.append(save_figure(fig, out_dir / "metrics.png"))
    return written


def plot_gradient_flow(rows: Sequence[dict], path: str | Path, title: str = "Gradient flow") -> Path:
    """Per-stage gradient L2 norm and update / weight ratio over training (log scales), from the rows of
    ``engine.gradient_flow.GradientFlowMonitor``; stages from the input (stem) to the head in colour order."""
    stages = [k.split("/", 1)[1] for k in rows[0] if k.startswith("grad_norm/")]
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(stages)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    for ax, key, label in zip(axes, ("grad_norm", "update_ratio"), ("gradient L2 norm", "||update|| / ||weights||")):
        values = {s: np.array([r.get(f"{key}/{s}", np.nan) for r in rows], dtype=float) for s in stages}
        positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values.values()])
        floor = positive.min() / 10 if len(positive) else 1e-12
        for stage, colour in zip(stages, colours):
            # exact zeros (gradients that underflowed) are drawn on the floor line, not dropped from the log plot
            ax.plot(steps, np.where(values[stage] > 0, values[stage], floor), color=colour, lw=1.2, label=stage)
        ax.axhline(floor, color="0.6", lw=0.8, ls=":")
        ax.set(xlabel="optimizer step", ylabel=label + " (dotted: 0)", yscale="log")
    axes[0].set_title("Gradient norm per stage")
    axes[1].set_title("Update-to-weight ratio per stage")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return save_figure(fig, Path(path))


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix (rows = true class) with raw counts printed in each cell."""
    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = min(4 + 0.45 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels, rotation=90 if n > 10 else 0)
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    return save_figure(fig, Path(path))


def save_image_grid(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, title: str, cols: int = 6,
                    legend: dict[str, Sequence[int]] | None = None) -> Path:
    """Images (HxWx3 uint8, or HxW) in a grid with a caption under each; ``legend``: name -> RGB swatch."""
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="black", label=name) for name, rgb in legend.items()]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
        return save_figure(fig, Path(path), rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return save_figure(fig, Path(path))
