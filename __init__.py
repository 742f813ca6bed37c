"""resvision: fine-tune, evaluate and deploy ResNet models for classification, detection, segmentation and face
recognition.

>>> import resvision as rv
>>> cfg = rv.load_config("classification", ["model.backbone.name=resnet50"])
>>> metrics = rv.Trainer(rv.build_task(cfg)).fit()
>>> info = rv.export(cfg.run_dir / "checkpoints" / "best.pt", quantize="int8")   # ONNX + parity + INT8
>>> predictor = rv.load(cfg.run_dir / "checkpoints" / "best.pt")                  # or the .onnx file
>>> predictor(["photo.jpg", numpy_rgb_array])                                      # one dict per image

The names below are imported on first use (PEP 562), so ``import resvision`` and the command line's ``--help`` do
not pay for torch and every task before they need them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["Backbone", "FeatureSpec", "build_backbone", "list_backbones", "register_backbone"], ".backbone"),
    **dict.fromkeys(["Config", "FinetuneConfig", "OptimConfig", "save_config"], ".config"),
    "export": ".predictor",  # deploy/ imports no task: the checkpoint's task is resolved there, then handed over
    **dict.fromkeys(["Callback", "Trainer", "apply_finetune_policy", "build_optimizer"], ".engine"),
    "UserError": ".errors",
    **dict.fromkeys(["Predictor", "load"], ".predictor"),
    **dict.fromkeys(["DataInfo", "Task", "build_task", "create_model", "list_tasks", "load_config", "register_task"],
                    ".tasks"),
}
_SUBPACKAGES = ("backbone", "config", "datasets", "deploy", "engine", "errors", "predictor", "reports", "tasks")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'resvision' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBPACKAGES])
