"""The ``resvision`` command: ``train``, ``eval``, ``predict``, ``zoo``.

``tools/train.py`` and friends are the same functions (``main(["train", ...])``). User errors
print one line ``error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import UserError

log = logging.getLogger("resvision")


def _common(parser: argparse.ArgumentParser, needs_checkpoint: bool) -> None:
    parser.add_argument("--task", help="task name (classification, ...); its default config runs on built-in data")
    parser.add_argument("--config", help="YAML config (default: the task's default, or the checkpoint's own config)")
    parser.add_argument("--output", help="directory for this command's results")
    if needs_checkpoint:
        parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) written by `resvision train`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resvision", description="Fine-tune and evaluate ResNet models: classification and detection on one engine."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fine-tune a model; writes a run directory")
    _common(train, needs_checkpoint=False)
    train.add_argument("--resume", nargs="?", const="auto", help="checkpoint to resume (default: the run's last.pt)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    evaluate = sub.add_parser("eval", help="evaluate a checkpoint (or a detection results file) on the validation split")
    _common(evaluate, needs_checkpoint=False)
    evaluate.add_argument("--checkpoint", help="checkpoint file (.pt) written by `resvision train`")
    evaluate.add_argument("--predictions", help="detection: a COCO-format results JSON from any detector")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value")
    predict = sub.add_parser("predict", help="run a checkpoint on images or folders")
    _common(predict, needs_checkpoint=True)
    predict.add_argument("--topk", type=int, help="classification: classes per image (default 5)")
    predict.add_argument("--score-thresh", type=float, help="detection: minimum score (default 0.5)")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value")
    zoo = sub.add_parser("zoo", help="table of the registered ResNets (params, MACs, features)")
    zoo.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    return parser


def _load_cfg(args, checkpoint_config: dict | None = None):
    from .config import apply_overrides, config_from_dict, load_config

    overrides = list(args.overrides or [])
    if args.config or checkpoint_config is None:
        source = args.config or args.task
        if source is None:
            raise UserError("give --task NAME or --config FILE")
        cfg = load_config(source, overrides)
    else:
        cfg = config_from_dict(apply_overrides(checkpoint_config, overrides))
    if args.task and cfg.task != args.task:
        raise UserError(f"--task {args.task} but the config is for task {cfg.task!r}")
    return cfg


def cmd_train(args) -> int:
    from .engine import Trainer
    from .engine import distributed as dist_utils

    cfg = _load_cfg(args)
    if args.output:
        cfg.output = args.output
    metrics = Trainer(cfg, resume=args.resume).fit()
    if dist_utils.is_main_process():
        print(f"run directory: {cfg.run_dir}")
        print("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        print(f"report: {cfg.run_dir / 'report.json'}  plots: {cfg.run_dir / 'plots'}")
    return 0


def cmd_eval(args) -> int:
    from .engine import Trainer, load_checkpoint

    if args.predictions:
        return _eval_predictions(args)
    if not args.checkpoint:
        raise UserError("give --checkpoint FILE (or --predictions FILE for a detection results file)")
    state = load_checkpoint(args.checkpoint)
    cfg = _load_cfg(args, state.get("config"))
    cfg.output = args.output or str(Path(args.checkpoint).resolve().parent.parent / "eval")
    metrics = Trainer(cfg).evaluate(args.checkpoint)
    print(json.dumps(metrics, indent=2))
    print(f"report: {cfg.run_dir}")
    return 0


def _eval_predictions(args) -> int:
    """Score a saved results file (COCO format) against the config's validation ground truth."""
    from .tasks import build_task

    cfg = _load_cfg(args)
    task = build_task(cfg)
    task.build_datasets()
    evaluator = task.build_evaluator()
    if not hasattr(evaluator, "load_results"):
        raise UserError(f"--predictions is not supported for task {cfg.task}")
    evaluator.load_results(args.predictions)
    metrics = evaluator.compute()
    out = Path(args.output or Path(args.predictions).resolve().parent / "eval")
    evaluator.write_report(out)
    (out / "report.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"report: {out}")
    return 0


def cmd_predict(args) -> int:
    from .engine.checkpoint import check_compatible, load_checkpoint, load_model_state
    from .tasks import build_task

    state = load_checkpoint(args.checkpoint)
    cfg = _load_cfg(args, state.get("config"))
    task = build_task(cfg)
    check_compatible(state, args.checkpoint, cfg.task, cfg.model.backbone.name)
    task.load_meta(state.get("meta", {}))
    cfg.model.backbone.pretrained = None  # the checkpoint has every weight
    model = task.build_model()
    load_model_state(model, state.get("ema") or state["model"], args.checkpoint)
    model.eval()
    paths, folders = _expand_inputs(args.inputs)
    out = Path(args.output or Path(args.checkpoint).resolve().parent.parent / "predict")
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in (("topk", args.topk), ("score_thresh", args.score_thresh)) if v is not None}
    accepted = inspect.signature(task.predict).parameters
    for name in options:
        if name not in accepted:
            raise UserError(f"--{name.replace('_', '-')} does not apply to task {cfg.task}")
    results = task.predict(model, paths, out_dir=out, **options)
    (out / "predictions.json").write_text(json.dumps(results, indent=2))
    if folders:
        _write_csv(results, out / "predictions.csv")
    if len(results) <= 20:
        print(json.dumps(results, indent=2))
    print(f"predictions: {out / 'predictions.json'}" + (f" and {out / 'predictions.csv'}" if folders else ""))
    return 0


def _expand_inputs(inputs: Sequence[str]) -> tuple[list[str], bool]:
    from .datasets import IMAGE_EXTENSIONS

    paths, folders = [], False
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            folders = True
            paths += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise UserError(f"input not found: {item}")
    if not paths:
        raise UserError(f"no images in {', '.join(inputs)}")
    return paths, folders


def _write_csv(results: list[dict], path: Path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "prob", "topk"])
        for r in results:
            best = r["topk"][0]
            writer.writerow([r["image"], best["label"], best["prob"], ";".join(f"{t['label']}:{t['prob']:.4f}" for t in r["topk"])])


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resvision`` console script and of ``tools/*.py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["zoo"]:  # the zoo parses its own options (argparse.REMAINDER drops a leading --flag)
        from .backbone.zoo import zoo_main

        return zoo_main(argv[1:])
    args = build_parser().parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 talks
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
