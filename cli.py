"""The ``resvision`` command: ``train``, ``eval``, ``predict``, ``export``, ``config``, ``zoo``.

``tools/train.py`` and friends are the same functions (``main(["train", ...])``). User errors
print one line ``error: ...`` on stderr and exit with status 2. This module talks to the task
contract (``tasks/base.py``) only: task names come from the task table and predict options from the tasks, which
are imported only for ``predict`` (``--help`` and argument errors answer before torch is loaded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

log = logging.getLogger("resvision")


def _predict_options() -> list[tuple[str, tuple]]:
    """``(task name, its predict options)`` of every task: the built-in ones from their torch-free table
    (``tasks.options``), so that ``predict --help`` imports no task; a plugin's from its class. An installed plugin
    that fails to load is named in a warning and left out, so that it cannot break the other tasks' commands."""
    from .errors import ConfigError
    from .tasks import get_task_class, list_tasks
    from .tasks.options import BUILTIN_PREDICT_OPTIONS

    found = []
    for name in list_tasks():
        try:
            options = BUILTIN_PREDICT_OPTIONS.get(name)
            found.append((name, options if options is not None else get_task_class(name).predict_options))
        except ConfigError as err:
            log.warning("%s", err)
    return found


def _common(parser: argparse.ArgumentParser) -> None:
    from .tasks import list_tasks  # the task table only: no task (and no torch) is imported for --help

    parser.add_argument("--task", help=f"task name ({', '.join(list_tasks())}), or heads on one backbone joined "
                        "by '+' (e.g. detection+segmentation); its default config runs on built-in data (`resvision "
                        "config --task NAME` prints its settings)")
    parser.add_argument("--config", help="YAML config (default: the task's default, or the checkpoint's own config)")
    parser.add_argument("--output", help="directory for this command's results")


def build_parser(predict_options: bool = True) -> argparse.ArgumentParser:
    """The command line. ``predict_options=False`` leaves out the tasks' own ``predict`` flags (a plugin task's are
    read from its class, which imports it): what every command but ``predict`` parses with."""
    parser = argparse.ArgumentParser(
        prog="resvision", description="Fine-tune and evaluate ResNet models: every task on one engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fine-tune a model; writes a run directory")
    _common(train)
    train.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                       help="continue a run: its last.pt by default, or the given checkpoint")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config (each key's type, default and help) and exit")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config, build the model, print its "
                       "parameter count and exit (no data read, no run directory)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3 "
                       "(`resvision config --task T` lists every key)")
    evaluate = sub.add_parser("eval", help="evaluate a checkpoint (or a predictions file) on the validation split")
    _common(evaluate)
    evaluate.add_argument("--checkpoint", help="checkpoint file (.pt) written by `resvision train`, or an exported "
                          ".onnx file (with --engine onnxruntime)")
    _engine_options(evaluate, compile_option=False)
    evaluate.add_argument("--predictions", help="a results file from any model, in the task's results format "
                          "(detection: COCO results JSON)")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value")
    predict = sub.add_parser("predict", help="run a checkpoint on images or folders")
    _common(predict)
    predict.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) written by `resvision train`, or "
                         "an exported .onnx file (with --engine onnxruntime)")
    _engine_options(predict, compile_option=True)
    seen: dict[str, object] = {}
    for task_name, task_options in _predict_options() if predict_options else ():
        for option in task_options:
            if option.name in seen:  # two tasks may share an option, with one meaning of its value
                if seen[option.name] is not option.type:
                    raise TypeError(f"predict option {option.flag} has two types ({task_name})")
                continue
            seen[option.name] = option.type
            predict.add_argument(option.flag, dest=option.name, type=option.type, help=option.help)
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value")
    export = sub.add_parser("export", help="export a checkpoint to ONNX, check parity, optionally quantize to INT8")
    export.add_argument("--task", help="the checkpoint's task (checked)")
    export.add_argument("--config", help="YAML config (default: the checkpoint's own)")
    export.add_argument("--output", help="the .onnx file (default <run>/export/<checkpoint>.onnx)")
    export.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) written by `resvision train`")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="only ONNX today")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    export.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                        help="batch size free at run time (default; --no-dynamic-batch fixes it to the traced one)")
    export.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="trace (and, for fixed-size tasks, fix) the input at H x W (default: the config's)")
    export.add_argument("--postprocess", default="none",
                        help="extra graph step: classification softmax, segmentation argmax (default none)")
    export.add_argument("--quantize", choices=["int8"], help="also write <file>.int8.onnx (static QDQ quantization)")
    export.add_argument("--calibration-images", type=int, default=64, help="training images for INT8 calibration")
    export.add_argument("--parity-images", type=int, default=16, help="validation images for the parity check")
    export.add_argument("overrides", nargs="*", metavar="key=value")
    config = sub.add_parser("config", help="print a task's resolved config: every key with its type, default and help")
    config.add_argument("--task", help="task name (its default config)")
    config.add_argument("--config", help="YAML config")
    config.add_argument("overrides", nargs="*", metavar="key=value")
    extract = sub.add_parser("extract", help="write one head of a joint checkpoint (task a+b) as a single-task "
                             "checkpoint")
    extract.add_argument("--checkpoint", required=True, help="a joint run's checkpoint (.pt)")
    extract.add_argument("--head", required=True, help="the head to keep, e.g. detection")
    extract.add_argument("--output", help="the new checkpoint (default <checkpoint stem>_<head>.pt beside it)")
    sub.add_parser("zoo", help="table of the registered ResNets (params, MACs, features); `zoo --help` for options")
    return parser


def _engine_options(parser: argparse.ArgumentParser, compile_option: bool) -> None:
    parser.add_argument("--engine", choices=["torch", "onnxruntime"],
                        help="torch: eager PyTorch; onnxruntime: the exported file (a .pt is exported on the fly, with "
                             "its parity check). Default: onnxruntime for a .onnx file, torch for a .pt")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="run an exported file whose parity check failed at export (refused by default)")
    if compile_option:
        parser.add_argument("--compile", action="store_true", help="torch engine: torch.compile the model first")


def _parse(argv: list[str]) -> argparse.Namespace:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(predict_options=command == "predict")
    args, extra = parser.parse_known_args(argv)
    # argparse fills a positional list once: the `key=value` overrides (predict: the images) that follow an
    # option arrive here; they belong to that list wherever they stand
    field = "inputs" if args.command == "predict" else "overrides"
    late = [a for a in extra if not a.startswith("-") and (field == "inputs" or "=" in a)]
    unknown = [a for a in extra if a not in late]
    if unknown or (late and not hasattr(args, field)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late)}")
    if late:
        setattr(args, field, [*(getattr(args, field) or []), *late])
    resume = getattr(args, "resume", None)
    if resume and "=" in resume and not Path(resume).exists():
        # `--resume train.epochs=5`: argparse took the override as the optional checkpoint path.
        args.overrides.insert(0, resume)
        args.resume = "auto"
    return args


def _load_cfg(args):
    from .tasks import load_config

    source = args.config or args.task
    if source is None:
        raise UserError("give --task NAME or --config FILE")
    cfg = load_config(source, list(args.overrides or []))
    _check_task(args, cfg)
    return cfg


def _check_task(args, cfg) -> None:
    if args.task and cfg.task != args.task:
        raise UserError(f"--task {args.task} but the config is for task {cfg.task!r}")


def cmd_train(args) -> int:
    from .engine import distributed as dist_utils
    from .runs import train

    cfg = _load_cfg(args)
    if args.output:
        cfg.output = args.output
    if args.print_config or args.dry_run:
        from .config import describe_config

        print(describe_config(cfg), end="")
        if args.dry_run:
            _dry_run(cfg)
        return 0
    run = train(cfg, resume=args.resume)
    if dist_utils.is_main_process():
        print(f"run directory: {run.run_dir}")
        print("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in run.metrics.items() if isinstance(v, float)))
        print(f"report: {run.report}  plots: {run.run_dir / 'plots'}")
    return 0


def cmd_config(args) -> int:
    from .config import describe_config

    print(describe_config(_load_cfg(args)), end="")
    return 0


def _dry_run(cfg) -> None:
    """Build the model the run would train, with random weights (no data, no download: the class count comes
    from the config, or a stand-in; pretrained weights are named, not loaded)."""
    import copy

    from .engine.checkpoint import clear_pretrained
    from .tasks import build_task

    weights = [f"{k}={v}" for k, v in (("model.backbone.pretrained", cfg.model.backbone.pretrained),
                                       ("model.pretrained", getattr(cfg.model, "pretrained", None))) if v]
    cfg = copy.deepcopy(cfg)
    clear_pretrained(cfg.model)
    task = build_task(cfg)
    classes = getattr(cfg.data, "classes", None) or []
    count = cfg.model.num_classes or len(classes)
    source = "model.num_classes" if cfg.model.num_classes else "data.classes" if classes else None
    names = list(classes) if classes else [f"class_{i}" for i in range(count or 2)]  # a mismatch fails as in training
    model = task.build_model(task.data_from_meta({"classes": names}))
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in task.backbone_of(model).parameters())
    sized = (f"{len(names)} classes from {source}" if source else
             f"a stand-in {len(names)} classes: the data sets the count when training")
    print(f"model: {total:,} parameters ({backbone:,} in the backbone {cfg.model.backbone.name}); head for {sized}")
    if weights:
        print(f"weights: {', '.join(weights)} (not loaded by the dry run)")
    print(f"dry run: nothing read or written; the run would go to {cfg.run_dir} (-2, -3, ... appended if that "
          "folder already holds a run)")


def cmd_eval(args) -> int:
    from .engine import distributed as dist_utils
    from .runs import evaluate

    if args.predictions:
        return _eval_predictions(args)
    if not args.checkpoint:
        raise UserError("give --checkpoint FILE (or --predictions FILE with a results file)")
    result = evaluate(args.checkpoint, list(args.overrides or []), output=args.output, engine=args.engine,
                      config=args.config, allow_unverified=args.allow_unverified, task=args.task)
    if dist_utils.is_main_process():
        print(json.dumps(result.metrics, indent=2))
        print(f"report: {result.report}")
    return 0


def _eval_predictions(args) -> int:
    """Score a saved results file against the config's validation ground truth."""
    from .engine.checkpoint import results_dir
    from .tasks import build_task

    cfg = _load_cfg(args)
    task = build_task(cfg)
    if not task.results_format:
        raise UserError(task.unsupported("scoring a predictions file"))
    out = results_dir(args.predictions, "eval", args.output)
    evaluator = task.load_results(args.predictions, task.build_datasets(training=False))
    metrics = evaluator.compute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(metrics, indent=2))
    evaluator.write_report(out)
    print(json.dumps(metrics, indent=2))
    print(f"report: {out / 'report.json'}")
    return 0


def cmd_predict(args) -> int:
    from .engine.checkpoint import results_dir
    from .predictor import expand_inputs, load

    out = results_dir(args.checkpoint, "predict", args.output)
    predictor = load(args.checkpoint, engine=args.engine, overrides=list(args.overrides or []), config=args.config,
                     allow_unverified=args.allow_unverified, compile=args.compile, export_dir=out, task=args.task)
    options = predictor.task.options_of({o.name: getattr(args, o.name, None) for _, task_options in _predict_options()
                                         for o in task_options})
    results = predictor.predict(expand_inputs(args.inputs), **options)
    written = predictor.write(results, out)
    if len(results) <= 20:
        print(json.dumps(results, indent=2, default=_brief))
    print("predictions: " + ", ".join(str(p) for p in written[:3]) + (f" (+{len(written) - 3} more)" if len(written) > 3 else ""))
    return 0


def cmd_export(args) -> int:
    from .deploy import DEFAULT_OPSET
    from .predictor import export, read_source

    if Path(args.checkpoint).suffix == ".onnx":
        raise UserError(f"{args.checkpoint} is already ONNX: export takes a .pt checkpoint")
    read_source(args.checkpoint, list(args.overrides or []), args.config, task=args.task)  # --task, before any work
    info = export(args.checkpoint, args.output, opset=args.opset or DEFAULT_OPSET, dynamic_batch=args.dynamic_batch,
                  image_size=args.image_size, postprocess=args.postprocess, parity_images=args.parity_images,
                  quantize=args.quantize, calibration_images=args.calibration_images,
                  overrides=list(args.overrides or []), config=args.config)
    print(f"exported: {info['path']} (metadata and parity: {info['path']}.json)")
    if "int8" in info:
        print(f"INT8: {info['int8']['path']}")
    return 0


def cmd_extract(args) -> int:
    from .tasks.joint import extract_head

    print(f"single-task checkpoint: {extract_head(args.checkpoint, args.head, args.output)}")
    return 0


def _brief(value: Any) -> str:
    """How the printed results show what JSON cannot hold (a predicted mask: its shape; the files have it)."""
    shape = getattr(value, "shape", None)
    return f"<array {'x'.join(map(str, shape))}>" if shape is not None else str(value)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "export": cmd_export, "config": cmd_config,
            "extract": cmd_extract}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resvision`` console script and of ``tools/*.py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["zoo"]:  # the zoo parses its own options (argparse.REMAINDER drops a leading --flag)
        from .backbone.zoo import zoo_main

        return zoo_main(argv[1:])
    main_rank = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 talks
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="%(message)s")
    try:
        args = _parse(argv)  # before any heavy import: --help and argument errors answer at once
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .engine import distributed as dist_utils

    ok = False
    try:
        status = COMMANDS[args.command](args)
        ok = True
        return status
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        dist_utils.shutdown(wait=ok)  # after an error the other ranks may never reach a barrier


if __name__ == "__main__":
    sys.exit(main())
