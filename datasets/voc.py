"""Pascal VOC XML -> :class:`~resvision.datasets.detection.DetectionData`.

Layout (``VOCdevkit/VOC2007`` or ``VOC2012``, or any folder written the same way)::

    root/Annotations/<id>.xml
    root/JPEGImages/<id>.jpg
    root/ImageSets/Main/<split>.txt      one <id> per line

Coordinates: VOC boxes are 1-based inclusive pixel indices (``xmin=1, xmax=W`` covers a whole
``W``-pixel row). In continuous coordinates that is ``[0, W]``, so ``x1 = xmin - 1``, ``y1 = ymin - 1``,
``x2 = xmax``, ``y2 = ymax``: the conversion of Detectron2's ``load_voc_instances`` (and MMDetection's
``VOCDataset``, which subtracts 1 from the minima).

``difficult`` in ``coco_gt``: VOC's protocol ignores difficult objects (a detection on one is neither a
true nor a false positive, and they are not counted as positives). pycocotools has no such flag: its only
"ignore" is ``iscrowd``, which also changes the overlap test to intersection-over-detection-area. So
``coco_gt`` keeps difficult objects as ordinary boxes (``iscrowd: 0``) with an extra ``"difficult": 1``
key that ``COCOeval`` ignores: COCO-style AP on VOC therefore counts them as positives (stricter than
VOC's rule), and a VOC-protocol evaluator reads the flag from the samples or from the key.
:func:`difficult_as_crowd` gives the ``iscrowd=1`` approximation for those who prefer it.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from resvision.datasets.detection import (
    DetectionData,
    DetectionSample,
    clean_boxes,
    new_stats,
    progress,
    report_cleaning,
)
from resvision.errors import DataError

__all__ = ["VOC_CLASSES", "difficult_as_crowd", "load_voc", "read_split"]

# The 20 Pascal VOC classes in the official devkit order (VOCcode/VOCinit.m); labels are 1..20 in this order.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def load_voc(
    root: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    keep_empty: bool = True,
) -> DetectionData:
    """Load one split of a VOC-layout dataset.

    Boxes are converted from 1-based to continuous coordinates (module docstring), clipped to the image
    and dropped when degenerate (counted in ``stats``, one warning for the dropped total). ``difficult``
    is kept as a flag; ``truncated`` / ``pose`` are ignored. Labels are ``1..K`` in ``classes`` order and
    ``category_ids`` is ``[1..K]``. ``image_id`` is the 1-based position of the id in the split file.
    ``coco_gt`` is the same boxes as a COCO instances dict (``file_name`` = ``<id>.jpg``, see the module
    docstring for ``difficult``).

    Args:
        root: The folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: Name of the split file, e.g. ``"train"``, ``"val"``, ``"trainval"``, ``"test"``.
        classes: Class names and label order; default :data:`VOC_CLASSES`.
        keep_empty: Keep images without (remaining) objects as negatives.

    Returns:
        The split, in split-file order.

    Raises:
        DataError: Missing split file or empty split, an id whose XML or image is missing (names the id
            and the split file, or the image), malformed XML (names the file), an object whose class is
            not in ``classes`` (names the file and class), or a malformed ``bndbox``.
    """
    root = Path(root)
    classes = list(VOC_CLASSES if classes is None else classes)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    ids = read_split(split_file)
    label_of = {name: k for k, name in enumerate(classes, start=1)}
    stats = new_stats()
    samples: list[DetectionSample] = []
    for position, image_id in enumerate(progress(ids, desc=f"parse VOC {split}", unit="xml"), start=1):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            raise DataError(f"{split_file}: id {image_id!r} has no annotation file {xml_path}")
        sample = _parse_xml(xml_path, root, image_id, position, label_of, stats)
        if len(sample.boxes) == 0:
            if not keep_empty:
                stats["images_empty_dropped"] += 1
                continue
            stats["images_empty_kept"] += 1
        samples.append(sample)
    if not samples:
        raise DataError(f"{split_file}: no images with objects (keep_empty=False dropped all {len(ids)})")
    stats["images"] = len(samples)
    report_cleaning(str(split_file), stats)
    return DetectionData(samples, classes, list(range(1, len(classes) + 1)), to_coco_gt(samples, classes), stats)


def read_split(split_file: Path) -> list[str]:
    """Image ids listed in a split file (first token per line; blank lines skipped)."""
    try:
        lines = split_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"VOC split file not found: {split_file}") from None
    except IsADirectoryError:
        raise DataError(f"expected a VOC split file, got a directory: {split_file}") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DataError(f"{split_file}: the split lists no image ids")
    return ids


def _parse_xml(
    xml_path: Path,
    root: Path,
    image_id: str,
    position: int,
    label_of: dict[str, int],
    stats: dict[str, int],
) -> DetectionSample:
    """The cleaned sample described by one annotation file."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: malformed XML ({exc})") from None
    node = tree.getroot()
    image_path = _image_path(node, root, image_id, xml_path)
    width, height = _size(node, image_path, xml_path)
    boxes, labels, difficult = [], [], []
    for obj in node.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in label_of:
            names = list(label_of)
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise DataError(f"{xml_path}: object class {name!r} is not one of the {len(names)} classes ({shown}); "
                            "set data.classes to your class names (a VOC-layout set of other classes)")
        boxes.append(_bndbox(obj, xml_path))
        labels.append(label_of[name])
        difficult.append(_int_text(obj, "difficult", xml_path, default=0) == 1)
    clipped_boxes, clipped, keep = clean_boxes(np.array(boxes, dtype=np.float32), width, height)
    difficult_flags = np.array(difficult, dtype=bool)
    stats["boxes_clipped"] += int(clipped.sum())
    stats["boxes_degenerate_dropped"] += int((~keep).sum())
    stats["boxes"] += int(keep.sum())
    stats["difficult_boxes"] += int(difficult_flags[keep].sum())
    return DetectionSample(
        image_path=str(image_path),
        image_id=position,
        width=width,
        height=height,
        boxes=clipped_boxes[keep],
        labels=np.array(labels, dtype=np.int64)[keep],
        iscrowd=np.zeros(int(keep.sum()), dtype=bool),
        difficult=difficult_flags[keep],
    )


def _image_path(node: ET.Element, root: Path, image_id: str, xml_path: Path) -> Path:
    """``JPEGImages/<id>.jpg``, else the XML's ``<filename>`` in ``JPEGImages`` (e.g. a ``.png``)."""
    default = root / "JPEGImages" / f"{image_id}.jpg"
    if default.is_file():
        return default
    named = (node.findtext("filename") or "").strip()
    if named and (root / "JPEGImages" / named).is_file():
        return root / "JPEGImages" / named
    raise DataError(f"{xml_path}: image file not found: {default}")


def _size(node: ET.Element, image_path: Path, xml_path: Path) -> tuple[int, int]:
    """``(width, height)`` from ``<size>``, else from the image header (some exports write zeros)."""
    size = node.find("size")
    if size is not None:
        width = _int_text(size, "width", xml_path, default=0)
        height = _int_text(size, "height", xml_path, default=0)
        if width > 0 and height > 0:
            return width, height
    try:
        with Image.open(image_path) as image:  # header only
            return image.size
    except OSError as exc:
        raise DataError(f"{xml_path}: no <size> and the image {image_path} is unreadable ({exc})") from None


def _bndbox(obj: ET.Element, xml_path: Path) -> list[float]:
    """1-based inclusive ``xmin ymin xmax ymax`` -> continuous ``x1 y1 x2 y2`` (module docstring)."""
    box = obj.find("bndbox")
    if box is None:
        raise DataError(f"{xml_path}: an <object> has no <bndbox>")
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = (box.findtext(tag) or "").strip()
        try:
            values.append(float(text))
        except ValueError:
            raise DataError(f"{xml_path}: <bndbox><{tag}> is {text!r}, expected a number") from None
    xmin, ymin, xmax, ymax = values
    return [xmin - 1.0, ymin - 1.0, xmax, ymax]


def _int_text(node: ET.Element, tag: str, xml_path: Path, default: int) -> int:
    text = (node.findtext(tag) or "").strip()
    if not text:
        return default
    try:
        return int(float(text))  # some exports write "500.0"
    except ValueError:
        raise DataError(f"{xml_path}: <{tag}> is {text!r}, expected an integer") from None


def to_coco_gt(samples: Sequence[DetectionSample], classes: Sequence[str]) -> dict[str, Any]:
    """The samples as a COCO instances dict: category ids ``1..K``, ``bbox`` ``[x, y, w, h]`` continuous.

    Every annotation carries ``iscrowd`` from the sample and a ``"difficult"`` 0/1 key (module docstring).
    """
    images, annotations = [], []
    for sample in samples:
        images.append({
            "id": sample.image_id,
            "file_name": Path(sample.image_path).name,
            "width": sample.width,
            "height": sample.height,
        })
        for box, label, crowd, difficult in zip(sample.boxes, sample.labels, sample.iscrowd, sample.difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": sample.image_id,
                "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(crowd),
                "difficult": int(difficult),
            })
    categories = [{"id": k, "name": name, "supercategory": "none"} for k, name in enumerate(classes, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def difficult_as_crowd(coco_gt: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``coco_gt`` with difficult objects marked ``iscrowd=1`` (an approximation of VOC's rule).

    ``COCOeval`` then ignores detections on difficult objects and does not count them as positives, as
    VOC does, but matches them by intersection over the *detection's* area instead of IoU, and lets
    several detections share one.
    """
    converted = copy.deepcopy(coco_gt)
    for ann in converted["annotations"]:
        if ann.get("difficult"):
            ann["iscrowd"] = 1
    return converted
