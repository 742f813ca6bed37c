"""Built-in demo data that needs no download: scikit-learn's bundled handwritten digits.

``load_digits`` ships 1,797 real 8x8 scans (UCI "Optical Recognition of Handwritten Digits",
16 grey levels, 0..16). :func:`digits_folder` writes them once as an ordinary ImageFolder of PNGs,
so the demo exercises exactly the code path a user's own folder of images takes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["DIGITS_VAL_FRACTION", "default_cache_dir", "digits_folder"]

log = logging.getLogger("resvision")

# Fixed split so every run, machine and test sees the same 1437 train / 360 val images.
DIGITS_VAL_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_DIGITS_MAX_LEVEL = 16  # load_digits pixels count ink in a 4x4 block of the 32x32 scan: 0..16


def default_cache_dir() -> Path:
    """Where built-in data is written: ``$RESVISION_HOME/data``, else ``~/.cache/resvision/data``."""
    home = os.environ.get("RESVISION_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "resvision"
    return base / "data"


def digits_folder(cache_dir: str | Path | None = None) -> Path:
    """Return an ImageFolder of the scikit-learn digits, writing it on first use.

    Layout: ``<cache>/digits/{train,val}/<0..9>/<index>.png`` where ``index`` is the row in
    ``load_digits()``; 1437 train / 360 val images from a stratified 80/20 split
    (``random_state=0``). Pixels are stored at native 8x8 as greyscale PNGs, levels scaled
    ``0..16 -> 0..255`` and rounded.

    The tree is built in a temporary sibling directory and moved into place with one
    ``os.replace``, so an interrupted first run never leaves a partial dataset, and concurrent
    first runs (e.g. several DDP ranks) end with one complete copy.

    Args:
        cache_dir: Cache root; default :func:`default_cache_dir`.

    Returns:
        ``<cache>/digits``, containing ``train/`` and ``val/``.
    """
    return write_once("digits", _write_digits, cache_dir)


def write_once(name: str, writer: Callable[[Path], None], cache_dir: str | Path | None = None) -> Path:
    """``<cache>/<name>``, created by ``writer(staging_dir)`` on first use.

    The writer fills a temporary folder that is then renamed into place, so an interrupted first
    run never leaves half a dataset and concurrent first runs (DDP ranks) do not collide.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / name
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        writer(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote the %s demo dataset to %s", name, target)
    return target


def _write_digits(out: Path) -> None:
    """Write the split digits as ``out/{train,val}/<label>/<index>.png``."""
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(
        indices,
        test_size=DIGITS_VAL_FRACTION,
        stratify=digits.target,
        random_state=_DIGITS_SPLIT_SEED,
    )
    pixels = np.rint(digits.images * (255.0 / _DIGITS_MAX_LEVEL)).astype(np.uint8)
    for split, split_idx in (("train", train_idx), ("val", val_idx)):
        for label in digits.target_names:
            (out / split / str(label)).mkdir(parents=True, exist_ok=True)
        for i in sorted(split_idx):
            path = out / split / str(digits.target[i]) / f"{i}.png"
            Image.fromarray(pixels[i]).save(path)  # 2-D uint8 -> mode "L"
