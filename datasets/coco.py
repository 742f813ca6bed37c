"""COCO "instances" JSON -> :class:`~resvision.datasets.detection.DetectionData`.

The file is indexed with pycocotools' ``COCO`` (the same index ``COCOeval`` uses), after a
``json.load`` of our own so that a malformed file fails with a one-line error naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from resvision.datasets.detection import (
    DetectionData,
    DetectionSample,
    clean_boxes,
    new_stats,
    progress,
    report_cleaning,
)
from resvision.errors import DataError

__all__ = ["index_coco", "load_coco", "read_coco_json", "select_categories"]


def load_coco(
    annotation_file: str | Path,
    image_dir: str | Path,
    classes: Sequence[str] | None = None,
    keep_empty: bool = True,
) -> DetectionData:
    """Load a COCO instances file (``instances_val2017.json`` or any file in that format).

    * Category ids (COCO's are 1..90 with gaps) become labels ``1..K`` in sorted-id order, or in the
      order of ``classes`` (category names); :attr:`DetectionData.category_ids` maps them back.
    * ``bbox`` ``[x, y, w, h]`` becomes ``x1 y1 x2 y2``; boxes reaching outside the image are clipped,
      boxes of zero / negative area (after clipping) are dropped, both counted in ``stats`` with one
      warning for the dropped total.
    * ``iscrowd`` is kept as a flag (crowd regions are ignored in training, honoured by ``COCOeval``).
      An optional non-standard ``"difficult"`` key (written by VOC converters) is read as the difficult flag.
    * Images without (remaining) boxes are kept as negatives unless ``keep_empty=False``.
    * Samples are ordered by image id (as torchvision's ``CocoDetection``).

    ``coco_gt`` is the file's content restricted to the kept images: their ``images`` entries, the
    annotations on them minus the dropped degenerate ones, and all ``categories``. Annotations are as
    written except that clipped boxes are clipped there too (predictions are clipped to the image, so
    an unclipped box could not be matched; official COCO boxes lie inside their images, so its numbers
    are unchanged), and missing ``area`` (box area) / ``iscrowd`` (0) fields, which ``COCOeval``
    needs, are filled in.

    Args:
        annotation_file: The JSON file.
        image_dir: Folder that ``images[*].file_name`` is relative to.
        classes: Category names and their label order (e.g. the training set's); default: every
            category, by id. Each name must be a category; annotations of other categories are an error.
        keep_empty: Keep images that have no boxes.

    Returns:
        The split; every listed image file is checked to exist.

    Raises:
        DataError: Missing or malformed JSON, no images, an annotation on an unknown image or with a
            category not in ``categories`` / ``classes`` (names the annotation id), a malformed ``bbox``,
            duplicate ids, or a missing image file (names it). Every message is one line.
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    content = read_coco_json(annotation_file)
    coco = index_coco(content, annotation_file)
    names, category_ids = select_categories(coco, classes, annotation_file)
    label_of = {cat: k for k, cat in enumerate(category_ids, start=1)}
    stats = new_stats()
    samples: list[DetectionSample] = []
    kept_annotations: list[dict[str, Any]] = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        sample, annotations = _image_sample(coco, info, image_dir, label_of, stats, annotation_file)
        if len(sample.boxes) == 0:
            if not keep_empty:
                stats["images_empty_dropped"] += 1
                continue
            stats["images_empty_kept"] += 1
        samples.append(sample)
        kept_annotations.extend(annotations)
    if not samples:
        raise DataError(f"{annotation_file}: no images with boxes (keep_empty=False dropped all {len(coco.imgs)})")
    _check_files_exist(samples, annotation_file)
    stats["images"] = len(samples)
    report_cleaning(str(annotation_file), stats)
    kept_ids = {s.image_id for s in samples}
    coco_gt = {key: value for key, value in content.items() if key not in ("images", "annotations")}
    coco_gt["images"] = [img for img in content["images"] if img["id"] in kept_ids]
    coco_gt["annotations"] = kept_annotations
    return DetectionData(samples, names, category_ids, coco_gt, stats)


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed file, which must be an object with an ``images`` list."""
    try:
        with path.open("rb") as handle:
            content = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a COCO JSON file, got a directory: {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 JSON file ({exc.reason} at byte {exc.start})") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{path}: not a COCO instances file (expected an object with an 'images' list)")
    if not content["images"]:
        raise DataError(f"{path}: no images (the 'images' list is empty)")
    if not isinstance(content.get("categories"), list) or not content["categories"]:
        raise DataError(f"{path}: no categories (expected a non-empty 'categories' list)")
    if not isinstance(content.get("annotations", []), list):
        raise DataError(f"{path}: 'annotations' must be a list")
    return content


def index_coco(content: dict[str, Any], path: Path) -> COCO:
    """A pycocotools index of ``content`` after checking the fields it relies on."""
    _check_unique_ids(content["images"], "image", path)
    _check_unique_ids(content["categories"], "category", path)
    _check_unique_ids(content.get("annotations", []), "annotation", path)
    image_ids = {img["id"] for img in content["images"]}
    for ann in content.get("annotations", []):
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{path}: annotation id {ann['id']} refers to unknown image_id {ann.get('image_id')!r}")
    coco = COCO()
    coco.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco.createIndex()
    return coco


def _check_unique_ids(entries: list[Any], kind: str, path: Path) -> None:
    seen: set[Any] = set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(f"{path}: {kind} entry #{position} has no 'id'")
        if entry["id"] in seen:
            raise DataError(f"{path}: duplicate {kind} id {entry['id']!r}")
        seen.add(entry["id"])


def select_categories(
    coco: COCO, classes: Sequence[str] | None, path: Path
) -> tuple[list[str], list[int]]:
    """``(class names, category ids)`` in label order."""
    by_id = {cat_id: str(coco.cats[cat_id].get("name", cat_id)) for cat_id in coco.cats}
    if classes is None:
        ids = sorted(by_id)
        names = [by_id[i] for i in ids]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise DataError(f"{path}: category name {duplicated[0]!r} is used by more than one category id")
        return names, ids
    id_of = {name: cat_id for cat_id, name in sorted(by_id.items(), reverse=True)}  # lowest id wins a tie
    missing = [name for name in classes if name not in id_of]
    if missing:
        raise DataError(f"{path}: class {missing[0]!r} is not one of the file's categories {sorted(id_of)}")
    return list(classes), [id_of[name] for name in classes]


def _image_sample(
    coco: COCO,
    info: dict[str, Any],
    image_dir: Path,
    label_of: dict[int, int],
    stats: dict[str, int],
    path: Path,
) -> tuple[DetectionSample, list[dict[str, Any]]]:
    """The cleaned sample of one image and its annotations for ``coco_gt`` (degenerate ones removed)."""
    if "file_name" not in info:
        raise DataError(f"{path}: image id {info['id']} has no 'file_name'")
    image_path = image_dir / str(info["file_name"])
    width, height = _image_size(info, image_path, path)
    annotations = coco.imgToAnns.get(info["id"], [])
    boxes = np.zeros((len(annotations), 4), dtype=np.float32)
    labels = np.zeros(len(annotations), dtype=np.int64)
    for row, ann in enumerate(annotations):
        if ann.get("category_id") not in label_of:
            known = "categories" if ann.get("category_id") not in coco.cats else "the given classes"
            category = ann.get("category_id")
            raise DataError(f"{path}: annotation id {ann['id']} has category_id {category!r}, not in {known}")
        boxes[row] = _xyxy(ann, path)
        labels[row] = label_of[ann["category_id"]]
    boxes, clipped, keep = clean_boxes(boxes, width, height)
    iscrowd = np.array([bool(ann.get("iscrowd", 0)) for ann in annotations], dtype=bool)
    difficult = np.array([bool(ann.get("difficult", 0)) for ann in annotations], dtype=bool)
    stats["boxes_clipped"] += int(clipped.sum())
    stats["boxes_degenerate_dropped"] += int((~keep).sum())
    stats["boxes"] += int(keep.sum())
    stats["crowd_boxes"] += int(iscrowd[keep].sum())
    stats["difficult_boxes"] += int(difficult[keep].sum())
    sample = DetectionSample(
        str(image_path), info["id"], width, height, boxes[keep], labels[keep], iscrowd[keep], difficult[keep]
    )
    gt = [_gt_annotation(ann, box, cut) for ann, box, cut, ok in zip(annotations, boxes, clipped, keep) if ok]
    return sample, gt


def _image_size(info: dict[str, Any], image_path: Path, path: Path) -> tuple[int, int]:
    """``(width, height)`` from the JSON, else from the image header (cheap: no pixel decoding)."""
    width, height = info.get("width"), info.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    try:
        with Image.open(image_path) as image:  # lazy: reads the header only
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found: {image_path} (image id {info['id']})") from None
    except OSError as exc:
        raise DataError(
            f"{path}: image id {info['id']} has no width/height and {image_path} is unreadable ({exc})"
        ) from None


def _xyxy(ann: dict[str, Any], path: Path) -> list[float]:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]``, refusing anything that is not four finite numbers."""
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise DataError(f"{path}: annotation id {ann['id']} has bbox {bbox!r}, expected [x, y, width, height] numbers")
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _gt_annotation(ann: dict[str, Any], box: np.ndarray, was_clipped: bool) -> dict[str, Any]:
    """The annotation as written, plus the ``area`` / ``iscrowd`` fields ``COCOeval`` requires.

    A box that was clipped for training is clipped here too: torchvision's detectors clip their
    predictions to the image, so an unclipped ground-truth box could never be matched exactly (a box
    half outside the image would cap the IoU of a perfect prediction at 0.5). ``area`` is then capped
    at the clipped box's area.
    """
    if "area" in ann and "iscrowd" in ann and not was_clipped:
        return ann
    filled = dict(ann)
    x1, y1, x2, y2 = (float(v) for v in box)
    box_area = (x2 - x1) * (y2 - y1)
    filled.setdefault("iscrowd", 0)
    filled["area"] = min(float(filled.get("area", box_area)), box_area)
    if was_clipped:
        filled["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    return filled


def _check_files_exist(samples: list[DetectionSample], path: Path) -> None:
    """Fail now, naming the first missing image file, rather than mid-epoch (one ``stat`` per image)."""
    for sample in progress(samples, desc="check images", unit="img"):
        if not os.path.isfile(sample.image_path):
            raise DataError(f"{path}: image file not found: {sample.image_path} (image id {sample.image_id})")
