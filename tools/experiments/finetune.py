#!/usr/bin/env python
"""Fine-tuning strategies compared on the built-in digits: pretrain on digits 0-4, fine-tune on few images of 5-9.

    .venv/bin/python tools/experiments/finetune.py [--shots 20] [--epochs 15] [--seeds 0,1,2] [--output runs/finetune]

1. Pretraining: ResNet-20 with the classification demo's config on all training images of digits 0-4.
2. Target: digits 5-9 with only ``--shots`` training images per class (the case fine-tuning is for), evaluated on
   every validation image of 5-9. Each strategy starts from the pretrained backbone
   (``model.backbone.pretrained=<pretraining best.pt>``, a fresh 5-class head) with the same schedule, except
   ``scratch`` (no pretraining) as the reference:
   - ``linear_probe``: backbone frozen, only the head trains;
   - ``partial``: stem and stage 1 frozen (``finetune.frozen_stages=1``);
   - ``full``: everything trains, backbone at 0.1x the head's learning rate;
   - ``unfreeze``: linear probe, then stages 3 and 2 unfreeze at 1/3 and 2/3 of the epochs (``finetune.unfreeze_at``);
   - ``unfreeze_lr0.1``: the same with the unfrozen stages at 0.1x the head's learning rate.
Writes ``results.md`` / ``results.json`` (top-1 per strategy and seed, min-max) into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from resvision import Trainer, UserError, build_task, load_config
from resvision.datasets.demo import digits_folder

SOURCE, TARGET = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]


def link_subset(root: Path, out: Path, classes: list[str], shots: int | None) -> Path:
    """A folder tree ``out/{train,val}/<class>/`` of symlinks: ``shots`` training images per class (all if None)."""
    for split in ("train", "val"):
        for name in classes:
            files = sorted((root / split / name).iterdir())
            if split == "train" and shots is not None:
                files = files[:shots]
            target = out / split / name
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = target / f.name
                if not link.exists():
                    os.symlink(f, link)
    return out


STRATEGIES: dict[str, list[str]] = {
    "scratch": [],
    "linear_probe": ["finetune.strategy=linear_probe"],
    "partial": ["finetune.strategy=partial", "finetune.frozen_stages=1"],
    "full": ["finetune.strategy=full", "finetune.backbone_lr_mult=0.1"],
    "unfreeze": ["finetune.strategy=linear_probe"],  # + unfreeze_at, which depends on --epochs
    "unfreeze_lr0.1": ["finetune.strategy=linear_probe", "finetune.backbone_lr_mult=0.1"],  # + unfreeze_at
}


def train(overrides: list[str]) -> dict:
    cfg = load_config("classification", ["train.progress=false", *overrides])
    return Trainer(build_task(cfg)).fit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=20, help="training images per target class")
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset to run")
    parser.add_argument("--output", type=Path, default=Path("runs/finetune"))
    args = parser.parse_args(argv)
    out = args.output
    try:
        digits = digits_folder()
        source = link_subset(digits, out / "data_0-4", SOURCE, None)
        target = link_subset(digits, out / f"data_5-9_{args.shots}shot", TARGET, args.shots)
        pretrained = out / "pretrain" / "checkpoints" / "best.pt"
        if not pretrained.exists():
            train(["data.format=folder", f"data.root={source}", f"output={out / 'pretrain'}"])
        third = max(1, args.epochs // 3)
        results: dict[str, list[float]] = {}
        for name in args.strategies.split(","):
            if name not in STRATEGIES:
                raise UserError(f"--strategies: unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
            extra = STRATEGIES[name]
            if name.startswith("unfreeze"):
                extra = [*extra, f"finetune.unfreeze_at={{{third}: [3], {2 * third}: [2]}}"]
            start = [] if name == "scratch" else [f"model.backbone.pretrained={pretrained}"]
            for seed in args.seeds.split(","):
                metrics = train(["data.format=folder", f"data.root={target}", f"train.epochs={args.epochs}",
                                 "sched.warmup_epochs=0", f"train.seed={seed}", *start, *extra,
                                 f"output={out / name / f'seed{seed}'}"])
                results.setdefault(name, []).append(metrics["top1"])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = " ".join(["tools/experiments/finetune.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"Command: `{command}`", "",
             f"| strategy | top-1 on digits 5-9 ({args.shots} training images per class), per seed | min–max | median |",
             "|---|---|---:|---:|"]
    for name, values in results.items():
        lines.append(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {min(values):.3f}–{max(values):.3f} | "
                     f"{statistics.median(values):.3f} |")
    suffix = "" if args.strategies == ",".join(STRATEGIES) else "_" + args.strategies.replace(",", "_")
    (out / f"results{suffix}.md").write_text("\n".join(lines) + "\n")
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
