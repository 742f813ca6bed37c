"""Image classification data: sample listing (ImageFolder tree, CSV), splitting, and the Dataset.

A *sample list* is ``list[tuple[str, int]]`` of ``(image path, class index)`` plus the class names
it indexes into; every format is reduced to that, so the Dataset, splitting and the trainer never
see a format. All user-facing failures are one-line :class:`~resvision.errors.DataError`\\ s that name
the file or folder at fault.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from resvision.datasets.demo import digits_folder
from resvision.datasets.image_io import BadImageError, check_in_threads, read_image
from resvision.datasets.transforms import SeededAugmentation, classification_transforms
from resvision.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassificationDataset",
    "Sample",
    "build_classification_datasets",
    "csv_samples",
    "image_folder_samples",
    "images_under",
    "split_samples",
]

log = logging.getLogger("resvision")

Sample = tuple[str, int]
Transform = Callable[[np.ndarray], Any]

# torchvision's ImageFolder IMG_EXTENSIONS, matched case-insensitively (cameras write ".JPG").
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_BAD_IMAGE_POLICIES = ("skip", "error")
_NAMES_IN_WARNING = 5


class ClassificationDataset(SeededAugmentation, Dataset):
    """``(image, class index)`` pairs decoded with :func:`read_image`, augmented reproducibly.

    Augmentation randomness is a pure function of ``(seed, epoch, index)``: before each sample the
    transform is reseeded (if it has ``set_random_seed``, as :func:`classification_transforms`
    pipelines do), so results do not depend on the number of DataLoader workers or on where
    training was resumed. Call :meth:`set_epoch` before creating each epoch's DataLoader iterator
    (workers copy the dataset when the iterator starts; with ``persistent_workers=True`` they keep
    the epoch of their first copy).

    Args:
        samples: ``(path, class index)`` pairs.
        classes: Class names; ``classes[i]`` is the name of index ``i``.
        transform: ``(H, W, 3) uint8 -> (3, H', W') float32 tensor``; ``None`` returns the raw array.
        on_bad_image: ``"skip"`` logs one warning per bad file and returns the next readable sample
            (``(i + k) % n``, deterministic); ``"error"`` raises :class:`BadImageError`.
        seed: Base seed of the augmentation randomness.

    Attributes:
        bad_images: Paths found unreadable so far *in this process* (with ``num_workers > 0`` each
            worker fills its own copy; use :meth:`verify` for a complete list up front).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        transform: Transform | None = None,
        on_bad_image: str = "skip",
        seed: int = 0,
    ) -> None:
        if on_bad_image not in _BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {_BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.samples: list[Sample] = [(str(path), int(target)) for path, target in samples]
        self.classes: list[str] = list(classes)
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.seed = int(seed)
        self.epoch = 0
        self.bad_images: set[str] = set()

    @property
    def targets(self) -> list[int]:
        """Class index of every sample, in order (a property so it follows :meth:`verify`)."""
        return [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        """Return ``(image, class index)``.

        The image is the transform's output, typically a ``(3, H, W)`` float32 tensor, or the
        ``(H, W, 3)`` uint8 RGB array when there is no transform.
        """
        if index < 0:
            index += len(self.samples)
        image, target = self._load(index)
        if self.transform is None:
            return image, target
        self.reseed(index)
        return self.transform(image), target

    def _load(self, index: int) -> tuple[np.ndarray, int]:
        """Decode sample ``index``, or (skip mode) the first readable one after it, wrapping around."""
        n = len(self.samples)
        for k in range(n):
            path, target = self.samples[(index + k) % n]
            try:
                return read_image(path), target
            except BadImageError as exc:
                if self.on_bad_image == "error":
                    raise
                if path not in self.bad_images:
                    self.bad_images.add(path)
                    log.warning("skipping unreadable image: %s", exc)
        raise DataError(f"none of the {n} images in this dataset can be read (first: {self.samples[0][0]})")

    def verify(self, num_threads: int | None = None, progress: bool = True) -> list[str]:
        """Decode every image now and drop the unreadable ones from :attr:`samples`.

        Catches corrupt files before training instead of mid-epoch. Decoding runs in threads
        (Pillow releases the GIL while decoding).

        Args:
            num_threads: Decoder threads; default ``min(8, os.cpu_count())``.
            progress: Show a progress bar (on a terminal only).

        Returns:
            The dropped paths, in sample order (also added to :attr:`bad_images`).

        Raises:
            DataError: No image is readable.
        """
        paths = [path for path, _ in self.samples]
        readable = check_in_threads(lambda i: _is_readable(paths[i]), len(paths), "verify images", num_threads,
                                    progress)
        dropped = [path for path, ok in zip(paths, readable) if not ok]
        if dropped:
            self.samples = [sample for sample, ok in zip(self.samples, readable) if ok]
            self.bad_images.update(dropped)
            shown = ", ".join(dropped[:_NAMES_IN_WARNING]) + (", ..." if len(dropped) > _NAMES_IN_WARNING else "")
            log.warning("dropped %d unreadable image(s) of %d: %s", len(dropped), len(paths), shown)
        if paths and not self.samples:
            raise DataError(f"none of the {len(paths)} images can be read (first: {paths[0]})")
        return dropped


def _is_readable(path: str) -> bool:
    try:
        read_image(path)
    except BadImageError:
        return False
    return True


# --------------------------------------------------------------------------------------------- listing


def image_folder_samples(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Sample], list[str]]:
    """List a torchvision ``ImageFolder`` tree: ``root/<class>/**/<image>``.

    Images are files with an extension in :data:`IMAGE_EXTENSIONS` (any case), found recursively
    inside each class folder; hidden files and folders (``.DS_Store``, ``._x.jpg``,
    ``.ipynb_checkpoints``) are ignored. Samples are ordered by class, then by path.

    Args:
        root: The folder holding one sub-folder per class.
        classes: Class names and their order (e.g. the training set's, for a validation folder).
            Default: every class folder, sorted by name. Folders not listed are ignored with a warning.

    Returns:
        ``(samples, classes)``.

    Raises:
        DataError: ``root`` is missing, has no class folders, a listed class has no folder, or a
            class folder has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected the layout {root}/<class>/<image>)")
    if classes is None:
        classes = folders
    else:
        classes = list(classes)
        missing = [name for name in classes if name not in folders]
        if missing:
            raise DataError(f"{root}: no folder for class {missing[0]!r} ({len(missing)} of {len(classes)} missing)")
        ignored = sorted(set(folders) - set(classes))
        if ignored:
            log.warning("%s: ignoring %d folder(s) that are not classes: %s", root, len(ignored), ", ".join(ignored))
    samples: list[Sample] = []
    for index, name in enumerate(classes):
        images = images_under(root / name)
        if not images:
            raise DataError(f"class folder has no images ({', '.join(IMAGE_EXTENSIONS)}): {root / name}")
        samples.extend((path, index) for path in images)
    return samples, list(classes)


def images_under(folder: Path) -> list[str]:
    """Image files below ``folder`` (recursive, following links as ImageFolder does), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def csv_samples(
    csv_path: str | Path,
    classes: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> tuple[list[Sample], list[str]]:
    """List samples from a CSV file with a header containing ``path`` and ``label`` columns.

    ``label`` is a class *name*. Other columns are ignored; a UTF-8 byte-order mark (Excel) is
    accepted. Relative paths are resolved against ``root``, else the CSV file's own folder. Only
    the first row's file is checked for existence (a wrong ``root`` fails at once; checking every
    row would stat millions of files); unreadable images are handled by ``on_bad_image`` later.

    Args:
        csv_path: The CSV file.
        classes: Class names and order. Default: the distinct labels, sorted.
        root: Base folder for relative paths.

    Returns:
        ``(samples, classes)``, samples in file order.

    Raises:
        DataError: Missing file, missing ``path``/``label`` columns, no rows, an empty cell, a
            label not in ``classes`` (names file, line and label), or a first image that does not exist.
    """
    csv_path = Path(csv_path)
    rows = _read_csv_rows(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    if classes is None:
        classes = sorted({label for _, _, label in rows})
    class_index = {name: i for i, name in enumerate(classes)}
    samples: list[Sample] = []
    for line, path, label in rows:
        if label not in class_index:
            raise DataError(
                f"{csv_path}:{line}: label {label!r} is not one of the {len(class_index)} classes {_preview(classes)}"
            )
        samples.append((str(base / path), class_index[label]))  # an absolute `path` ignores `base`
    if not Path(samples[0][0]).exists():
        raise DataError(
            f"{csv_path}:{rows[0][0]}: image not found: {samples[0][0]} (relative paths resolve against {base})"
        )
    return samples, list(classes)


def _read_csv_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, label)`` for every data row, cells stripped of surrounding spaces."""
    try:
        handle = csv_path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {csv_path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a CSV file, got a directory: {csv_path}") from None
    with handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        missing = [col for col in ("path", "label") if col not in header]
        if missing:
            raise DataError(f"{csv_path}:1: header must contain 'path' and 'label' columns, got {header}")
        path_col, label_col = header.index("path"), header.index("label")
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            path, label = _cell(cells, path_col), _cell(cells, label_col)
            if not path or not label:
                raise DataError(f"{csv_path}:{reader.line_num}: empty 'path' or 'label' cell")
            rows.append((reader.line_num, path, label))
    if not rows:
        raise DataError(f"{csv_path}: no data rows after the header")
    return rows


def _cell(cells: list[str], column: int) -> str:
    return cells[column].strip() if column < len(cells) else ""


def _preview(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


# ------------------------------------------------------------------------------------------- splitting


def split_samples(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split samples into train / val, stratified by class (each class keeps its share).

    Deterministic for a given ``seed``; both parts keep the input order.

    Args:
        samples: ``(path, class index)`` pairs.
        val_fraction: Fraction of samples for validation, in ``(0, 1)``.
        seed: ``random_state`` of scikit-learn's ``train_test_split``.

    Returns:
        ``(train, val)``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``.
        DataError: A class has fewer than 2 samples, or the validation part would be smaller
            than the number of classes (stratification then cannot give every class one image).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    targets = [target for _, target in samples]
    counts = Counter(targets)
    rare = [c for c, k in sorted(counts.items()) if k < 2]
    if rare:
        raise DataError(
            f"cannot split off a validation set: class index {rare[0]} has only 1 image (need >= 2 per class)"
        )
    try:
        train_idx, val_idx = train_test_split(
            np.arange(len(samples)), test_size=val_fraction, stratify=targets, random_state=seed
        )
    except ValueError as exc:  # e.g. test part smaller than the number of classes
        raise DataError(f"cannot split {len(samples)} images into {len(counts)} stratified classes: {exc}") from None
    return [samples[i] for i in sorted(train_idx)], [samples[i] for i in sorted(val_idx)]


# ---------------------------------------------------------------------------------------------- build


def build_classification_datasets(
    fmt: str,
    *,
    root: str | Path | None = None,
    train: str | Path | None = None,
    val: str | Path | None = None,
    val_fraction: float = 0.0,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
    train_transform: Transform | None = None,
    val_transform: Transform | None = None,
    on_bad_image: str = "skip",
    seed: int = 0,
) -> tuple[ClassificationDataset, ClassificationDataset]:
    """Build train and validation datasets from one of the supported formats.

    Formats:

    * ``"digits"``: the built-in scikit-learn digits (:func:`~resvision.datasets.demo.digits_folder`),
      with ``root`` as an optional cache-directory override.
    * ``"folder"``: ImageFolder trees. ``train`` and ``val`` folders; or ``root`` containing
      ``train/`` and ``val/``; or one class tree (``train`` or ``root``) split by ``val_fraction``.
    * ``"csv"``: ``train`` and ``val`` CSV files (``path,label``), or one ``train`` CSV split by
      ``val_fraction``; ``root`` resolves relative image paths (default: each CSV's folder).

    The validation set always uses the training set's class list, so indices agree.

    Args:
        fmt: ``"digits"``, ``"folder"`` or ``"csv"``.
        root: See formats.
        train: Training folder / CSV.
        val: Validation folder / CSV; if absent, ``val_fraction`` of the training data is held out.
        val_fraction: Held-out fraction when there is no separate validation data, in ``(0, 1)``.
        classes: Class names and order; default from the training data (sorted names).
        image_size: When a transform is ``None`` and this is set, the default
            :func:`classification_transforms` of that size is used; otherwise images stay arrays.
        train_transform: Training transform.
        val_transform: Validation transform.
        on_bad_image: ``"skip"`` or ``"error"`` (see :class:`ClassificationDataset`).
        seed: Split and augmentation seed.

    Returns:
        ``(train_dataset, val_dataset)``.

    Raises:
        ConfigError: Unknown ``fmt`` or missing / contradictory paths.
        DataError: Problems with the data itself.
    """
    train_samples, val_samples, names = _list_split(fmt, root, train, val, val_fraction, classes, seed)
    if image_size is not None:
        train_transform = train_transform or classification_transforms(True, image_size)
        val_transform = val_transform or classification_transforms(False, image_size)
    train_ds = ClassificationDataset(train_samples, names, train_transform, on_bad_image, seed)
    val_ds = ClassificationDataset(val_samples, names, val_transform, on_bad_image, seed)
    log.info("%s data: %d train / %d val images, %d classes", fmt, len(train_ds), len(val_ds), len(names))
    return train_ds, val_ds


def _list_split(
    fmt: str,
    root: str | Path | None,
    train: str | Path | None,
    val: str | Path | None,
    val_fraction: float,
    classes: Sequence[str] | None,
    seed: int,
) -> tuple[list[Sample], list[Sample], list[str]]:
    """Resolve the format's paths to ``(train samples, val samples, classes)``."""
    if fmt == "digits":
        train, val = _train_val_dirs(digits_folder(root))
        return _list_and_split(image_folder_samples, train, val, val_fraction, classes, seed)
    if fmt == "folder":
        if train is None and root is not None:
            has_train_dir = (Path(root) / "train").is_dir()
            train, val = _train_val_dirs(Path(root)) if has_train_dir else (Path(root), val)
        return _list_and_split(image_folder_samples, train, val, val_fraction, classes, seed)
    if fmt == "csv":
        lister = functools.partial(csv_samples, root=root)
        return _list_and_split(lister, train, val, val_fraction, classes, seed)
    raise ConfigError(f"unknown classification data format {fmt!r} (choose from 'digits', 'folder', 'csv')")


def _list_and_split(
    lister: Callable[[str | Path, Sequence[str] | None], tuple[list[Sample], list[str]]],
    train: str | Path | None,
    val: str | Path | None,
    val_fraction: float,
    classes: Sequence[str] | None,
    seed: int,
) -> tuple[list[Sample], list[Sample], list[str]]:
    """List ``train`` (and ``val`` with the same classes), or split ``val_fraction`` off ``train``."""
    if train is None:
        raise ConfigError("classification data needs a training set: give a train path (or root)")
    samples, names = lister(train, classes)
    if val is not None:
        return samples, lister(val, names)[0], names
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"no validation data for {train}: give a val path or a val_fraction in (0, 1), got {val_fraction}")
    train_samples, val_samples = split_samples(samples, val_fraction, seed)
    return train_samples, val_samples, names


def _train_val_dirs(root: Path) -> tuple[Path, Path | None]:
    """``root/train`` and ``root/val`` (``None`` when there is no val folder, so it is split off)."""
    val = root / "val"
    return root / "train", (val if val.is_dir() else None)
