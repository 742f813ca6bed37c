"""Deploying a trained model: ONNX export with parity checks, ONNX Runtime inference, INT8 quantization.

>>> import resvision as rv
>>> info = rv.export("runs/x/checkpoints/best.pt")            # -> runs/x/export/best.onnx (+ .json)
>>> predictor = rv.load(info["path"])                          # ONNX Runtime, called like the torch model
>>> rv.deploy.OnnxRunner(info["path"]).run(images)             # or the bare file: named numpy outputs
"""

from .export import DEFAULT_OPSET, export
from .runtime import OnnxModel, OnnxRunner, read_onnx_info

__all__ = ["DEFAULT_OPSET", "OnnxModel", "OnnxRunner", "export", "read_onnx_info"]
