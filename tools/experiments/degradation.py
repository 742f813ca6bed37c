#!/usr/bin/env python
"""The degradation experiment of He et al. 2016 (Fig. 6) on the built-in digits: plain-20, plain-56, ResNet-20
and ResNet-56 trained with identical settings and seeds.

    .venv/bin/python tools/experiments/degradation.py [--epochs 15] [--seed 0] [--output runs/degradation]

Each net trains through the normal Trainer with the classification demo's config (SGD 0.1, cosine, label
smoothing 0.1, batch 64) and ``train.monitor_gradients=true``; after every epoch a callback measures the
*training* error on all training images in eval mode without augmentation (the quantity whose increase with
depth is the degradation problem), next to the validation error the task reports. Writes into ``--output``:

- ``errors.png``: training (dashed) and validation (solid) error per epoch of the four nets, log scale;
- ``gradient_flow.png``: per-stage gradient norms of the deepest plain and residual nets (plain-56, ResNet-56)
  side by side;
- ``results.json`` and ``results.md``: the per-epoch figures and a summary table;
- one ordinary run directory per net (metrics.jsonl, checkpoints, plots).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib
import torch
from torch.utils.data import DataLoader

from resvision import Callback, Trainer, UserError, build_task, load_config
from resvision.datasets.classification import ClassificationDataset
from resvision.modes import eval_mode

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NETS = ("plain20", "plain56", "resnet20", "resnet56")


class TrainingError(Callback):
    """Top-1 error on every training image (eval mode, evaluation transform) after each epoch."""

    def __init__(self) -> None:
        self.errors: list[float] = []

    @torch.inference_mode()
    def on_epoch_end(self, trainer: Trainer) -> None:
        source = trainer.data.train.dataset  # the ClassificationDataset inside the task's index wrapper
        plain = ClassificationDataset(source.samples, source.classes, trainer.task.transforms(False))
        model = trainer.eval_model
        wrong = 0
        with eval_mode(model):
            for images, labels in DataLoader(plain, batch_size=256, num_workers=0):
                wrong += int((model(images.to(trainer.device)).argmax(1).cpu() != labels).sum())
        self.errors.append(wrong / len(plain))


def run(name: str, epochs: int, seed: int, out: Path) -> dict:
    cfg = load_config("classification", [
        f"model.backbone.name={name}", f"train.epochs={epochs}", f"train.seed={seed}", "train.eval_every=1",
        "train.monitor_gradients=true", "train.gradient_monitor_every=5", "train.progress=false",
        f"output={out / name}"])
    meter = TrainingError()
    trainer = Trainer(build_task(cfg), callbacks=[meter])
    start = time.perf_counter()
    trainer.fit()
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    val = [1 - r["top1"] for r in rows if r["split"] == "val"]
    gradients = [r for r in rows if r["split"] == "gradients"]
    params = sum(p.numel() for p in trainer.model.parameters())
    return {"name": name, "train_error": meter.errors, "val_error": val, "gradients": gradients, "params": params,
            "seconds": round(time.perf_counter() - start, 1)}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_errors(results: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"plain20": "tab:orange", "plain56": "tab:red", "resnet20": "tab:cyan", "resnet56": "tab:blue"}
    for r in results:
        epochs = range(1, len(r["train_error"]) + 1)
        colour = colours.get(r["name"])
        ax.plot(epochs, [max(e, 1e-4) for e in r["train_error"]], "--", color=colour, label=f"{r['name']} train")
        ax.plot(epochs, [max(e, 1e-4) for e in r["val_error"]], "-", color=colour, lw=2, label=f"{r['name']} val")
    ax.set(xlabel="epoch", ylabel="top-1 error (log)", yscale="log",
           title="Plain vs residual nets on the built-in digits (dashed: training, solid: validation)")
    ax.legend(ncol=2, fontsize=8)
    return _save(fig, path)


def plot_gradients(results: list[dict], path: Path) -> Path:
    # the deepest plain net next to the deepest residual one (plain-56 and ResNet-56 by default)
    pair = [max(group, key=lambda r: r["params"]) for group in
            ([r for r in results if r["name"].startswith("plain")], [r for r in results if not r["name"].startswith("plain")])
            if group]
    fig, axes = plt.subplots(1, len(pair), figsize=(5.5 * len(pair), 4), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], pair):
        stages = [k.split("/", 1)[1] for k in r["gradients"][0] if k.startswith("grad_norm/")]
        colours = plt.cm.viridis([i / max(len(stages) - 1, 1) * 0.9 for i in range(len(stages))])
        for stage, colour in zip(stages, colours):
            ax.plot([g["step"] for g in r["gradients"]], [g[f"grad_norm/{stage}"] for g in r["gradients"]],
                    color=colour, label=stage)
        ax.set(xlabel="optimizer step", title=f"{r['name']}: gradient L2 norm per stage", yscale="log")
    axes[0][0].set_ylabel("gradient L2 norm")
    axes[0][-1].legend(fontsize=8)
    return _save(fig, path)


def summary(results: list[dict], command: str) -> str:
    lines = ["| net | params | final training error | best training error | final validation error | "
             "best validation error | seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['train_error'][-1]:.4f} | {min(r['train_error']):.4f} | "
                     f"{r['val_error'][-1]:.4f} | {min(r['val_error']):.4f} | {r['seconds']} |")
    return "\n".join([f"Command: `{command}`", "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated registry names")
    parser.add_argument("--output", type=Path, default=Path("runs/degradation"))
    args = parser.parse_args(argv)
    try:
        results = [run(name, args.epochs, args.seed, args.output) for name in args.nets.split(",")]
    except UserError as err:  # e.g. an existing --output, an unknown net name
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1))
    command = " ".join(["tools/experiments/degradation.py", *(sys.argv[1:] if argv is None else argv)])
    (args.output / "results.md").write_text(summary(results, command) + "\n")
    plot_errors(results, args.output / "errors.png")
    plot_gradients(results, args.output / "gradient_flow.png")
    print(summary(results, command))
    print(f"plots: {args.output / 'errors.png'}, {args.output / 'gradient_flow.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
