"""Segmentation data: mask decoding, the VOC / mask-folder / COCO adapters, mask-aware transforms, the Dataset.

Every file is a real one written into tmp_path (palette / greyscale / RGB PNGs, JPEGs, a COCO JSON)."""

import json
import logging

import numpy as np
import pytest
from conftest import one_line_error
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from resvision.datasets.coco import load_coco_segmentation
from resvision.datasets.masks import read_mask, voc_colormap, write_mask
from resvision.datasets.segmentation import (
    SegmentationData,
    SegmentationDataset,
    SegmentationSample,
    load_mask_folders,
    verify_segmentation,
)
from resvision.datasets.segmentation_transforms import segmentation_transforms
from resvision.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from resvision.datasets.voc import VOC_CLASSES, VOC_SEG_CLASSES, load_voc_segmentation
from resvision.errors import ConfigError, DataError

IGNORE = 255


def _image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _palette_png(path, indices):
    """A VOC-style palette PNG written with Pillow directly (independent of write_mask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(indices, dtype=np.uint8), mode="P")
    palette = [(i * 37) % 256 for i in range(256 * 3)]
    image.putpalette(palette)
    image.save(path)


def _grey_png(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L").save(path)


def _rgb_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB").save(path)




def _index_mask(height=6, width=8):
    """Values 0..3 plus a 255 boundary column: exact, easy to compare."""
    mask = (np.arange(height)[:, None] + np.arange(width)[None, :]) % 4
    mask[:, -1] = IGNORE
    return mask.astype(np.int64)


# ------------------------------------------------------------------------------------------- read_mask


def test_palette_png_reads_back_the_indices(tmp_path):
    indices = np.array([[0, 1, 2, 20], [255, 7, 0, 13]], dtype=np.int64)
    _palette_png(tmp_path / "m.png", indices)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
    mask = read_mask(tmp_path / "m.png", num_classes=21)
    assert mask.dtype == np.int64 and mask.shape == (2, 4)
    np.testing.assert_array_equal(mask, indices)


def test_palette_colours_are_ignored_even_with_a_colour_table(tmp_path):
    indices = np.array([[0, 1], [2, 255]])
    _palette_png(tmp_path / "m.png", indices)
    colors = [[10, 10, 10], [20, 20, 20], [30, 30, 30]]
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", num_classes=3, colors=colors), indices)


def test_write_mask_round_trip_and_voc_palette(tmp_path):
    indices = _index_mask()
    write_mask(tmp_path / "w.png", indices)
    with Image.open(tmp_path / "w.png") as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[:768]).reshape(-1, 3)
    np.testing.assert_array_equal(read_mask(tmp_path / "w.png", num_classes=4), indices)
    assert palette[1].tolist() == [128, 0, 0] and palette[255].tolist() == [224, 224, 192]
    np.testing.assert_array_equal(voc_colormap(3), [[0, 0, 0], [128, 0, 0], [0, 128, 0]])


def test_greyscale_and_16_bit_index_masks(tmp_path):
    _grey_png(tmp_path / "l.png", [[0, 1], [2, 255]])
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", num_classes=3), [[0, 1], [2, 255]])
    wide = np.array([[0, 299], [300, 1]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i16.png", num_classes=301), wide.astype(np.int64))


def test_colour_mask_is_mapped_through_the_table(tmp_path):
    colors = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    rgb = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [9, 9, 9]]])
    _rgb_png(tmp_path / "c.png", rgb)
    mask = read_mask(tmp_path / "c.png", num_classes=3, colors=colors, ignore_colors=[[9, 9, 9]])
    np.testing.assert_array_equal(mask, [[0, 1], [2, IGNORE]])
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255)], axis=2).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "opaque.png", num_classes=3, colors=colors, ignore_colors=[[9, 9, 9]]),
        [[0, 1], [2, IGNORE]],
    )


def test_values_outside_the_classes_are_listed(tmp_path):
    path = tmp_path / "bad_values.png"
    _grey_png(path, [[0, 3, 7], [200, 255, 2]])
    message = one_line_error(DataError, [path, "3, 7, 200"], read_mask, path, num_classes=3)
    assert "255" in message.split("ignore value")[-1]  # 255 is named as the ignore value, not as a bad value
    assert "3, 7, 200, 255" not in message
    many = tmp_path / "many.png"
    _grey_png(many, np.arange(20, 40).reshape(4, 5))
    message = one_line_error(DataError, [many, "20, 21, 22, 23, 24, 25, 26, 27, 28, 29, ...", "20 distinct"],
                              read_mask, many, num_classes=3)
    assert "30" not in message.split("...")[0]
    # with another ignore value, 255 is a bad value
    one_line_error(DataError, [path, "3, 7, 200, 255"], read_mask, path, num_classes=3, ignore_index=254)


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "truncated", "rgb_without_table", "unknown_colour", "two_channels", "transparent", "float"],
)
def test_bad_mask_files_fail_with_one_line_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.png"
    kwargs = {"num_classes": 3}
    extra = []
    if case == "garbage":
        path.write_bytes(b"not a png at all")
    elif case == "truncated":
        _grey_png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 3, (64, 64)))
        path.write_bytes((tmp_path / "full.png").read_bytes()[:200])
    elif case == "rgb_without_table":
        _rgb_png(path, np.zeros((2, 2, 3)))
        extra = ["no colour table", "channels are equal"]
    elif case == "unknown_colour":
        _rgb_png(path, [[[0, 0, 0], [12, 34, 56]]])
        kwargs["colors"] = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
        extra = ["(12, 34, 56)", "1 pixels"]
    elif case == "two_channels":
        Image.fromarray(np.zeros((2, 2, 2), dtype=np.uint8), mode="LA").save(path)
        extra = ["mode LA", "2 channels"]
    elif case == "transparent":
        Image.fromarray(np.zeros((2, 2, 4), dtype=np.uint8), mode="RGBA").save(path)
        kwargs["colors"] = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
        extra = ["transparent"]
    elif case == "float":
        path = tmp_path / "float.tif"
        Image.fromarray(np.zeros((2, 2), dtype=np.float32), mode="F").save(path)
        extra = ["float"]
    one_line_error(DataError, [path, *extra], read_mask, path, **kwargs)


def test_malformed_colour_tables_are_config_errors(tmp_path):
    _rgb_png(tmp_path / "c.png", np.zeros((2, 2, 3)))
    one_line_error(ConfigError, ["2 colours for 3 classes"], read_mask, tmp_path / "c.png", num_classes=3,
                    colors=[[0, 0, 0], [1, 1, 1]])
    one_line_error(ConfigError, ["listed twice"], read_mask, tmp_path / "c.png", num_classes=2,
                    colors=[[0, 0, 0], [0, 0, 0]])
    one_line_error(ConfigError, ["[0, 0, 300]"], read_mask, tmp_path / "c.png", num_classes=2,
                    colors=[[0, 0, 0], [0, 0, 300]])


# ------------------------------------------------------------------------------------------------- VOC


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOC2012"
    masks = {"2007_000001": _index_mask(6, 8), "2007_000002": np.full((5, 7), 15)}
    masks["2007_000002"][0, 0] = 20
    for k, (stem, mask) in enumerate(masks.items()):
        _image(root / "JPEGImages" / f"{stem}.jpg", mask.shape[1], mask.shape[0], seed=k)
        _palette_png(root / "SegmentationClass" / f"{stem}.png", mask)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000002\n\n2007_000001\n")
    return root, masks


def test_voc_segmentation_happy_path(voc_root):
    root, masks = voc_root
    data = load_voc_segmentation(root, "train")
    assert VOC_SEG_CLASSES == ("background", *VOC_CLASSES) and len(VOC_SEG_CLASSES) == 21
    assert data.classes == list(VOC_SEG_CLASSES) and data.ignore_index == IGNORE and data.num_classes == 21
    assert [s.stem for s in data.samples] == ["2007_000002", "2007_000001"]  # split-file order
    assert data.samples[0].image_path == str(root / "JPEGImages" / "2007_000002.jpg")
    assert data.samples[0].mask_path == str(root / "SegmentationClass" / "2007_000002.png")
    dataset = SegmentationDataset(data)
    for index, stem in enumerate(["2007_000002", "2007_000001"]):
        image, mask, returned = dataset[index]
        assert returned == index and mask.dtype == torch.int64 and image.dtype == torch.float32
        assert image.shape == (3, *masks[stem].shape) and 0.0 <= image.min() and image.max() <= 1.0
        np.testing.assert_array_equal(mask.numpy(), masks[stem])
    verify_segmentation(data, progress=False)


def test_voc_segmentation_bad_input(voc_root):
    root, _ = voc_root
    one_line_error(DataError, [root / "ImageSets" / "Segmentation" / "val.txt"], load_voc_segmentation, root, "val")
    (root / "SegmentationClass" / "2007_000001.png").unlink()
    one_line_error(DataError, ["2007_000001", root / "SegmentationClass" / "2007_000001.png"],
                    load_voc_segmentation, root, "train")
    (root / "JPEGImages" / "2007_000002.jpg").unlink()
    one_line_error(DataError, ["2007_000002", root / "JPEGImages" / "2007_000002"], load_voc_segmentation,
                    root, "train")


# ---------------------------------------------------------------------------------------- mask folders


def test_mask_folders_index_masks_and_orphans(tmp_path, caplog):
    for k, stem in enumerate(["b", "a"]):
        _image(tmp_path / "images" / f"{stem}.png", 8, 6, seed=k)
        _grey_png(tmp_path / "masks" / f"{stem}.png", _index_mask() if stem == "a" else np.zeros((6, 8)))
    _grey_png(tmp_path / "masks" / "orphan1.png", np.zeros((2, 2)))
    _grey_png(tmp_path / "masks" / "orphan2.png", np.zeros((2, 2)))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="resvision"):
        data = load_mask_folders(tmp_path / "images", tmp_path / "masks", ["bg", "x", "y", "z"])
    assert [s.stem for s in data.samples] == ["a", "b"]
    assert data.classes == ["bg", "x", "y", "z"] and data.colors is None
    assert "ignoring 2 mask(s) without an image" in caplog.text
    np.testing.assert_array_equal(SegmentationDataset(data)[0][1].numpy(), _index_mask())


def test_mask_folders_colour_masks(tmp_path):
    colors = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    indices = np.array([[0, 1, 2], [2, 1, 0]])
    _image(tmp_path / "images" / "s.jpg", 3, 2)
    _rgb_png(tmp_path / "masks" / "s.png", np.array(colors)[indices])
    data = load_mask_folders(tmp_path / "images", tmp_path / "masks", ["bg", "red", "green"], colors=colors)
    np.testing.assert_array_equal(SegmentationDataset(data)[0][1].numpy(), indices)
    # the same RGB mask without a colour table fails when read, naming the mask
    plain = load_mask_folders(tmp_path / "images", tmp_path / "masks", ["bg", "red", "green"])
    one_line_error(DataError, [tmp_path / "masks" / "s.png", "no colour table"],
                    SegmentationDataset(plain).__getitem__, 0)


def test_mask_folders_image_without_mask(tmp_path):
    _image(tmp_path / "images" / "a.png", 4, 4)
    _image(tmp_path / "images" / "lonely.jpg", 4, 4)
    _grey_png(tmp_path / "masks" / "a.png", np.zeros((4, 4)))
    one_line_error(DataError, [tmp_path / "images" / "lonely.jpg", tmp_path / "masks" / "lonely.png"],
                    load_mask_folders, tmp_path / "images", tmp_path / "masks", ["bg", "fg"])
    one_line_error(DataError, [tmp_path / "nope"], load_mask_folders, tmp_path / "nope", tmp_path / "masks", ["bg"])


# ------------------------------------------------------------------------------------------------ COCO

H, W = 20, 30
POLYGON = [2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]  # a rectangle, category 7 ("dog")


def _rect(rows, cols):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def _coco_content():
    rle = mask_utils.encode(np.asfortranarray(_rect(slice(12, 18), slice(15, 26))))
    rle["counts"] = rle["counts"].decode("ascii")
    flat = _rect(slice(8, 12), slice(0, 6)).flatten(order="F")  # the crowd region, overlapping the polygon
    return {
        "images": [
            {"id": 5, "file_name": "a.png", "width": W, "height": H},
            {"id": 2, "file_name": "sub/empty.png", "width": 10, "height": 8},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [  # the crowd region first: it must still win over the polygon painted after it
            {"id": 3, "image_id": 5, "category_id": 7, "iscrowd": 1, "bbox": [0, 8, 6, 4], "area": 24,
             "segmentation": {"size": [H, W], "counts": _uncompressed_counts(flat)}},
            {"id": 1, "image_id": 5, "category_id": 7, "segmentation": [POLYGON], "iscrowd": 0,
             "bbox": [2, 2, 10, 8], "area": 80},
            {"id": 2, "image_id": 5, "category_id": 3, "segmentation": rle, "iscrowd": 0,
             "bbox": [15, 12, 11, 6], "area": 66},
        ],
    }


def _uncompressed_counts(flat):
    """COCO's uncompressed RLE of a 0/1 column-major vector: alternating run lengths, starting with zeros."""
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


@pytest.fixture
def coco_files(tmp_path):
    content = _coco_content()
    for info in content["images"]:
        _image(tmp_path / "img" / info["file_name"], info["width"], info["height"], seed=info["id"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    return path, tmp_path / "img"


def _reference_masks(path):
    coco = COCO(str(path))
    return {ann["id"]: coco.annToMask(ann).astype(bool) for ann in coco.dataset["annotations"]}


def test_coco_rasterisation_matches_pycocotools(coco_files, capsys):
    path, images = coco_files
    data = load_coco_segmentation(path, images)
    assert data.classes == ["background", "cat", "dog"] and data.category_ids == [3, 7]
    assert [s.image_id for s in data.samples] == [2, 5] and [s.stem for s in data.samples] == ["empty", "a"]
    assert all(s.mask_path is None for s in data.samples)
    reference = _reference_masks(path)
    capsys.readouterr()
    mask = SegmentationDataset(data)[1][1].numpy()
    assert mask.shape == (H, W)
    polygon = reference[1] & ~reference[3]
    assert polygon.sum() > 50
    np.testing.assert_array_equal(mask == 2, polygon)  # dog = index 2, exactly pycocotools' pixels
    np.testing.assert_array_equal(mask == 1, _rect(slice(12, 18), slice(15, 26)).astype(bool))  # the RLE, cat
    np.testing.assert_array_equal(mask == IGNORE, _rect(slice(8, 12), slice(0, 6)).astype(bool))  # crowd
    np.testing.assert_array_equal(reference[3], _rect(slice(8, 12), slice(0, 6)).astype(bool))
    assert (mask[reference[1] & reference[3]] == IGNORE).all() and (reference[1] & reference[3]).any()
    assert set(np.unique(mask)) == {0, 1, 2, IGNORE}
    np.testing.assert_array_equal(SegmentationDataset(data)[0][1].numpy(), np.zeros((8, 10)))  # no annotations
    verify_segmentation(data, progress=False)


def test_coco_class_selection_paints_other_categories_as_background(coco_files):
    path, images = coco_files
    for classes in (["dog"], ["background", "dog"]):
        data = load_coco_segmentation(path, images, classes=classes)
        assert data.classes == ["background", "dog"] and data.category_ids == [7]
        mask = SegmentationDataset(data)[1][1].numpy()
        assert set(np.unique(mask)) == {0, 1, IGNORE}
        assert (mask[12:18, 15:26] == 0).all()  # the cat RLE is background now
    one_line_error(DataError, [path, "'horse'"], load_coco_segmentation, path, images, classes=["horse"])


def _rewrite(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def test_coco_bad_input(coco_files):
    path, images = coco_files
    one_line_error(DataError, [path.parent / "none.json"], load_coco_segmentation, path.parent / "none.json", images)
    _rewrite(path, lambda c: c["annotations"][2]["segmentation"].update(size=[H, W + 1]))
    one_line_error(DataError, [path, "annotation id 2", "RLE size"], load_coco_segmentation, path, images)
    _rewrite(path, lambda c: c["annotations"][2].pop("segmentation"))
    one_line_error(DataError, [path, "annotation id 2", "no 'segmentation'"], load_coco_segmentation, path, images)
    _rewrite(path, lambda c: c["annotations"][2].update(segmentation=[[1, 2, "x"]]))
    one_line_error(DataError, [path, "annotation id 2", "malformed polygon"], load_coco_segmentation, path, images)
    _rewrite(path, lambda c: c["annotations"][2].update(segmentation=[[1, 1, 5, 1, 5, 5]]))
    (images / "sub" / "empty.png").unlink()
    one_line_error(DataError, [path, images / "sub" / "empty.png"], load_coco_segmentation, path, images)


def test_coco_annotated_size_differs_from_the_image(coco_files):
    path, images = coco_files
    _image(images / "a.png", W + 2, H)  # the JSON still says W x H
    data = load_coco_segmentation(path, images)
    one_line_error(DataError, [path, images / "a.png", f"{W}x{H}", f"{W + 2}x{H}", "image id 5"],
                    SegmentationDataset(data).__getitem__, 1)
    one_line_error(DataError, [path, images / "a.png", f"{W + 2}x{H}"], verify_segmentation, data, progress=False)


# --------------------------------------------------------------------------------------------- dataset


def test_mask_size_differs_from_image_names_both_files(tmp_path):
    _image(tmp_path / "images" / "a.png", 12, 8)
    _grey_png(tmp_path / "masks" / "a.png", np.zeros((8, 10)))
    data = load_mask_folders(tmp_path / "images", tmp_path / "masks", ["bg", "fg"])
    names = [tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png", "10x8", "12x8"]
    one_line_error(DataError, names, SegmentationDataset(data).__getitem__, 0)
    one_line_error(DataError, names, verify_segmentation, data, progress=False)


def test_verify_reports_bad_mask_values(tmp_path):
    for stem, values in (("a", np.zeros((4, 4))), ("b", np.full((4, 4), 9))):
        _image(tmp_path / "images" / f"{stem}.png", 4, 4)
        _grey_png(tmp_path / "masks" / f"{stem}.png", values)
    data = load_mask_folders(tmp_path / "images", tmp_path / "masks", ["bg", "fg"])
    one_line_error(DataError, [tmp_path / "masks" / "b.png", "9"], verify_segmentation, data, progress=False)


def test_ignore_index_must_not_be_a_class():
    with pytest.raises(ConfigError, match="ignore_index 1"):
        SegmentationData([], ["bg", "fg"], ignore_index=1)


# ------------------------------------------------------------------------------------------ transforms


def _checker(height, width, values=(0, 3)):
    mask = np.full((height, width), values[0], dtype=np.int64)
    mask[(np.arange(height)[:, None] + np.arange(width)[None, :]) % 2 == 1] = values[1]
    return mask


def test_train_transform_never_interpolates_masks():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    mask = _checker(16, 16)  # bilinear resizing of 0/3 would create 1 and 2
    mask[0, :] = IGNORE  # and blur 255 into 85..170
    transform = segmentation_transforms(True, crop_size=24, scale=(0.5, 2.0))
    seen = set()
    for seed in range(30):
        transform.set_random_seed(seed)
        tensor, out = transform(image, mask)
        assert tensor.shape == (3, 24, 24) and tensor.dtype == torch.float32
        assert out.shape == (24, 24) and out.dtype == torch.int64
        seen |= set(np.unique(out.numpy()).tolist())
    assert seen <= {0, 3, IGNORE} and {0, 3, IGNORE} <= seen


def test_train_transform_pads_masks_with_ignore():
    image = np.full((6, 8, 3), 200, dtype=np.uint8)
    mask = _index_mask(6, 8)
    mask[:, -1] = 2  # no ignore pixels in the input
    transform = segmentation_transforms(True, crop_size=16, scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    transform.set_random_seed(1)
    tensor, out = transform(image, mask)
    out = out.numpy()
    assert out.shape == (16, 16) and (out == IGNORE).sum() == 16 * 16 - 6 * 8
    rows, cols = np.nonzero(out != IGNORE)
    np.testing.assert_array_equal(out[rows.min():rows.max() + 1, cols.min():cols.max() + 1], mask)
    padded = torch.from_numpy(out == IGNORE)
    # the mean colour: 0 after normalisation (to the uint8 rounding), as the collate and the model pad
    assert tensor[:, padded].abs().max() < 0.01 and tensor[:, ~padded].abs().min() > 0.5
    # scale (2, 2) with the crop equal to the scaled image: every mask pixel becomes an exact 2x2 block
    double = segmentation_transforms(True, crop_size=(12, 16), scale=(2.0, 2.0), hflip=0.0, color_jitter=0.0)
    double.set_random_seed(0)
    _, out = double(image, mask)
    np.testing.assert_array_equal(out.numpy(), np.kron(mask, np.ones((2, 2), dtype=np.int64)))
    # a rectangular crop, larger than the image in one side only
    rect = segmentation_transforms(True, crop_size=(4, 12), scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    rect.set_random_seed(0)
    _, out = rect(image, mask)
    assert out.shape == (4, 12) and (out.numpy() == IGNORE).sum() == 4 * 4


def test_train_transform_handles_wide_mask_values():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    mask = (np.arange(100).reshape(10, 10) * 3).astype(np.int64)  # 0..297: not uint8
    transform = segmentation_transforms(True, crop_size=12, scale=(0.5, 2.0), ignore_index=1000)
    seen = set()
    for seed in range(8):
        transform.set_random_seed(seed)
        _, out = transform(image, mask)
        seen |= set(np.unique(out.numpy()).tolist())
    assert seen <= set(mask.ravel().tolist()) | {1000}
    assert 1000 in seen and max(seen - {1000}) > 255  # padded with 1000, values above 255 kept


def test_eval_transform_only_normalises():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    mask = _index_mask(7, 9)
    tensor, out = segmentation_transforms(False, crop_size=4)(image, mask)
    np.testing.assert_array_equal(out.numpy(), mask)
    expected = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor.numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_transform_arguments_are_checked():
    for kwargs in ({"crop_size": 0}, {"scale": (2.0, 1.0)}, {"scale": (0.0, 1.0)}, {"hflip": 1.5},
                   {"color_jitter": -0.1}, {"crop_size": (1, 2, 3)}):
        with pytest.raises(ValueError):
            segmentation_transforms(True, **kwargs)


@pytest.fixture
def position_data(tmp_path):
    """One 40x40 image whose mask value encodes the pixel position (so two crops are told apart)."""
    _image(tmp_path / "images" / "p.png", 40, 40)
    _grey_png(tmp_path / "masks" / "p.png", (np.arange(1600).reshape(40, 40) % 250))
    _image(tmp_path / "images" / "q.png", 40, 40, seed=1)
    _grey_png(tmp_path / "masks" / "q.png", (np.arange(1600).reshape(40, 40) % 250))
    return load_mask_folders(tmp_path / "images", tmp_path / "masks", [str(i) for i in range(250)])


def test_augmentation_is_a_function_of_seed_epoch_and_index(position_data):
    def dataset(seed):
        return SegmentationDataset(position_data, segmentation_transforms(True, crop_size=16), train=True, seed=seed)

    first, again = dataset(7), dataset(7)
    image_a, mask_a, index = first[0]
    image_b, mask_b, _ = again[0]
    assert index == 0 and torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    first[1]  # other samples in between do not change sample 0's stream
    assert torch.equal(first[0][1], mask_a) and torch.equal(first[0][0], image_a)
    first.set_epoch(1)
    assert not torch.equal(first[0][1], mask_a)  # another epoch: another crop
    assert not torch.equal(dataset(8)[0][1], mask_a)  # another seed: another crop
    first.set_epoch(0)
    assert torch.equal(first[0][1], mask_a)


def test_dataloader_batches_train_crops(position_data):
    dataset = SegmentationDataset(position_data, segmentation_transforms(True, crop_size=16), train=True)
    images, masks, indices = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert images.shape == (2, 3, 16, 16) and masks.shape == (2, 16, 16) and masks.dtype == torch.int64
    assert indices.tolist() == [0, 1]
    assert dataset[-1][2] == 1


def test_sample_record_defaults():
    sample = SegmentationSample("i.jpg", "m.png", "i")
    assert sample.annotations is None and sample.height is None and sample.source is None
