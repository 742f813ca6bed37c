"""Joint runs: one backbone shared by several tasks' heads (``task: a+b``)."""

from .task import (JointBatch, JointDataInfo, JointEvaluator, JointModel, JointResult, JointTask, extract_head,
                   joint_task_class)

__all__ = ["JointBatch", "JointDataInfo", "JointEvaluator", "JointModel", "JointResult", "JointTask", "extract_head",
           "joint_task_class"]
