"""INT8 static quantization of an exported file with ONNX Runtime, and what it costs and buys, measured.

ONNX Runtime's ``quantize_static`` in QDQ format: per-channel int8 weights, uint8 activations whose ranges
come from calibration on training images (MinMax). Dynamic quantization only quantizes MatMul / Gemm
weights and leaves convolutions in fp32, which is where a ResNet spends its time, so it is not offered.

``quantize_int8`` writes ``<file>.int8.onnx`` and measures, in the same run:
- the validation metrics of the fp32 and the INT8 file through the same ``eval`` path (``Trainer.evaluate``
  with the ONNX Runtime engine), and their difference;
- images/s of both files on the same validation batch, in alternating timed windows (median).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError
from .runtime import OnnxRunner, import_onnx, import_onnxruntime, read_onnx_info, write_metadata

__all__ = ["compare_speed", "evaluate_onnx", "quantize_int8", "static_int8"]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input arrays."""

    def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
        self.name, self.arrays, self.position = name, arrays, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.arrays):
            return None
        self.position += 1
        return {self.name: self.arrays[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def static_int8(src: str | Path, dst: str | Path, calibration: list[np.ndarray], scopes: Sequence[str] = ()) -> None:
    """``src`` -> ``dst``: ONNX Runtime static quantization with this project's settings (QDQ, per-channel int8
    weights, uint8 activations, MinMax ranges over ``calibration``, the graph input's arrays), of the nodes whose
    names start with one of ``scopes`` (empty: every node of a type ONNX Runtime quantizes)."""
    onnx = import_onnx()
    import_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    prepared = dst.with_name(f".{dst.name}.prep.onnx")
    try:
        # shape inference + graph cleanup first, as ONNX Runtime recommends before static quantization
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        names = [n.name for n in onnx.load(str(prepared)).graph.node]
        chosen = [n for n in names if n.startswith(tuple(scopes))] if scopes else None
        if chosen == []:
            raise UserError(f"no node of {src.name} lies under the INT8 scopes {list(scopes)}")
        quantize_static(str(prepared), str(dst), _Calibration("images", calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=chosen)
    finally:
        prepared.unlink(missing_ok=True)


def quantize_int8(path: str | Path, task, cfg, state: dict[str, Any], model: torch.nn.Module,
                  examples: list[tuple[torch.Tensor, ...]], calibration_batches: Sequence[Any],
                  quiet: bool = False) -> dict[str, Any]:
    """Quantize the exported ``path`` into ``<stem>.int8.onnx``, calibrated on ``calibration_batches`` (batches of
    the task's training images, as ``export.validation_batches(..., split="train")`` reads them); returns (and
    stores beside it) the accuracy and speed of both files."""
    if not calibration_batches:
        raise UserError("INT8 calibration needs at least one batch of training images")
    path = Path(path)
    out = path.with_name(path.stem + ".int8.onnx")
    calibration = [np.ascontiguousarray(args[0].float().numpy())
                   for batch in calibration_batches for args in task.export_examples(batch, model)]
    partial = path.with_name(f".{out.name}.partial")
    static_int8(path, partial, calibration, task.int8_scopes)
    partial.replace(out)
    info = read_onnx_info(path)
    fp32_metrics = evaluate_onnx(path, task, cfg, state, path.parent / f"{path.stem}-eval" / "fp32")
    int8_metrics = evaluate_onnx(out, task, cfg, state, path.parent / f"{path.stem}-eval" / "int8")
    speed = compare_speed(OnnxRunner(path), OnnxRunner(out), examples[0])
    metrics = [k for k in task.int8_metrics if k in fp32_metrics and k in int8_metrics]
    report = {
        "path": str(out), "calibration_images": sum(len(a) if task.onnx_batched else 1 for a in calibration),
        "method": "ONNX Runtime quantize_static, QDQ, per-channel int8 weights, uint8 activations, MinMax calibration "
                  "on training images",
        "scopes": list(task.int8_scopes),  # empty: every node of a type ONNX Runtime quantizes
        "fp32": {k: fp32_metrics[k] for k in metrics}, "int8": {k: int8_metrics[k] for k in metrics},
        "delta": {k: int8_metrics[k] - fp32_metrics[k] for k in metrics}, "speed": speed,
    }
    int8_info = dict(info, quantization=report, source=info["source"], parity=None)
    write_metadata(out, int8_info)
    if not quiet:
        deltas = ", ".join(f"{k} {report['fp32'][k]:.4f} -> {report['int8'][k]:.4f} ({report['delta'][k]:+.4f})"
                           for k in metrics)
        print(f"INT8 {out.name}: {deltas}; {speed['int8_images_per_s']:.1f} vs {speed['fp32_images_per_s']:.1f} "
              f"images/s fp32 ({speed['speedup']:.2f}x)")
    return report


def evaluate_onnx(path: str | Path, task, cfg, state: dict[str, Any], out_dir: Path) -> dict[str, float]:
    """The validation metrics of an exported file through ``eval``'s own path (ONNX Runtime engine): a new task of
    ``task``'s class on ``cfg`` writing into ``out_dir``."""
    from ..engine import Trainer

    cfg = copy.deepcopy(cfg)
    cfg.output = str(out_dir)
    evaluating = type(task)(cfg)
    runtime = evaluating.onnx_model(OnnxRunner(path))
    return Trainer(evaluating).evaluate(path, state, runtime=runtime)


def compare_speed(fp32: OnnxRunner, int8: OnnxRunner, args: tuple[torch.Tensor, ...], windows: int = 5,
                  min_seconds: float = 0.3) -> dict[str, float]:
    """Images/s of two sessions on the same input: alternating windows (each at least ``min_seconds``),
    median per session, so both see the same machine load."""
    images = int(args[0].shape[0]) if args[0].ndim == 4 else 1
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    for runner in (fp32, int8):
        runner.run(*args)  # warm-up: ONNX Runtime allocates on the first call
    for _ in range(windows):
        for name, runner in (("fp32", fp32), ("int8", int8)):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < min_seconds or count == 0:
                runner.run(*args)
                count += 1
            rates[name].append(count * images / (time.perf_counter() - started))
    fp, i8 = statistics.median(rates["fp32"]), statistics.median(rates["int8"])
    return {"fp32_images_per_s": fp, "int8_images_per_s": i8, "speedup": i8 / fp, "windows": windows,
            "batch": images}
