"""resvision: fine-tune, evaluate and deploy ResNet models for classification, detection, segmentation and face
recognition.

>>> import resvision as rv
>>> cfg = rv.load_config("classification", ["model.backbone.name=resnet50"])
>>> metrics = rv.Trainer(rv.build_task(cfg)).fit()
>>> info = rv.export(cfg.run_dir / "checkpoints" / "best.pt", quantize="int8")   # ONNX + parity + INT8
"""

from .backbone import Backbone, FeatureSpec, build_backbone, list_backbones, register_backbone
from .config import Config, load_config, save_config
from .deploy import export
from .engine import Callback, Trainer
from .errors import UserError
from .tasks import DataInfo, Task, build_task, list_tasks, register_task

__version__ = "0.1.0"

__all__ = [
    "Backbone", "Callback", "Config", "DataInfo", "FeatureSpec", "Task", "Trainer", "UserError", "build_backbone", "build_task", "export",
    "list_backbones", "list_tasks", "load_config", "register_backbone", "register_task", "save_config",
]
