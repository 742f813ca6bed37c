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
from resvision.datasets.image_io import BadImageError, read_image
from resvision.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AlbumentationsTransform,
    SeedableTransform,
    classification_transforms,
)

__all__ = [
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
    "read_image",
    "split_samples",
]
