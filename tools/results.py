"""Reruns a task's default demo over seeds and thread counts and prints its README "Results" row.

Usage: ``python tools/results.py --task segmentation [--seeds 0 1 2] [--threads 2 1] [--metrics mIoU] [key=value ...]``
(overrides may stand anywhere)

Each run is ``tools/train.py --task T train.seed=S`` in a fresh process with ``OMP_NUM_THREADS`` set, one after the
other (run nothing else meanwhile: the 2-thread wall times are part of the row), into ``--output`` (default
``runs/results/<task>``). Prints, per metric, min–max over the seeds at each thread count, the training seconds
(the epochs' sum from ``metrics.jsonl``) and the wall seconds of the first thread count, and every run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(task: str, seed: int, threads: int, out: Path, overrides: list[str]) -> dict[str, float]:
    """One training run in its own process; its report plus ``train_seconds`` and ``wall_seconds``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "tools/train.py"), "--task", task, "--output", str(out),
                    f"train.seed={seed}", "train.progress=false", *overrides], env=env, check=True)
    wall = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = sum(r.get("seconds", 0.0) for r in rows if r.get("split") == "train_epoch")
    return {**report, "train_seconds": train, "wall_seconds": wall}


def span(values: list[float], digits: int = 3) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--metrics", nargs="+", help="report keys to tabulate (default: the task's main metric)")
    parser.add_argument("--output", type=Path, help="folder for the runs (default runs/results/<task>)")
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]  # anywhere, also after a list option
    args = parser.parse_args([a for a in argv if a not in overrides])
    from resvision.tasks import get_task_class

    metrics = args.metrics or [get_task_class(args.task).main_metric]
    out = args.output or Path("runs/results") / args.task
    results: dict[int, list[dict[str, float]]] = {}
    for threads in args.threads:
        for seed in args.seeds:
            run = out / f"t{threads}_seed{seed}"
            if run.exists():
                raise SystemExit(f"error: {run} exists; choose another --output")
            results.setdefault(threads, []).append(run_once(args.task, seed, threads, run, overrides))
            r = results[threads][-1]
            print(f"threads {threads} seed {seed}: " + ", ".join(f"{m} {r[m]:.4f}" for m in metrics)
                  + f", training {r['train_seconds']:.1f} s, wall {r['wall_seconds']:.1f} s", flush=True)
    first = results[args.threads[0]]
    cells = [" / ".join(span([r[m] for r in results[t]]) for m in metrics) for t in args.threads]
    print(f"\n| {args.task} | {' / '.join(metrics)} | " + " | ".join(cells)
          + f" | {span([r['train_seconds'] for r in first], 0)} s, {span([r['wall_seconds'] for r in first], 0)} s wall"
          + f" | `{' '.join(['.venv/bin/python tools/train.py --task', args.task, *overrides])}` |")
    print(f"(columns: {', '.join(f'{t} thread(s)' for t in args.threads)}; seeds {args.seeds}; times at "
          f"{args.threads[0]} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
