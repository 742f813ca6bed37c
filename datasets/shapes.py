"""Built-in detection demo data that needs no download: filled shapes on cluttered backgrounds.

:func:`shapes_dataset` draws a small, deterministic detection dataset once and writes it as real
files in *both* common formats, so the demo runs exactly the code paths a user's own data takes:

* COCO: ``annotations/instances_{train,val}.json`` + ``images/{train,val}/<name>.jpg``. Category ids
  are deliberately non-contiguous (circle 1, square 3, triangle 7), as in COCO itself (1..90 with gaps),
  so the id <-> label mapping is exercised.
* VOC: ``VOC/Annotations/<name>.xml`` (1-based inclusive pixel coordinates), ``VOC/JPEGImages/<name>.jpg``,
  ``VOC/ImageSets/Main/{train,val}.txt``.

Images are 128..160 px a side (JPEG, quality 90), with 1..4 objects of 16..60 px each (rotated squares
and triangles, circles; random colours, little overlap) over a gradient + low-frequency texture +
noise background crossed by lines, arcs and dots in random colours, so that colour alone does not
find the objects. Boxes are the tight bounds of each object's *visible* pixels. Objects whose box is
smaller than 20 px on its longer side are marked ``difficult`` (in the VOC files, and with the same
non-standard ``"difficult"`` key in the COCO files, so both formats carry the same flags).
"""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from resvision.datasets.coco import load_coco, load_coco_segmentation
from resvision.datasets.demo import write_once
from resvision.datasets.detection import DetectionData
from resvision.datasets.masks import voc_colormap, write_mask
from resvision.datasets.segmentation import SegmentationData
from resvision.datasets.voc import load_voc, load_voc_segmentation
from resvision.errors import ConfigError

__all__ = ["SHAPES_CATEGORY_IDS", "SHAPES_CLASSES", "SHAPES_SEG_CLASSES", "SHAPES_SPLITS", "load_shapes",
           "load_shapes_segmentation", "shapes_dataset", "shapes_segmentation_dataset"]


SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
SHAPES_CATEGORY_IDS: tuple[int, ...] = (1, 3, 7)  # non-contiguous on purpose (module docstring)
SHAPES_SPLITS: dict[str, int] = {"train": 300, "val": 100}  # images per split
SHAPES_SEG_CLASSES: tuple[str, ...] = ("background", *SHAPES_CLASSES)  # mask values 0..3

_SEED = 0
_IMAGE_SIDE = (128, 160)  # inclusive range of width and height, px
_OBJECT_SIDE = (16, 60)  # inclusive range of the drawn extent, px
_OBJECTS_PER_IMAGE = (1, 4)
_DIFFICULT_BELOW = 20  # px: a box whose longer side is shorter than this is "difficult"
_MAX_SHARED = 0.25  # an object may cover at most this fraction of the smaller box of any other
_MIN_CONTRAST = 90  # minimum L1 distance (0..765) between an object's colour and the background under it
_JPEG_QUALITY = 90


def shapes_dataset(cache_dir: str | Path | None = None) -> Path:
    """Return the root of the shapes detection dataset, writing it on first use (a few seconds).

    The tree is built in a temporary sibling directory and moved into place with one ``os.replace``
    (as :func:`~resvision.datasets.demo.digits_folder`), so an interrupted or concurrent first run never
    leaves a partial dataset. Every byte is a function of the fixed seed: two generations are identical.

    Args:
        cache_dir: Cache root; default :func:`~resvision.datasets.demo.default_cache_dir`.

    Returns:
        ``<cache>/shapes`` with ``annotations/``, ``images/`` (COCO) and ``VOC/``; 300 train / 100 val images.
    """
    return write_once("shapes", _write_shapes, cache_dir)


def load_shapes(split: str, fmt: str = "coco", cache_dir: str | Path | None = None) -> DetectionData:
    """Load a split of :func:`shapes_dataset` through the ordinary COCO or VOC loader.

    Both formats give the same boxes, labels (circle 1, square 2, triangle 3) and flags; ``category_ids``
    are ``[1, 3, 7]`` for COCO and ``[1, 2, 3]`` for VOC; image ids differ (COCO: file id, VOC: position).

    Args:
        split: ``"train"`` or ``"val"``.
        fmt: ``"coco"`` or ``"voc"``.
        cache_dir: Cache root (see :func:`shapes_dataset`).

    Raises:
        ConfigError: Unknown ``split`` or ``fmt``.
    """
    if split not in SHAPES_SPLITS:
        raise ConfigError(f"unknown shapes split {split!r} (choose from {', '.join(map(repr, SHAPES_SPLITS))})")
    root = shapes_dataset(cache_dir)
    if fmt == "coco":
        return load_coco(root / "annotations" / f"instances_{split}.json", root / "images" / split)
    if fmt == "voc":
        return load_voc(root / "VOC", split, classes=SHAPES_CLASSES)
    raise ConfigError(f"unknown shapes format {fmt!r} (choose from 'coco', 'voc')")


def shapes_segmentation_dataset(cache_dir: str | Path | None = None) -> Path:
    """Return the root of the shapes *segmentation* dataset, writing it on first use (atomically, as
    :func:`shapes_dataset`).

    The same generator, seed and JPEG bytes as the detection set, with each object's visible pixels as its
    class. Written in two formats that share the images:

    * VOC: ``JPEGImages/<name>.jpg``, ``SegmentationClass/<name>.png`` (palette PNG, values 0 background,
      1 circle, 2 square, 3 triangle, 255 on a 1-pixel band each side of every object outline, as VOC marks
      its boundaries "void"), ``ImageSets/Segmentation/{train,val}.txt``.
    * COCO: ``annotations/instances_{train,val}.json`` with each object's visible region as polygons (one per
      connected part, traced by OpenCV) beside its box; ``file_name`` points into ``JPEGImages/``.

    A separate cache folder from :func:`shapes_dataset`, so detection caches written before it stay valid.

    Returns:
        ``<cache>/shapes_segmentation``; 300 train / 100 val images.
    """
    return write_once("shapes_segmentation", _write_shapes_segmentation, cache_dir)


def load_shapes_segmentation(split: str, fmt: str = "voc", cache_dir: str | Path | None = None) -> SegmentationData:
    """Load a split of :func:`shapes_segmentation_dataset` through the ordinary VOC or COCO segmentation loader.

    Both give the classes ``background, circle, square, triangle``; the VOC masks are exact (with the boundary
    band ignored), the COCO ones are the polygons rasterised by pycocotools (no band).

    Raises:
        ConfigError: Unknown ``split`` or ``fmt``.
    """
    if split not in SHAPES_SPLITS:
        raise ConfigError(f"unknown shapes split {split!r} (choose from {', '.join(map(repr, SHAPES_SPLITS))})")
    root = shapes_segmentation_dataset(cache_dir)
    if fmt == "voc":
        return load_voc_segmentation(root, split, classes=SHAPES_SEG_CLASSES)
    if fmt == "coco":
        return load_coco_segmentation(root / "annotations" / f"instances_{split}.json", root / "JPEGImages")
    raise ConfigError(f"unknown shapes format {fmt!r} (choose from 'voc', 'coco')")


# ------------------------------------------------------------------------------------------- writing


def _write_shapes(out: Path) -> None:
    """Write both formats of every split into ``out``."""
    for folder in ("annotations", "VOC/Annotations", "VOC/JPEGImages", "VOC/ImageSets/Main"):
        (out / folder).mkdir(parents=True)
    first = 0
    for split, count in SHAPES_SPLITS.items():
        (out / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        names = [f"{index:06d}" for index in range(first, first + count)]
        for index, name in enumerate(names, start=first):
            pixels, objects = _draw_image(np.random.default_rng([_SEED, index]))
            jpeg = io.BytesIO()
            Image.fromarray(pixels).save(jpeg, format="JPEG", quality=_JPEG_QUALITY)
            (out / "images" / split / f"{name}.jpg").write_bytes(jpeg.getvalue())
            (out / "VOC" / "JPEGImages" / f"{name}.jpg").write_bytes(jpeg.getvalue())
            height, width = pixels.shape[:2]
            images.append({"id": index + 1, "file_name": f"{name}.jpg", "width": width, "height": height})
            for obj in objects:
                annotations.append(_coco_annotation(obj, len(annotations) + 1, index + 1))
            _write_voc_xml(out / "VOC" / "Annotations" / f"{name}.xml", name, width, height, objects)
        first += count
        _write_coco(out / "annotations" / f"instances_{split}.json", images, annotations, "resvision shapes detection demo")
        (out / "VOC" / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


def _write_shapes_segmentation(out: Path) -> None:
    """Write the VOC-layout masks and the COCO polygon files of every split into ``out``."""
    for folder in ("annotations", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / folder).mkdir(parents=True)
    palette = voc_colormap()
    first = 0
    for split, count in SHAPES_SPLITS.items():
        images, annotations = [], []
        names = [f"{index:06d}" for index in range(first, first + count)]
        for index, name in enumerate(names, start=first):
            pixels, objects = _draw_image(np.random.default_rng([_SEED, index]))
            Image.fromarray(pixels).save(out / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=_JPEG_QUALITY)
            write_mask(out / "SegmentationClass" / f"{name}.png", _class_mask(objects, pixels.shape[:2]), palette)
            height, width = pixels.shape[:2]
            images.append({"id": index + 1, "file_name": f"{name}.jpg", "width": width, "height": height})
            for obj in objects:
                ann = _coco_annotation(obj, len(annotations) + 1, index + 1)
                ann["segmentation"] = _polygons(obj["visible"])
                annotations.append(ann)
        first += count
        _write_coco(out / "annotations" / f"instances_{split}.json", images, annotations, "resvision shapes segmentation demo")
        (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


def _write_coco(path: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]], description: str) -> None:
    coco = {
        "info": {"description": description, "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(SHAPES_CATEGORY_IDS, SHAPES_CLASSES)],
    }
    path.write_text(json.dumps(coco), encoding="utf-8")


def _class_mask(objects: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 class indices (0 background, ``class + 1`` per object), outlines set to 255.

    An outline pixel is one whose 3x3 neighbourhood holds another class: a band one pixel wide on each side of
    every border, where JPEG blurs the edge (VOC's "void" boundaries serve the same purpose).
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for obj in objects:
        mask[obj["visible"]] = obj["class"] + 1
    kernel = np.ones((3, 3), np.uint8)
    border = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)
    mask[border] = 255
    return mask


def _polygons(visible: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` of a region's outer contours (one per connected part).

    OpenCV traces the boundary pixels by their indices; +0.5 puts them on pycocotools' grid (pixel centres).
    The fill then loses about half a pixel along the outline (mean object IoU ~0.92 against the exact region):
    an approximation, like hand-drawn COCO polygons. The VOC masks are the exact copy. Visible regions have no
    holes (a later object covers at most a quarter of an earlier one and is convex), so outer contours suffice.
    """
    contours, _ = cv2.findContours(visible.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[round(float(v) + 0.5, 1) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def _coco_annotation(obj: dict[str, Any], ann_id: int, image_id: int) -> dict[str, Any]:
    x1, y1, x2, y2 = obj["box"]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": SHAPES_CATEGORY_IDS[obj["class"]],
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": obj["area"],  # visible pixels, as COCO's area is the mask's
        "iscrowd": 0,
        "difficult": int(obj["difficult"]),
    }


def _write_voc_xml(path: Path, name: str, width: int, height: int, objects: list[dict[str, Any]]) -> None:
    """One VOC annotation file; box corners become 1-based inclusive pixel indices."""
    node = ET.Element("annotation")
    ET.SubElement(node, "folder").text = "VOC"
    ET.SubElement(node, "filename").text = f"{name}.jpg"
    size = ET.SubElement(node, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(node, "segmented").text = "0"
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        item = ET.SubElement(node, "object")
        ET.SubElement(item, "name").text = SHAPES_CLASSES[obj["class"]]
        ET.SubElement(item, "pose").text = "Unspecified"
        touches_border = x1 == 0 or y1 == 0 or x2 == width or y2 == height
        ET.SubElement(item, "truncated").text = str(int(touches_border))
        ET.SubElement(item, "difficult").text = str(int(obj["difficult"]))
        box = ET.SubElement(item, "bndbox")
        # continuous [x1, x2) pixels -> 1-based inclusive indices: xmin = x1 + 1, xmax = x2
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(node)
    ET.ElementTree(node).write(path, encoding="utf-8", xml_declaration=False)


# ------------------------------------------------------------------------------------------- drawing


def _draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(pixels (H, W, 3) uint8, objects)``; each object: class index, integer box, area, difficult and its
    visible pixels (``(H, W)`` bool, what later objects leave uncovered)."""
    width, height = (int(v) for v in rng.integers(_IMAGE_SIDE[0], _IMAGE_SIDE[1] + 1, size=2))
    canvas = _background(rng, height, width)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(_OBJECTS_PER_IMAGE[0], _OBJECTS_PER_IMAGE[1] + 1))):
        for _attempt in range(20):
            cls = int(rng.integers(len(SHAPES_CLASSES)))
            mask = _shape_mask(rng, cls, height, width)
            if all(_shared(mask, other) <= _MAX_SHARED for other in masks):
                break
        else:
            continue  # no room left: fewer objects
        canvas[mask] = _contrasting_colour(rng, canvas[mask])
        masks.append(mask)
        classes.append(cls)
    pixels = np.clip(canvas + _noise(rng, canvas.shape, 4.0), 0, 255).astype(np.uint8)  # over objects too
    objects = []
    for i, (mask, cls) in enumerate(zip(masks, classes)):
        visible = mask.copy()
        for later in masks[i + 1:]:
            visible &= ~later
        ys, xs = np.nonzero(visible)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        longer = max(box[2] - box[0], box[3] - box[1])
        objects.append({"class": cls, "box": box, "area": int(visible.sum()), "difficult": longer < _DIFFICULT_BELOW,
                        "visible": visible})
    return pixels, objects


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A ``(H, W, 3)`` float32 canvas: colour gradient + blurred-noise texture + line / arc / dot clutter."""
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.arange(width, dtype=np.float32) * math.cos(angle)
    ys = np.arange(height, dtype=np.float32) * math.sin(angle)
    t = ys[:, None] + xs[None, :]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    canvas = start + t[..., None] * (end - start)
    coarse = rng.standard_normal(size=(int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3), dtype=np.float32)
    canvas += np.float32(rng.uniform(10, 40)) * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas += _noise(rng, canvas.shape, rng.uniform(3, 12))
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    n_lines, n_arcs, n_dots = int(rng.integers(3, 10)), int(rng.integers(1, 4)), int(rng.integers(5, 30))
    colours = [tuple(c) for c in rng.integers(0, 256, size=(n_lines + n_arcs + n_dots, 3)).tolist()]
    places = rng.integers(0, (width, height), size=(2 * n_lines + n_arcs + n_dots, 2)).tolist()
    sizes = rng.integers(0, 1000, size=(n_lines + n_arcs + n_dots, 3)).tolist()  # reduced per use below
    for i in range(n_lines):
        draw.line([tuple(places[2 * i]), tuple(places[2 * i + 1])], fill=colours[i], width=1 + sizes[i][0] % 3)
    for i in range(n_lines, n_lines + n_arcs):
        (x, y), r = places[n_lines + i], 8 + sizes[i][0] % 32
        start_deg = sizes[i][1] % 360
        draw.arc([x - r, y - r, x + r, y + r], start_deg, start_deg + 40 + sizes[i][2] % 160,
                 fill=colours[i], width=1 + sizes[i][0] % 2)
    for i in range(n_lines + n_arcs, n_lines + n_arcs + n_dots):
        (x, y), r = places[n_lines + i], 1 + sizes[i][0] % 3
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colours[i])
    return np.asarray(image).astype(np.float32)


def _shape_mask(rng: np.random.Generator, cls: int, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of one filled shape of class ``cls`` at a random size, place and rotation."""
    side = int(rng.integers(_OBJECT_SIDE[0], _OBJECT_SIDE[1] + 1))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    cx, cy, r = x0 + side / 2, y0 + side / 2, side / 2
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    if SHAPES_CLASSES[cls] == "circle":
        draw.ellipse([x0, y0, x0 + side - 1, y0 + side - 1], fill=1)
    else:
        corners = 4 if SHAPES_CLASSES[cls] == "square" else 3
        turn = rng.uniform(0, 2 * math.pi / corners)
        angles = turn + 2 * math.pi * np.arange(corners) / corners
        # vertices on the circle of radius r: the shape never leaves its side x side square
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], fill=1)
    return np.asarray(mask, dtype=bool)


def _shared(mask: np.ndarray, other: np.ndarray) -> float:
    """Overlap of two masks as a fraction of the smaller one."""
    return float((mask & other).sum()) / max(min(int(mask.sum()), int(other.sum())), 1)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random RGB colour at least :data:`_MIN_CONTRAST` (L1) from the mean of the pixels it covers."""
    mean = under.mean(axis=0)
    colour = rng.uniform(0, 255, size=3)
    for _ in range(20):
        if np.abs(colour - mean).sum() >= _MIN_CONTRAST:
            break
        colour = rng.uniform(0, 255, size=3)
    return colour


def _noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Zero-mean uniform noise of standard deviation ``std`` (float32), from random bytes.

    Random bytes are several times faster than Gaussian draws, and the look is the same here.
    """
    raw = np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape).astype(np.float32)
    return (raw - np.float32(127.5)) * np.float32(std / 73.9)  # a uniform byte has std 73.9
