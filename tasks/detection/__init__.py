"""Object detection: Faster R-CNN + FPN (torchvision's parts) on any registry backbone, COCO and VOC
data, COCO (pycocotools) and VOC07/VOC12 metrics in one report."""

from .evaluator import DetectionEvaluator
from .model import DetectorSettings, FPNBackbone, build_faster_rcnn
from .task import DetectionDataConfig, DetectionModelConfig, DetectionTask

TASK = DetectionTask

__all__ = [
    "DetectionDataConfig", "DetectionEvaluator", "DetectionModelConfig", "DetectionTask", "DetectorSettings",
    "FPNBackbone", "TASK", "build_faster_rcnn",
]
