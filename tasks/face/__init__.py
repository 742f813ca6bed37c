"""Face recognition: registry backbone -> embedding -> ArcFace / CosFace / combined margin head, trained on
identity folders; evaluated with the LFW 10-fold protocol on pairs.txt or insightface .bin files and rank-1
identification; MTCNN alignment (``align.py``, ``tools/align_faces.py``)."""

from .evaluator import FaceEvaluator
from .model import FaceModel, flip_embeddings
from .task import FaceDataConfig, FaceModelConfig, FaceTask

TASK = FaceTask

__all__ = ["FaceDataConfig", "FaceEvaluator", "FaceModel", "FaceModelConfig", "FaceTask", "TASK", "flip_embeddings"]
