"""resvision: fine-tune, evaluate and deploy ResNet models for classification, detection, segmentation and face
recognition.

>>> import resvision as rv
>>> run = rv.train("classification", ["model.backbone.name=resnet50"])     # run.run_dir, run.metrics
>>> best = run.run_dir / "checkpoints" / "best.pt"
>>> rv.evaluate(best)["accuracy"]                                          # report in <run>/eval/<timestamp>/
>>> info = rv.export(best, quantize="int8")                                 # ONNX + parity + INT8
>>> predictor = rv.load(best)                                               # or the .onnx file
>>> result = predictor(["photo.jpg", numpy_rgb_array])[0]                    # one result per image
>>> result.label, result.score, result.plot()

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
    **dict.fromkeys(["RunResult", "evaluate", "train"], ".runs"),
    **dict.fromkeys(["DataInfo", "Task", "build_task", "create_model", "list_tasks", "load_config", "register_task"],
                    ".tasks"),
    **dict.fromkeys(["list_heads", "register_head"], ".tasks.heads"),
    "extract_head": ".tasks.joint",
}
_SUBPACKAGES = ("backbone", "config", "datasets", "deploy", "engine", "errors", "predictor", "reports", "runs", "tasks")

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
