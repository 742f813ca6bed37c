"""Test-wide settings: never touch the network or the user's cache; small thread counts."""

import os

os.environ["RESVISION_OFFLINE"] = "1"  # weights are never downloaded in tests
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the suite's tensors are small, and with two OpenMP threads on two cores any other
# process on the machine makes small convolutions 10-30x slower (threads spin-wait for each other).
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Built-in datasets and weight caches go to a per-session folder, not ~/.cache."""
    home = tmp_path_factory.mktemp("resvision_home")
    os.environ["RESVISION_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")
    yield home


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A small real ImageFolder (PNG files): 3 colour classes, 24 train / 9 val images of 16x16."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, count in (("train", 8), ("val", 3)):
        for name, rgb in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                noise = rng.integers(-40, 40, size=(16, 16, 3))
                pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


# A seconds-long segmentation run on the built-in shapes: tiny FPN, 3 steps, the full eval and report.
SEG_FAST = ["train.max_iters=3", "train.progress=false", "train.batch_size=4", "data.crop_size=64",
            "model.backbone.custom.widths=[8,8,16,16]", "model.backbone.custom.layers=[1,1,1,1]",
            "model.decoder_channels=[16,32]"]


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    """The :data:`SEG_FAST` run, shared by the segmentation task and deploy tests (read it, do not write in it)."""
    from resvision.cli import main

    out = tmp_path_factory.mktemp("seg") / "run"
    assert main(["train", "--task", "segmentation", "--output", str(out), *SEG_FAST]) == 0
    return out


def tiny_overrides(root, run_dir, *extra):
    """Overrides for a seconds-long classification run on :func:`tiny_folder`."""
    return [
        "data.format=folder", f"data.root={root}", "data.image_size=16", "data.resize=16",
        "data.scale=[0.5, 1.0]", "model.backbone.name=resnet20", "train.epochs=2", "train.batch_size=8",
        "train.num_workers=0", "train.progress=false", "train.log_every=1", "train.deterministic=true",
        "optim.lr=0.05", "sched.warmup_epochs=0", f"output={run_dir}", *extra,
    ]


def one_line_error(error, names, fn, *args, **kwargs):
    """Call ``fn``, expect ``error`` with a one-line message containing every string in ``names``; return it."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, (name, message)
    return message


TINY_FACES = {"train_identities": 6, "train_images": 3, "test_identities": 10, "test_images": 3, "folds": 2,
              "pairs_per_fold": 6}


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory):
    """The built-in synthetic people at :data:`TINY_FACES` sizes, written into a cache folder of their own."""
    root = tmp_path_factory.mktemp("faces_cache")
    from resvision.datasets.synthetic_faces import SYNTHETIC_FACES_SIZES, synthetic_faces_dataset

    with pytest.MonkeyPatch.context() as patch:
        for key, value in TINY_FACES.items():
            patch.setitem(SYNTHETIC_FACES_SIZES, key, value)
        synthetic_faces_dataset(root)
    return root
