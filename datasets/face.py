"""Face-recognition data: the evaluation set built from verification pairs and gallery folders, identity folders.

Verification benchmarks (LFW, CFP-FP, AgeDB-30) are lists of image *pairs* with a same / different
flag; both on-disk formats (LFW ``pairs.txt``, insightface ``.bin``: :mod:`resvision.datasets.face_pairs`)
are reduced to one :class:`FaceEvalSet` (each image once, pairs by index), so the evaluator never sees a
format.
Training data for identity classifiers is an ImageFolder tree with one folder per identity
(:func:`identity_folder_samples`).

All user-facing failures are one-line :class:`~resvision.errors.DataError`\\ s naming the file (and the
line or index at fault).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from resvision.datasets.classification import Sample, image_folder_samples
from resvision.datasets.face_pairs import decode_bin_image, read_pairs, read_verification_bin
from resvision.datasets.image_io import check_in_threads, read_image
from resvision.errors import DataError

__all__ = ["FaceEvalSet", "identity_folder_samples"]

log = logging.getLogger("resvision")

Transform = Callable[[np.ndarray], torch.Tensor]

_NAMES_IN_WARNING = 5


# ------------------------------------------------------------------------------------------- dataset


class FaceEvalSet(Dataset):
    """Every image of a face evaluation once; verification pairs and identification identities refer to
    images by index, so an image shared by several LFW pairs is decoded and embedded once.

    Items are ``(transform(image), index)``. Build it with :meth:`build` from an LFW ``pairs.txt`` or an
    insightface ``.bin``, and / or a gallery of identity folders.

    Attributes:
        pairs: ``(P, 3)`` int64 rows ``(index_a, index_b, same)`` in the source's order (LFW's folds are
            consecutive blocks of it).
        identity: ``(N,)`` int64 identity of each image for identification (-1: not in the gallery folders).
        gallery: Indices of the gallery entries: the first image (by path) of each identity.
        probes: Indices of every other gallery-folder image.
    """

    def __init__(self, sources: Sequence[str | bytes], names: Sequence[str], transform: Transform | None = None,
                 pairs: np.ndarray | None = None, identity: np.ndarray | None = None,
                 gallery: np.ndarray | None = None, probes: np.ndarray | None = None) -> None:
        self.sources, self.names, self.transform = list(sources), list(names), transform
        none = np.zeros(0, dtype=np.int64)
        self.pairs = np.zeros((0, 3), np.int64) if pairs is None else np.asarray(pairs, np.int64).reshape(-1, 3)
        self.identity = np.full(len(self.sources), -1, np.int64) if identity is None else np.asarray(identity, np.int64)
        self.gallery = none if gallery is None else np.asarray(gallery, np.int64)
        self.probes = none if probes is None else np.asarray(probes, np.int64)

    @classmethod
    def build(cls, transform: Transform | None, pairs: str | Path | None = None,
              pairs_root: str | Path | None = None, pairs_ext: str = "jpg", bin_file: str | Path | None = None,
              gallery: str | Path | None = None) -> FaceEvalSet:
        """Read the verification pairs (``pairs.txt`` with its image root, default the file's folder; or a
        ``.bin``) and the gallery folders; an image named by both is listed once."""
        sources: list[str | bytes] = []
        names: list[str] = []
        index: dict[str, int] = {}

        def add(name: str, source: str | bytes) -> int:
            if name not in index:
                index[name] = len(sources)
                sources.append(source)
                names.append(name)
            return index[name]

        rows: list[tuple[int, int, int]] = []
        if bin_file is not None:
            data = read_verification_bin(bin_file)
            for k, same in enumerate(data.same):
                a, b = (add(f"{bin_file}#{k} (image {i})", data.images[i]) for i in (2 * k, 2 * k + 1))
                rows.append((a, b, int(same)))
        elif pairs is not None:
            root = Path(pairs).parent if pairs_root is None else pairs_root
            rows = [(add(p.path_a, p.path_a), add(p.path_b, p.path_b), int(p.same))
                    for p in read_pairs(pairs, root, pairs_ext)]
        labels: dict[int, int] = {}
        first: list[int] = []
        rest: list[int] = []
        if gallery is not None:
            samples, _ = identity_folder_samples(gallery)  # ordered by identity, then by path
            for path, label in samples:
                i = add(str(path), str(path))
                (rest if first and labels[first[-1]] == label else first).append(i)
                labels[i] = label
        identity = np.full(len(sources), -1, np.int64)
        for i, label in labels.items():
            identity[i] = label
        return cls(sources, names, transform, np.asarray(rows, np.int64), identity, np.asarray(first, np.int64),
                   np.asarray(rest, np.int64))

    def __len__(self) -> int:
        return len(self.sources)

    def image(self, index: int) -> np.ndarray:
        """The raw ``(H, W, 3)`` uint8 RGB pixels of image ``index``.

        Raises:
            BadImageError: The image cannot be decoded (names the file, or the ``.bin``, pair and image index).
        """
        source = self.sources[index]
        return decode_bin_image(source, self.names[index]) if isinstance(source, bytes) else read_image(source)

    def name(self, index: int) -> str:
        """The file of image ``index``, or ``<file.bin>#<pair> (image <k>)``."""
        return self.names[index]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (self.transform(image) if self.transform is not None else image), index

    def verify(self, num_threads: int | None = None, progress: bool = True) -> None:
        """Decode every image now, so a corrupt file stops the run before the first epoch, not inside it.

        A verification protocol is a fixed list of pairs (10 folds of LFW), so a bad image is an error, never
        skipped. Decoding runs in threads (Pillow releases the GIL).

        Raises:
            BadImageError: The first undecodable image in listing order.
        """
        check_in_threads(self._problem, len(self), "checking face images", num_threads, progress, raise_first=True)

    def _problem(self, index: int) -> DataError | None:
        try:
            self.image(index)
        except DataError as exc:
            return exc
        return None


# ------------------------------------------------------------------------------------ identity folders


def identity_folder_samples(root: str | Path) -> tuple[list[Sample], list[str]]:
    """List an identity tree ``root/<identity>/**/<image>`` (an ImageFolder: identity = class).

    Identities with a single image still train a classifier head, but give no positive pair for
    verification-style evaluation or pair mining; one warning counts them and names up to 5.

    Returns:
        ``(samples, identities)`` as :func:`~resvision.datasets.classification.image_folder_samples`.

    Raises:
        DataError: As :func:`~resvision.datasets.classification.image_folder_samples` (missing root, no
            identity folders, an identity folder without images).
    """
    samples, identities = image_folder_samples(root)
    counts = Counter(target for _, target in samples)
    single = [identities[i] for i in range(len(identities)) if counts[i] == 1]
    if single:
        shown = ", ".join(single[:_NAMES_IN_WARNING]) + (", ..." if len(single) > _NAMES_IN_WARNING else "")
        log.warning(
            "%s: %d of %d identities have a single image (no positive pairs possible): %s",
            root, len(single), len(identities), shown,
        )
    return samples, identities
