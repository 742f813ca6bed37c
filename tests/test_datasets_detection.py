"""Detection data: COCO / VOC loaders, the shapes generator, box-aware transforms and the Dataset."""

import contextlib
import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from resvision.datasets import shapes as shapes_module
from resvision.datasets.coco import load_coco
from resvision.datasets.detection import DetectionDataset, detection_collate
from resvision.datasets.detection_transforms import detection_transforms
from resvision.datasets.image_io import BadImageError
from resvision.datasets.voc import VOC_CLASSES, difficult_as_crowd, load_voc
from resvision.errors import ConfigError, DataError


def _image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _raises_one_line(match, fn, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ COCO


def _coco_content():
    return {
        "images": [
            {"id": 20, "file_name": "b.png", "width": 50, "height": 40},
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 30, "file_name": "c.png", "width": 20, "height": 20},  # no annotations: a negative
        ],
        # non-contiguous ids, listed out of order
        "categories": [{"id": 9, "name": "bird"}, {"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [30, 5, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 9, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},
            {"id": 4, "image_id": 20, "category_id": 9, "bbox": [0, 0, 50, 40], "area": 2000, "iscrowd": 1},
            {"id": 5, "image_id": 20, "category_id": 2, "bbox": [10, 10, 5, 5]},  # no area / iscrowd
            {"id": 6, "image_id": 20, "category_id": 5, "bbox": [60, 10, 5, 5], "area": 25, "iscrowd": 0},
        ],
    }


@pytest.fixture
def coco_files(tmp_path):
    content = _coco_content()
    for info in content["images"]:
        _image(tmp_path / "img" / info["file_name"], info["width"], info["height"], seed=info["id"])
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(content))
    return ann, tmp_path / "img"


def _rewrite(ann, edit):
    content = json.loads(ann.read_text())
    edit(content)
    ann.write_text(json.dumps(content))


def test_coco_mapping_boxes_and_cleaning(coco_files, caplog):
    with caplog.at_level(logging.WARNING, logger="resvision"):
        data = load_coco(*coco_files)
    assert data.classes == ["cat", "dog", "bird"] and data.category_ids == [2, 5, 9]
    assert [s.image_id for s in data.samples] == [10, 20, 30]
    a, b, c = data.samples
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 22], [30, 5, 40, 15]])  # xywh -> xyxy; 2nd clipped to W=40
    np.testing.assert_array_equal(a.labels, [2, 1])
    assert [data.category_ids[k - 1] for k in a.labels] == [5, 2]  # and back
    np.testing.assert_array_equal(b.boxes, [[0, 0, 50, 40], [10, 10, 15, 15]])  # ann 6 is outside: dropped
    np.testing.assert_array_equal(b.iscrowd, [True, False])
    assert len(c.boxes) == 0 and c.boxes.shape == (0, 4) and c.boxes.dtype == np.float32
    assert (a.width, a.height) == (40, 30) and not a.difficult.any()
    stats = data.stats
    assert (stats["boxes_clipped"], stats["boxes_degenerate_dropped"], stats["images_empty_kept"]) == (1, 2, 1)
    assert (stats["images"], stats["boxes"], stats["crowd_boxes"]) == (3, 4, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 2 box" in warnings[0].getMessage()
    gt_ids = sorted(ann["id"] for ann in data.coco_gt["annotations"])
    assert gt_ids == [1, 2, 4, 5] and {img["id"] for img in data.coco_gt["images"]} == {10, 20, 30}
    crowd = next(ann for ann in data.coco_gt["annotations"] if ann["id"] == 4)
    assert crowd["iscrowd"] == 1 and crowd["bbox"] == [0, 0, 50, 40]


def test_coco_given_class_order_and_keep_empty(coco_files):
    data = load_coco(*coco_files, classes=["bird", "cat", "dog"], keep_empty=False)
    assert data.category_ids == [9, 2, 5]
    np.testing.assert_array_equal(data.samples[0].labels, [3, 2])
    assert [s.image_id for s in data.samples] == [10, 20] and data.stats["images_empty_dropped"] == 1
    assert {img["id"] for img in data.coco_gt["images"]} == {10, 20}
    _raises_one_line("'horse'", load_coco, *coco_files, classes=["cat", "horse"])
    _raises_one_line("annotation id 1 ", load_coco, *coco_files, classes=["cat", "bird"])  # ann 1 is a dog


def test_coco_gt_round_trips_through_cocoeval(coco_files):
    """Perfect predictions, mapped back with category_ids, score AP 1 against coco_gt."""
    data = load_coco(*coco_files)
    predictions = [
        {"image_id": s.image_id, "category_id": data.category_ids[label - 1],
         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": 0.9}
        for s in data.samples
        for (x1, y1, x2, y2), label, crowd in zip(s.boxes, s.labels, s.iscrowd) if not crowd
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data.coco_gt
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(predictions), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_coco_errors(coco_files, tmp_path):
    ann, image_dir = coco_files
    _rewrite(ann, lambda c: c["annotations"].append(
        {"id": 77, "image_id": 10, "category_id": 4, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}))
    _raises_one_line("annotation id 77", load_coco, ann, image_dir)
    _rewrite(ann, lambda c: c["annotations"].pop())
    (image_dir / "b.png").unlink()
    _raises_one_line("b.png", load_coco, ann, image_dir)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,\n  oops]}')
    _raises_one_line("bad.json: malformed JSON at line 2", load_coco, bad, image_dir)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    _raises_one_line("no images", load_coco, empty, image_dir)
    _raises_one_line("not found", load_coco, tmp_path / "missing.json", image_dir)


# ------------------------------------------------------------------------------------------------- VOC

_VOC_XML = """<annotation>
  <filename>x1.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
  <object><name>cat</name><truncated>1</truncated><difficult>1</difficult>
    <bndbox><xmin>5</xmin><ymin>6</ymin><xmax>10</xmax><ymax>12</ymax></bndbox></object>
</annotation>
"""


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations" / "x1.xml").write_text(_VOC_XML)
    _image(root / "JPEGImages" / "x1.jpg", 40, 30)
    (root / "ImageSets" / "Main" / "train.txt").write_text("x1\n\n")
    return root


def test_voc_parse(voc_root):
    data = load_voc(voc_root, "train")
    assert data.classes == list(VOC_CLASSES) and data.category_ids == list(range(1, 21))
    (sample,) = data.samples
    np.testing.assert_array_equal(sample.boxes, [[0, 0, 40, 30], [4, 5, 10, 12]])  # 1-based inclusive -> 0-based
    np.testing.assert_array_equal(sample.labels, [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1])
    np.testing.assert_array_equal(sample.difficult, [False, True])
    assert not sample.iscrowd.any() and data.stats["difficult_boxes"] == 1 and data.stats["boxes_clipped"] == 0
    cat = data.coco_gt["annotations"][1]
    assert cat["bbox"] == [4.0, 5.0, 6.0, 7.0] and cat["difficult"] == 1 and cat["iscrowd"] == 0
    assert difficult_as_crowd(data.coco_gt)["annotations"][1]["iscrowd"] == 1 and cat["iscrowd"] == 0
    custom = load_voc(voc_root, "train", classes=["cat", "dog"])
    np.testing.assert_array_equal(custom.samples[0].labels, [2, 1])


def test_voc_errors(voc_root):
    (voc_root / "Annotations" / "x1.xml").write_text(_VOC_XML.replace("</size>", "</sise>"))
    _raises_one_line(r"x1\.xml: malformed XML", load_voc, voc_root, "train")
    (voc_root / "Annotations" / "x1.xml").write_text(_VOC_XML.replace(">cat<", ">unicorn<"))
    message = _raises_one_line("'unicorn'", load_voc, voc_root, "train")
    assert "x1.xml" in message
    (voc_root / "ImageSets" / "Main" / "train.txt").write_text("x1\nx2\n")
    message = _raises_one_line("'x2'", load_voc, voc_root, "train", classes=["cat", "dog", "unicorn"])
    assert "train.txt" in message
    _raises_one_line("val.txt", load_voc, voc_root, "val")


# ---------------------------------------------------------------------------------------------- shapes


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_generation_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_module, "SHAPES_SPLITS", {"train": 4, "val": 2})
    first, second = shapes_module.shapes_dataset(tmp_path / "a"), shapes_module.shapes_dataset(tmp_path / "b")
    one, two = _tree(first), _tree(second)
    assert len(one) == 2 + 6 * 2 + 6 + 2  # 2 JSON, 6 images x 2 formats, 6 XML, 2 split files
    assert one == two
    stamp = (first / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert shapes_module.shapes_dataset(tmp_path / "a") == first  # reused, not rewritten
    assert (first / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError):
        shapes_module.load_shapes("test", cache_dir=tmp_path / "a")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shapes_cache")


@pytest.mark.parametrize("split, count", [("train", 300), ("val", 100)])
def test_shapes_coco_and_voc_agree(shapes_root, split, count):
    coco = shapes_module.load_shapes(split, "coco", cache_dir=shapes_root)
    voc = shapes_module.load_shapes(split, "voc", cache_dir=shapes_root)
    assert len(coco.samples) == len(voc.samples) == count
    assert coco.classes == voc.classes == ["circle", "square", "triangle"]
    assert coco.category_ids == [1, 3, 7] and voc.category_ids == [1, 2, 3]
    for c, v in zip(coco.samples, voc.samples):
        assert c.image_path.rsplit("/", 1)[-1] == v.image_path.rsplit("/", 1)[-1]
        np.testing.assert_array_equal(c.boxes, v.boxes)
        np.testing.assert_array_equal(c.labels, v.labels)
        np.testing.assert_array_equal(c.difficult, v.difficult)
        assert 1 <= len(c.boxes) <= 4 and (128 <= c.width <= 160) and (128 <= c.height <= 160)
    labels = np.concatenate([s.labels for s in coco.samples])
    assert set(labels.tolist()) == {1, 2, 3}
    assert 0 < coco.stats["difficult_boxes"] < 0.25 * coco.stats["boxes"]


# ---------------------------------------------------------------------------------- transforms, dataset


def test_hflip_maps_box_and_pixels():
    image = np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    flip = detection_transforms(True, hflip=1.0, scale_jitter=(1.0, 1.0), color_jitter=0.0)
    tensor, boxes, labels, crowd, difficult = flip(image, np.array([[5, 6, 15, 20]]), np.array([3]))
    np.testing.assert_allclose(boxes, [[50 - 15, 6, 50 - 5, 20]])  # x1' = W - x2, x2' = W - x1
    expected = torch.from_numpy(image[:, ::-1].copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(tensor, expected) and labels.tolist() == [3]


def test_zoom_clips_drops_and_keeps_flags_aligned():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [0, 30, 45, 70], [90, 0, 100, 100]], dtype=np.float32)
    labels = np.array([1, 2, 3, 4])
    zoom = detection_transforms(True, hflip=0.0, scale_jitter=(2.0, 2.0), color_jitter=0.0)
    _, out, kept, crowd, difficult = zoom(image, boxes, labels, labels == 3, labels % 2 == 0)
    # centre zoom x2: p -> 2p - 50. Box 1 leaves the image, box 4 keeps 0 area -> both dropped;
    # box 3 -> [-50, 10, 40, 90] keeps 40/90 of its width (> min_visibility 0.3) and is clipped.
    np.testing.assert_allclose(out, [[30, 30, 70, 70], [0, 10, 40, 90]], atol=1e-3)
    assert kept.tolist() == [2, 3] and crowd.tolist() == [False, True] and difficult.tolist() == [True, False]
    jitter = detection_transforms(True, scale_jitter=(0.5, 1.8))
    for seed in range(20):
        jitter.set_random_seed(seed)
        tensor, out, kept, _, difficult = jitter(image, boxes, labels, None, labels % 2 == 0)
        height, width = tensor.shape[-2:]
        assert (out[:, 0] >= 0).all() and (out[:, 2] <= width).all() and (out[:, 3] <= height).all()
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
        assert difficult.tolist() == (kept % 2 == 0).tolist()


def test_val_transform_is_identity():
    image = np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    boxes = np.array([[1.5, 2.25, 40, 29]], dtype=np.float32)
    tensor, out, *_ = detection_transforms(False)(image, boxes, np.array([1]))
    assert tensor.shape == (3, 30, 50) and tensor.dtype == torch.float32
    assert torch.equal((tensor * 255).round().byte(), torch.from_numpy(image).permute(2, 0, 1))
    np.testing.assert_array_equal(out, boxes)


def test_dataset_targets_reseeding_and_collate(coco_files):
    data = load_coco(*coco_files)
    plain = DetectionDataset(data)
    image, target = plain[1]
    assert image.shape == (3, 40, 50) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert target["image_id"] == 20 and target["iscrowd"].tolist() == [True, False]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert DetectionDataset(data, train=True)[1][1]["labels"].tolist() == [1]  # the crowd box is gone
    assert plain[2][1]["boxes"].shape == (0, 4)

    def items(ds, epoch):
        ds.set_epoch(epoch)
        return [ds[i] for i in range(len(ds))]

    def make():
        return DetectionDataset(data, detection_transforms(True, scale_jitter=(0.6, 1.6)), train=True, seed=7)

    first, second, other = items(make(), 3), items(make(), 3), items(make(), 4)
    backwards = make()
    backwards.set_epoch(3)
    backwards = [backwards[i] for i in reversed(range(len(backwards)))][::-1]  # order must not matter
    for (img_a, tgt_a), (img_b, tgt_b), (img_c, tgt_c) in zip(first, second, backwards):
        assert torch.equal(img_a, img_b) and torch.equal(tgt_a["boxes"], tgt_b["boxes"])
        assert torch.equal(img_a, img_c) and torch.equal(tgt_a["boxes"], tgt_c["boxes"])
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    images, targets = next(iter(DataLoader(plain, batch_size=3, collate_fn=detection_collate)))
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 40, 50), (3, 20, 20)]
    assert [t["image_id"] for t in targets] == [10, 20, 30]


def test_dataset_bad_and_mismatched_images(coco_files):
    ann, image_dir = coco_files
    data = load_coco(ann, image_dir)
    (image_dir / "a.png").write_bytes(b"not an image")
    with pytest.raises(BadImageError, match="a.png"):
        DetectionDataset(data)[0]
    _image(image_dir / "b.png", 40, 50)  # rotated relative to the annotated 50x40
    with pytest.raises(DataError, match="b.png: decoded size 40x50"):
        DetectionDataset(data)[1]
