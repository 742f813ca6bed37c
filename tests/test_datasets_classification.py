"""Classification data: listing, splitting, bad-image policy, reproducible augmentation, digits demo."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from resvision.datasets import demo
from resvision.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BadImageError,
    ClassificationDataset,
    build_classification_datasets,
    classification_transforms,
    csv_samples,
    digits_folder,
    image_folder_samples,
    split_samples,
)
from resvision.errors import DataError

# ----------------------------------------------------------------------------------------- helpers


def _write_png(path: Path, value: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _make_tree(root: Path, counts: dict[str, int]) -> None:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _write_png(root / name / f"{i}.png", 100 * c + i)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------------------------- image folders


def test_image_folder_samples_happy_path(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"zebra": 2, "ant": 3})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / "._0.png").write_bytes(b"macOS resource fork")
    _write_png(tmp_path / "ant" / "sub" / "UPPER.PNG", 1)  # recursive, case-insensitive extension

    samples, classes = image_folder_samples(tmp_path)

    assert classes == ["ant", "zebra"]
    assert Counter(t for _, t in samples) == {0: 4, 1: 2}
    assert all(Path(p).suffix.lower() == ".png" for p, _ in samples)


def test_image_folder_given_classes_fix_the_order(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"a": 1, "b": 1})
    samples, classes = image_folder_samples(tmp_path, classes=["b", "a"])
    assert classes == ["b", "a"]
    assert [Path(p).parent.name for p, t in samples if t == 0] == ["b"]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found.*missing_root"):
        image_folder_samples(tmp_path / "missing_root")

    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    with pytest.raises(DataError, match="no class folders"):
        image_folder_samples(empty_root)

    _make_tree(tmp_path / "tree", {"cat": 1})
    (tmp_path / "tree" / "dog").mkdir()
    with pytest.raises(DataError) as error:
        image_folder_samples(tmp_path / "tree")
    assert str(tmp_path / "tree" / "dog") in str(error.value)

    with pytest.raises(DataError, match="'bird'"):
        image_folder_samples(tmp_path / "tree", classes=["cat", "bird"])


# ------------------------------------------------------------------------------------------- CSV


def test_csv_samples_happy_path(tmp_path: Path) -> None:
    _make_tree(tmp_path / "img", {"x": 2})
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("id,path,label\n1,img/x/0.png,dog\n2,img/x/1.png,cat\n\n3,img/x/0.png, dog \n")

    samples, classes = csv_samples(csv_file)

    assert classes == ["cat", "dog"]
    assert [t for _, t in samples] == [1, 0, 1]
    assert samples[0][0] == str(tmp_path / "img" / "x" / "0.png")  # relative to the CSV's folder

    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = other / "list.csv"
    moved.write_text("path,label\nx/1.png,cat\n")
    samples, _ = csv_samples(moved, classes=["cat", "dog"], root=tmp_path / "img")
    assert samples == [(str(tmp_path / "img" / "x" / "1.png"), 0)]


def test_csv_errors(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", 0)
    with pytest.raises(DataError, match="not found.*absent.csv"):
        csv_samples(tmp_path / "absent.csv")

    no_label = tmp_path / "no_label.csv"
    no_label.write_text("path,class\na.png,cat\n")
    with pytest.raises(DataError, match="'label'"):
        csv_samples(no_label)

    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(DataError, match="no data rows"):
        csv_samples(empty)

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("path,label\na.png,cat\na.png,wolf\n")
    with pytest.raises(DataError) as error:
        csv_samples(unknown, classes=["cat", "dog"])
    message = str(error.value)
    assert f"{unknown}:3" in message and "'wolf'" in message and "\n" not in message


# ------------------------------------------------------------------------------------- splitting


def test_split_samples_is_stratified_and_deterministic() -> None:
    samples = [(f"{c}_{i}.png", c) for c, n in enumerate([50, 30, 20]) for i in range(n)]
    train, val = split_samples(samples, 0.2, seed=3)

    assert Counter(t for _, t in val) == {0: 10, 1: 6, 2: 4}
    assert sorted(train + val) == sorted(samples)
    assert split_samples(samples, 0.2, seed=3) == (train, val)
    assert split_samples(samples, 0.2, seed=4) != (train, val)


def test_split_needs_two_images_per_class() -> None:
    with pytest.raises(DataError, match="class index 1"):
        split_samples([("a", 0), ("b", 0), ("c", 1)], 0.5, seed=0)


# -------------------------------------------------------------------------------------- dataset


def test_skip_mode_replaces_and_records_a_truncated_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _make_tree(tmp_path, {"a": 2, "b": 2})
    samples, classes = image_folder_samples(tmp_path)
    bad = samples[1][0]
    _truncate(Path(bad))
    ds = ClassificationDataset(samples, classes, on_bad_image="skip")

    with caplog.at_level(logging.WARNING, logger="resvision"):
        image, target = ds[1]

    assert ds.bad_images == {bad}
    np.testing.assert_array_equal(image, np.asarray(Image.open(samples[2][0]).convert("RGB")))
    assert target == samples[2][1]
    assert bad in caplog.text

    with pytest.raises(BadImageError, match=re.escape(bad)):
        ClassificationDataset(samples, classes, on_bad_image="error")[1]


def test_verify_drops_unreadable_images(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"a": 3})
    samples, classes = image_folder_samples(tmp_path)
    Path(samples[0][0]).write_bytes(b"junk")
    ds = ClassificationDataset(samples, classes)
    assert ds.verify() == [samples[0][0]]
    assert len(ds) == 2 and ds.targets == [0, 0]


def test_augmentation_is_a_function_of_seed_epoch_and_index(digits_root: Path) -> None:
    samples, classes = image_folder_samples(digits_root / "train")
    samples = samples[:8]

    def dataset() -> ClassificationDataset:
        return ClassificationDataset(samples, classes, classification_transforms(True, 32, hflip=0.5), seed=7)

    first, second = dataset(), dataset()
    second[5]  # consuming other samples first must not change sample 3
    first.set_epoch(2)
    second.set_epoch(2)
    assert torch.equal(first[3][0], second[3][0])
    second.set_epoch(3)
    assert not torch.equal(first[3][0], second[3][0])


def test_worker_count_does_not_change_batches(digits_root: Path) -> None:
    samples, classes = image_folder_samples(digits_root / "train")
    ds = ClassificationDataset(samples[:24], classes, classification_transforms(True, 16), seed=1)
    ds.set_epoch(4)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(ds, batch_size=6, num_workers=workers, shuffle=False)
        return [images for images, _ in loader]

    for serial, parallel in zip(batches(0), batches(2), strict=True):
        assert torch.equal(serial, parallel)


def test_build_folder_split_and_digits(tmp_path: Path, digits_root: Path) -> None:
    _make_tree(tmp_path / "flat", {"a": 5, "b": 5})
    train_ds, val_ds = build_classification_datasets("folder", root=tmp_path / "flat", val_fraction=0.2, image_size=16)
    assert (len(train_ds), len(val_ds)) == (8, 2)
    assert train_ds[0][0].shape == (3, 16, 16)

    train_ds, val_ds = build_classification_datasets("digits", root=digits_root.parent, image_size=32)
    assert (len(train_ds), len(val_ds)) == (1437, 360)
    assert val_ds.classes == [str(d) for d in range(10)]


# ----------------------------------------------------------------------------------------- demo


def test_digits_folder_contents(digits_root: Path) -> None:
    train = list((digits_root / "train").glob("*/*.png"))
    val = list((digits_root / "val").glob("*/*.png"))
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(p.name for p in (digits_root / "train").iterdir()) == [str(d) for d in range(10)]

    digits = load_digits()
    sample = val[0]
    index = int(sample.stem)
    assert int(sample.parent.name) == digits.target[index]
    expected = np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(sample)), expected)


def test_digits_folder_is_written_once(digits_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(out: Path) -> None:
        raise AssertionError("the cached digits were rewritten")

    monkeypatch.setattr(demo, "_write_digits", fail)
    marker = next((digits_root / "train" / "0").iterdir())
    before = marker.stat().st_mtime_ns
    assert digits_folder(digits_root.parent) == digits_root
    assert marker.stat().st_mtime_ns == before
    assert not [p for p in digits_root.parent.iterdir() if p.name.startswith(".digits-")]  # no staging left


# ------------------------------------------------------------------------------------- transforms


def test_val_transform_shape_and_normalisation() -> None:
    grey = np.full((10, 20, 3), 128, np.uint8)
    out = classification_transforms(False, 24)(grey)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out.std(dim=(1, 2)).numpy(), 0, atol=1e-5)

    custom = classification_transforms(False, 8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))(grey)
    expected = [(128 / 255 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, 128 / 255]
    np.testing.assert_allclose(custom[:, 0, 0].numpy(), expected, atol=1e-5)


def test_reseeding_gives_each_step_its_own_stream() -> None:
    # Compose.set_random_seed alone gives every step the same seed, which would tie the crop scale to
    # the brightness factor (both are each step's first uniform draw).
    transform = classification_transforms(True, 32)
    transform.set_random_seed(11)
    first_draws = [step.py_random.random() for step in transform.pipeline.transforms]
    assert len(set(first_draws)) == len(first_draws)


def test_train_transform_upsamples_tiny_images() -> None:
    tiny = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    transform = classification_transforms(True, 32, hflip=0.0, scale=(0.5, 1.0))
    assert transform(tiny).shape == (3, 32, 32)
