"""Deploying a trained model: ONNX export with parity checks, ONNX Runtime inference, INT8 quantization.

>>> import resvision as rv
>>> info = rv.export("runs/x/checkpoints/best.pt")            # -> runs/x/export/best.onnx (+ .json)
>>> predictor = rv.load(info["path"])                          # ONNX Runtime, called like the torch model
>>> rv.deploy.OnnxRunner(info["path"]).run(images)             # or the bare file: named numpy outputs

This package imports no task: ``rv.export`` (``predictor.export``) rebuilds the checkpoint's task and model and
hands them to :func:`export_model`; a task's ``onnx_model(runner)`` wraps :class:`OnnxRunner` for its own calls.
"""

from .export import DEFAULT_OPSET, export_model
from .runtime import OnnxModel, OnnxRunner, read_onnx_info

__all__ = ["DEFAULT_OPSET", "OnnxModel", "OnnxRunner", "export_model", "read_onnx_info"]
