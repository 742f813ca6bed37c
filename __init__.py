"""resvision: fine-tune, evaluate and deploy ResNet models for classification, detection, segmentation and face
recognition.

>>> import resvision as rv
>>> cfg = rv.load_config("classification", ["model.backbone.name=resnet50"])
>>> metrics = rv.Trainer(rv.build_task(cfg)).fit()
>>> info = rv.export(cfg.run_dir / "checkpoints" / "best.pt", quantize="int8")   # ONNX + parity + INT8
>>> predictor = rv.load(cfg.run_dir / "checkpoints" / "best.pt")                  # or the .onnx file
>>> predictor(["photo.jpg", numpy_rgb_array])                                      # one dict per image
"""

from .backbone import Backbone, FeatureSpec, build_backbone, list_backbones, register_backbone
from .config import Config, FinetuneConfig, OptimConfig, load_config, save_config
from .deploy import export
from .engine import Callback, Trainer, apply_finetune_policy, build_optimizer
from .errors import UserError
from .predictor import Predictor, load
from .tasks import DataInfo, Task, build_task, create_model, list_tasks, register_task

__version__ = "0.1.0"

__all__ = [
    "Backbone", "Callback", "Config", "DataInfo", "FeatureSpec", "FinetuneConfig", "OptimConfig", "Predictor", "Task",
    "Trainer", "UserError", "apply_finetune_policy", "build_backbone", "build_optimizer", "build_task", "create_model",
    "export", "list_backbones", "list_tasks", "load", "load_config",
    "register_backbone", "register_task", "save_config",
]
