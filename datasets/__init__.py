"""Dataset adapters per format, built-in demo data and augmentation pipelines.

Every adapter decodes pixels with :func:`read_image` (``HxWx3`` uint8 RGB) and reports bad input as a
one-line :class:`~resvision.errors.DataError`.
"""

from resvision.datasets.classification import (
    IMAGE_EXTENSIONS,
    ClassificationDataset,
    build_classification_datasets,
    csv_samples,
    image_folder_samples,
    split_samples,
)
from resvision.datasets.demo import default_cache_dir, digits_folder
from resvision.datasets.image_io import BadImageError, as_rgb, image_label, read_image
from resvision.datasets.transforms import (
    DEFAULT_CROP_PCT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AlbumentationsTransform,
    SeedableTransform,
    classification_transforms,
)

__all__ = [
    "DEFAULT_CROP_PCT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "AlbumentationsTransform",
    "BadImageError",
    "ClassificationDataset",
    "SeedableTransform",
    "build_classification_datasets",
    "classification_transforms",
    "csv_samples",
    "default_cache_dir",
    "digits_folder",
    "image_folder_samples",
    "as_rgb",
    "image_label",
    "read_image",
    "split_samples",
]

# Detection data (COCO / VOC adapters, the built-in shapes demo, box-aware transforms).
from resvision.datasets.coco import load_coco  # noqa: E402
from resvision.datasets.detection import (  # noqa: E402
    DetectionData,
    DetectionDataset,
    DetectionSample,
    detection_collate,
)
from resvision.datasets.detection_transforms import DetectionAlbumentations, detection_transforms  # noqa: E402
from resvision.datasets.shapes import SHAPES_CLASSES, load_shapes, shapes_dataset  # noqa: E402
from resvision.datasets.voc import VOC_CLASSES, difficult_as_crowd, load_voc  # noqa: E402

__all__ += [
    "SHAPES_CLASSES",
    "VOC_CLASSES",
    "DetectionAlbumentations",
    "DetectionData",
    "DetectionDataset",
    "DetectionSample",
    "detection_collate",
    "detection_transforms",
    "difficult_as_crowd",
    "load_coco",
    "load_shapes",
    "load_voc",
    "shapes_dataset",
]

# Segmentation data (VOC / mask-folder / COCO adapters, mask reading and writing, mask-aware transforms).
from resvision.datasets.coco import load_coco_segmentation  # noqa: E402
from resvision.datasets.masks import read_mask, voc_colormap, write_mask  # noqa: E402
from resvision.datasets.segmentation import (  # noqa: E402
    SegmentationData,
    SegmentationDataset,
    SegmentationSample,
    load_mask_folders,
    verify_segmentation,
)
from resvision.datasets.segmentation_transforms import segmentation_transforms  # noqa: E402
from resvision.datasets.shapes import (  # noqa: E402
    SHAPES_SEG_CLASSES,
    load_shapes_segmentation,
    shapes_segmentation_dataset,
)
from resvision.datasets.voc import VOC_SEG_CLASSES, load_voc_segmentation  # noqa: E402

__all__ += [
    "SHAPES_SEG_CLASSES",
    "VOC_SEG_CLASSES",
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationSample",
    "load_coco_segmentation",
    "load_mask_folders",
    "load_shapes_segmentation",
    "load_voc_segmentation",
    "read_mask",
    "segmentation_transforms",
    "shapes_segmentation_dataset",
    "verify_segmentation",
    "voc_colormap",
    "write_mask",
]

# Face data (LFW pairs.txt, insightface .bin, the evaluation set, the built-in synthetic people).
from resvision.datasets.face import FaceEvalSet, identity_folder_samples  # noqa: E402
from resvision.datasets.face_pairs import (  # noqa: E402
    FacePair,
    read_pairs,
    read_verification_bin,
    write_verification_bin,
)
from resvision.datasets.synthetic_faces import synthetic_faces_dataset  # noqa: E402
from resvision.datasets.transforms import face_transforms  # noqa: E402

__all__ += [
    "FaceEvalSet",
    "FacePair",
    "face_transforms",
    "identity_folder_samples",
    "read_pairs",
    "read_verification_bin",
    "synthetic_faces_dataset",
    "write_verification_bin",
]
