"""Semantic segmentation: segmentation-models-pytorch FPN / U-Net decoders on any registry backbone, VOC /
mask-folder / COCO data, confusion-matrix metrics (mIoU, Dice, pixel and mean accuracy, fwIoU)."""

from .evaluator import SegmentationEvaluator
from .model import DecoderFeatures, SegmentationLoss, SegmentationModel, infer_logits, sliding_window_logits
from .task import SegmentationDataConfig, SegmentationModelConfig, SegmentationTask

TASK = SegmentationTask

__all__ = [
    "DecoderFeatures", "SegmentationDataConfig", "SegmentationEvaluator", "SegmentationLoss", "SegmentationModel",
    "SegmentationModelConfig", "SegmentationTask", "TASK", "infer_logits", "sliding_window_logits",
]
