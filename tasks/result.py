"""What prediction returns: one :class:`Result` per image.

A result *is* the record ``predictions.json`` holds (a dict, so ``r["topk"]`` and ``json.dumps(r.to_dict())`` work)
with the task's attributes on top (``r.label``, ``r.boxes``, ``r.mask``, ``r.embedding``), the picture
``predict`` writes (:meth:`Result.plot`, an RGB array) and :meth:`Result.save`. It keeps the input as given (a
path, or the caller's own array / PIL image / tensor, not a copy), so a picture can be drawn from an in-memory image
too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..datasets import as_rgb


class Result(dict):
    """One image's prediction: the JSON record (this dict) plus attributes, :meth:`plot` and :meth:`save`."""

    #: keys whose values are arrays: left out of :meth:`to_dict` (:meth:`save` writes them as files instead)
    array_keys: ClassVar[tuple[str, ...]] = ()
    #: the picture's file name is ``<stem>_<picture>.png``
    picture: ClassVar[str] = "prediction"

    def __init__(self, record: dict[str, Any], source: Any) -> None:
        super().__init__(record)
        self.source = source  # the input as given: plot() draws on it

    @property
    def image(self) -> str:
        """How the input is named: its path, or ``<array 0>`` / ``<PIL image 1>`` / ``<tensor 2>``."""
        return self["image"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able record (what ``predictions.json`` holds for this image, less the names of its files)."""
        return {k: v for k, v in self.items() if k not in self.array_keys}

    def rgb(self) -> np.ndarray:
        """The input image, ``(H, W, 3)`` uint8 RGB, as the model saw it before preprocessing."""
        return as_rgb(self.source)

    def plot(self) -> np.ndarray:
        """The input with the task's overlay: an ``(H, W, 3)`` uint8 RGB array (what ``predict`` saves)."""
        return captioned(self.rgb(), self.caption())

    def caption(self) -> list[str]:
        """Text lines drawn above the image by the default :meth:`plot`."""
        return []

    @property
    def stem(self) -> str:
        """The file-name stem of this image's files: the input file's stem, or ``array_0`` for ``<array 0>``."""
        name = Path(self.image).stem if isinstance(self.source, (str, Path)) else self.image
        return re.sub(r"[^\w.-]+", "_", name).strip("_") or "image"

    def save(self, out_dir: str | Path, stem: str | None = None) -> list[Path]:
        """Write this image's files into ``out_dir`` (the picture ``<stem>_<picture>.png``; tasks add theirs, e.g.
        segmentation's mask) and return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem or self.stem}_{self.picture}.png"
        Image.fromarray(self.plot()).save(path)
        return [path]


def unique_stems(results: Sequence[Result]) -> list[str]:
    """File-name stems for ``results``, made unique (``a.jpg`` from two folders: ``a``, ``a_1``)."""
    used: set[str] = set()
    stems = []
    for r in results:
        name, k = r.stem, 0
        while name in used:
            k += 1
            name = f"{r.stem}_{k}"
        used.add(name)
        stems.append(name)
    return stems


def captioned(rgb: np.ndarray, lines: Sequence[str], min_width: int = 320) -> np.ndarray:
    """``rgb`` enlarged to at least ``min_width`` pixels wide (nearest neighbour: small images stay sharp) under a
    white band holding ``lines``."""
    image = Image.fromarray(rgb)
    if image.width < min_width:
        scale = -(-min_width // image.width)
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if not lines:
        return np.asarray(image)
    font = _font(14)
    line_height = 18
    canvas = Image.new("RGB", (image.width, image.height + 6 + line_height * len(lines)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * line_height), line, fill="black", font=font)
    canvas.paste(image, (0, canvas.height - image.height))
    return np.asarray(canvas)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
