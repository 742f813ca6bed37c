#!/usr/bin/env python
"""Which part of a Faster R-CNN to run in INT8: accuracy and speed of each choice, measured on one checkpoint.

    .venv/bin/python tools/experiments/int8_detection.py --checkpoint runs/detection/.../best.pt [--output DIR]

Exports the checkpoint once (``export``, float32, its parity check), then quantizes that file with
``deploy.quantize.static_int8`` (the settings ``export --quantize int8`` uses: QDQ, per-channel int8 weights, uint8
activations, MinMax on the same training images) restricted to each set of graph scopes below, and for every file
measures COCO AP / AP50 on the validation split through ``eval``'s own path and images/s against the float32 file
(alternating windows, one validation image at a time, as the graph takes it):

- ``all``: every node of a type ONNX Runtime quantizes (the behaviour before the detection task declared its
  scopes), box arithmetic, concatenations and resizes included;
- ``backbone+fpn``: ``/model/backbone/``;
- ``+rpn_head``: and the RPN head's convolutions;
- ``+box_mlp``: and the box head's two fully connected layers (fc6, fc7), the class / box predictors kept float32;
- ``+rpn_head+box_mlp``: both.

Each choice is measured in a child process: ONNX Runtime crashed (segmentation fault) while running the ``all``
file of a trained demo detector, and such a file is reported as crashing instead of ending the script.
Prints a Markdown table and writes it with the figures as JSON into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from resvision import export
from resvision.deploy import OnnxRunner
from resvision.deploy.export import validation_batches
from resvision.deploy.quantize import compare_speed, evaluate_onnx, static_int8
from resvision.predictor import load_for_export

BACKBONE, RPN_HEAD, BOX_MLP = "/model/backbone/", "/model/rpn/head/", "/model/roi_heads/box_head/"
CHOICES = {"all": (), "backbone+fpn": (BACKBONE,), "+rpn_head": (BACKBONE, RPN_HEAD), "+box_mlp": (BACKBONE, BOX_MLP),
           "+rpn_head+box_mlp": (BACKBONE, RPN_HEAD, BOX_MLP)}


def quantized_layers(path: Path) -> int:
    """Convolutions and fully connected layers of ``path`` whose weights are INT8 (fed by a DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return sum(producer.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type in ("Conv", "Gemm"))


def measure(args: argparse.Namespace, name: str) -> dict:
    """One choice (run as a child process): quantize, evaluate, time; the figures as a dict."""
    fp32 = args.output / "fp32.onnx"
    state, cfg, task, _, model = load_for_export(args.checkpoint)
    if name == "fp32":
        metrics = evaluate_onnx(fp32, task, cfg, state, args.output / "eval-fp32")
        return {"bbox_AP": metrics["bbox_AP"], "bbox_AP50": metrics["bbox_AP50"], "speedup": 1.0, "int8_layers": 0}
    calibration = [np.ascontiguousarray(a[0].numpy()) for batch in
                   validation_batches(task, args.calibration_images, split="train", meta=state.get("meta"))
                   for a in task.export_examples(batch, model)]
    timing = [a for batch in validation_batches(task, 8, meta=state.get("meta")) for a in task.export_examples(batch, model)]
    path = args.output / f"int8-{name}.onnx"
    static_int8(fp32, path, calibration, CHOICES[name])
    metrics = evaluate_onnx(path, task, cfg, state, args.output / f"eval-{name}")
    speeds = [compare_speed(OnnxRunner(fp32), OnnxRunner(path), image)["speedup"] for image in timing]
    return {"bbox_AP": metrics["bbox_AP"], "bbox_AP50": metrics["bbox_AP50"], "speedup": float(np.median(speeds)),
            "int8_layers": quantized_layers(path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--output", type=Path, default=Path("runs/int8_detection"))
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--choice", help=argparse.SUPPRESS)  # internal: measure one choice in this process
    args = parser.parse_args(argv)
    if args.choice:
        (args.output / f"{args.choice}.json").write_text(json.dumps(measure(args, args.choice)))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    export(args.checkpoint, args.output / "fp32.onnx", parity_images=4, quiet=True)
    rows = {}
    for name in ["fp32", *CHOICES]:
        child = subprocess.run([sys.executable, __file__, "--checkpoint", str(args.checkpoint), "--output",
                                str(args.output), "--calibration-images", str(args.calibration_images), "--choice", name])
        if child.returncode < 0:
            rows[name] = {"failure": f"ONNX Runtime crashed ({signal.Signals(-child.returncode).name})"}
        elif child.returncode:
            rows[name] = {"failure": f"exit status {child.returncode}"}
        else:
            rows[name] = json.loads((args.output / f"{name}.json").read_text())
        print(name, rows[name], flush=True)
    base = rows["fp32"]
    if "failure" in base:
        raise SystemExit(f"the fp32 file could not be evaluated: {base['failure']}")
    lines = ["| graph in INT8 | INT8 conv / fc layers | bbox_AP | ΔAP (points) | bbox_AP50 | ΔAP50 | speed ÷ fp32 file |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "failure" in r:
            lines.append(f"| {name} | | {r['failure']} | | | | |")
            continue
        lines.append(f"| {name} | {r['int8_layers']} | {r['bbox_AP']:.3f} | {100 * (r['bbox_AP'] - base['bbox_AP']):+.1f} | "
                     f"{r['bbox_AP50']:.3f} | {100 * (r['bbox_AP50'] - base['bbox_AP50']):+.1f} | {r['speedup']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
