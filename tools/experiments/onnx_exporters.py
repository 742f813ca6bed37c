#!/usr/bin/env python
"""torch's two ONNX exporters on a checkpoint: export time, success and parity, measured the way ``export`` does.

    .venv/bin/pip install onnxscript   # the dynamo exporter needs it; resvision itself does not
    .venv/bin/python tools/experiments/onnx_exporters.py --checkpoint runs/<task>/.../best.pt [--rounds 3]

The checkpoint's export module and its validation examples are built exactly as ``deploy.export.export`` builds
them; the module is then exported alternately (one torch thread) by

- ``torchscript``: ``deploy.export.export_to_onnx`` itself (what ``export`` runs);
- ``dynamo``: ``torch.onnx.export(..., dynamo=True)`` with the same names, opset and ``dynamic_axes`` (which the
  dynamo exporter translates into ``dynamic_shapes``), weights inside the file (``external_data=False``),

and each file that exports is scored by the task's own ``parity_report`` on every example. Prints one line per
exporter: median export seconds, the dynamo/TorchScript ratio, the opset written, and the parity verdict or the
export's error.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from resvision.deploy import OnnxRunner
from resvision.deploy.export import DEFAULT_OPSET, export_to_onnx, parity_report, validation_batches
from resvision.predictor import load_for_export


def export_dynamo(module, example, path: Path, task) -> list[str]:
    names = list(task.onnx_output_names("none"))
    batch = {0: "batch"} if task.onnx_batched else {}
    axes = {"images": {**batch, **task.onnx_dynamic_axes}, **{n: batch or {0: "detections"} for n in names}}
    torch.onnx.export(module, example, str(path), dynamo=True, opset_version=DEFAULT_OPSET, input_names=["images"],
                      output_names=names, dynamic_axes=axes, external_data=False)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    state, _, task, _, model = load_for_export(args.checkpoint)
    examples = [a for b in validation_batches(task, 16, meta=state.get("meta")) for a in task.export_examples(b, model)]
    module = task.export_module(model, "none").eval()
    exporters = {"torchscript": lambda m, e, p: export_to_onnx(m, e, p, task),
                 "dynamo": lambda m, e, p: export_dynamo(m, e, p, task)}
    seconds: dict[str, list[float]] = {name: [] for name in exporters}
    outcome: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, run in exporters.items():
                path = Path(tmp) / f"{name}.onnx"
                started = time.perf_counter()
                try:
                    names = run(module, examples[0], path)
                except Exception as err:  # noqa: BLE001  reported, not raised: the point is to see it
                    root = err
                    while root.__cause__ is not None:  # torch.export's own error wraps what stopped it
                        root = root.__cause__
                    outcome[name] = f"export failed: {type(root).__name__}: {str(root).strip().splitlines()[0][:200]}"
                    continue
                seconds[name].append(time.perf_counter() - started)
                if round_ == 0:
                    import onnx

                    opset = {o.domain or "ai.onnx": o.version for o in onnx.load(str(path)).opset_import}["ai.onnx"]
                    report = parity_report(task, module, OnnxRunner(path), examples, names)
                    checks = ", ".join(f"{k}={c['value']:.3g} ({'ok' if c['ok'] else 'FAILED'})"
                                       for k, c in report["checks"].items())
                    outcome[name] = f"opset {opset}; parity on {report['images']} images: {checks}"
    base = statistics.median(seconds["torchscript"]) if seconds["torchscript"] else float("nan")
    print(f"{task.name}, {args.checkpoint}, torch {torch.__version__}, {args.rounds} rounds alternating, 1 thread")
    for name in exporters:
        median = statistics.median(seconds[name]) if seconds[name] else None
        timing = f"{median:7.2f} s  ({median / base:5.1f}x TorchScript)" if median else f"{'—':>29}"
        print(f"  {name:<11} {timing}  {outcome[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
