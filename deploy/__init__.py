"""Deploying a trained model: ONNX export with parity checks, ONNX Runtime inference, INT8 quantization.

>>> import resvision as rv
>>> info = rv.export("runs/x/checkpoints/best.pt")            # -> runs/x/export/best.onnx (+ .json)
>>> model = rv.deploy.load_onnx(info["path"])                  # called like the task's torch model
"""

from .export import DEFAULT_OPSET, export
from .runtime import OnnxModel, OnnxRunner, read_onnx_info

__all__ = ["DEFAULT_OPSET", "OnnxModel", "OnnxRunner", "export", "read_onnx_info"]
