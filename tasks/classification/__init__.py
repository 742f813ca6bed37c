"""Image classification: backbone + linear head, top-k / per-class metrics, confusion matrix, Grad-CAM."""

from .evaluator import ClassificationEvaluator
from .gradcam import grad_cam
from .model import ImageClassifier
from .task import ClassificationDataConfig, ClassificationModelConfig, ClassificationTask

TASK = ClassificationTask

__all__ = [
    "ClassificationDataConfig", "ClassificationEvaluator", "ClassificationModelConfig", "ClassificationTask",
    "ImageClassifier", "TASK", "grad_cam",
]
