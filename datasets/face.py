"""Face-recognition data: LFW ``pairs.txt``, insightface verification ``.bin`` files, identity folders.

Verification benchmarks (LFW, CFP-FP, AgeDB-30) are lists of image *pairs* with a same / different
flag; both formats are reduced to one :class:`FaceEvalSet` (each image once, pairs by index), so the
evaluator never sees a format.
Training data for identity classifiers is an ImageFolder tree with one folder per identity
(:func:`identity_folder_samples`).

Security: a ``.bin`` is a pickle, and unpickling runs whatever callables the file names. It is read
with :class:`_VerificationUnpickler`, which resolves no global at all except guarded stand-ins for the
two constructors Python 3's own protocol-2 pickler writes for ``bytes`` (see :meth:`find_class`);
a file that names anything else (``os.system``, ``builtins.eval``, numpy) is refused before it runs.

All user-facing failures are one-line :class:`~resvision.errors.DataError`\\ s naming the file (and the
line or index at fault).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm import tqdm

from resvision.datasets.classification import Sample, image_folder_samples
from resvision.datasets.image_io import BadImageError, read_image
from resvision.datasets.image_io import one_line as _one_line
from resvision.datasets.image_io import to_rgb_array as _to_rgb_array
from resvision.errors import DataError

__all__ = [
    "FaceEvalSet",
    "FacePair",
    "VerificationBin",
    "decode_bin_image",
    "identity_folder_samples",
    "read_pairs",
    "read_verification_bin",
    "write_verification_bin",
]

log = logging.getLogger("resvision")

Transform = Callable[[np.ndarray], torch.Tensor]

_NAMES_IN_WARNING = 5
_NUMBER = re.compile(r"[0-9]+")
_REPR_LIMIT = 60


# ------------------------------------------------------------------------------------------ pairs.txt


@dataclass(frozen=True)
class FacePair:
    """One line of a ``pairs.txt``: two image files and whether they show the same person.

    Attributes:
        path_a: The first image.
        path_b: The second image.
        same: ``True`` for a ``name n1 n2`` line, ``False`` for ``name1 n1 name2 n2``.
        line: The 1-based line number in the pairs file (for error messages and reports).
    """

    path_a: str
    path_b: str
    same: bool
    line: int


def read_pairs(pairs_file: str | Path, image_root: str | Path, ext: str = "jpg") -> list[FacePair]:
    """Read an LFW-format pairs file (``pairs.txt``, ``pairsDevTest.txt``, or one written the same way).

    Format: an optional header of integers, then one pair per line, fields separated by tabs or spaces::

        10      300              header: 10 folds of 300 same + 300 different pairs (6000 lines follow)
        Abel_Pacheco    1   4    same person: <root>/Abel_Pacheco/Abel_Pacheco_0001.jpg and ..._0004.jpg
        Abdel_Madi_Shabneh  1   Dean_Barker 1      different people

    A one-number header ``n`` (``pairsDevTrain.txt``: 1100) means one fold of ``n`` same + ``n`` different
    pairs. The header is checked against the number of pairs; it is not required. Blank lines are ignored.
    The order is kept: the folds of ``pairs.txt`` are consecutive blocks, which the 10-fold protocol needs.
    Every image is checked to exist (a wrong ``image_root`` or ``ext`` fails here, on the first line).

    Args:
        pairs_file: The pairs file (UTF-8 text).
        image_root: The folder holding one sub-folder per person (LFW's ``lfw/`` or ``lfw-deepfunneled/``).
        ext: The image extension (with or without the dot).

    Returns:
        The pairs in file order.

    Raises:
        DataError: (one line naming the file and line number) a missing or unreadable file; a line with other
            than 3 or 4 fields, or an image number that is not a non-negative integer; a missing image file
            (names it); no pairs; a header whose pair count differs from the file's.
    """
    pairs_file = Path(pairs_file)
    image_root = Path(image_root)
    ext = ext.lstrip(".")
    header: tuple[int, list[int]] | None = None
    pairs: list[FacePair] = []
    checked: set[str] = set()  # LFW names most images in several pairs: stat each once

    def image(line: int, name: str, number: str) -> str:
        if not _NUMBER.fullmatch(number):
            raise DataError(f"{pairs_file}:{line}: image number {number!r} of {name!r} is not a non-negative integer")
        path = str(image_root / name / f"{name}_{int(number):04d}.{ext}")
        if path not in checked:
            if not os.path.isfile(path):
                raise DataError(f"{pairs_file}:{line}: image not found: {path}")
            checked.add(path)
        return path

    for line, fields in _pair_lines(pairs_file):
        if header is None and not pairs and len(fields) <= 2 and all(_NUMBER.fullmatch(f) for f in fields):
            header = (line, [int(f) for f in fields])
        elif len(fields) == 3:
            name, first, second = fields
            pairs.append(FacePair(image(line, name, first), image(line, name, second), True, line))
        elif len(fields) == 4:
            name_a, first, name_b, second = fields
            if name_a == name_b:  # LFW never does this: a same-person line given a different-person shape
                raise DataError(f"{pairs_file}:{line}: a different-person pair names {name_a!r} twice; a same-person "
                                f"pair is written '{name_a} {first} {second}'")
            pairs.append(FacePair(image(line, name_a, first), image(line, name_b, second), False, line))
        else:
            raise DataError(
                f"{pairs_file}:{line}: expected 'name n1 n2' (same person) or 'name1 n1 name2 n2' (different), "
                f"got {len(fields)} field(s): {_short(' '.join(fields))}"
            )
    if not pairs:
        raise DataError(f"{pairs_file}: no pairs (empty file, or a header only)")
    if header is not None:
        _check_header(pairs_file, *header, len(pairs))
    return pairs


def _pair_lines(pairs_file: Path) -> list[tuple[int, list[str]]]:
    """``(1-based line number, whitespace-separated fields)`` of every non-blank line."""
    try:
        with pairs_file.open(encoding="utf-8-sig") as handle:
            lines = [(number, text.split()) for number, text in enumerate(handle, 1)]
    except FileNotFoundError:
        raise DataError(f"pairs file not found: {pairs_file}") from None
    except IsADirectoryError:
        raise DataError(f"expected a pairs file, got a directory: {pairs_file}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{pairs_file}: not UTF-8 text ({_one_line(exc)})") from None
    return [(number, fields) for number, fields in lines if fields]


def _check_header(pairs_file: Path, line: int, numbers: list[int], count: int) -> None:
    """A ``folds n`` header promises ``folds * 2n`` pairs; a one-number header ``n`` promises ``2n``."""
    folds, per_half = (1, numbers[0]) if len(numbers) == 1 else numbers
    expected = folds * 2 * per_half
    if expected != count:
        raise DataError(
            f"{pairs_file}:{line}: header {' '.join(map(str, numbers))} promises {folds} fold(s) x 2 x {per_half} "
            f"= {expected} pairs, but the file has {count}"
        )


# --------------------------------------------------------------------------------- verification .bin


@dataclass
class VerificationBin:
    """The content of an insightface verification ``.bin``: still-encoded images and the pair flags.

    Pair ``i`` is ``images[2 * i]`` and ``images[2 * i + 1]``; ``same[i]`` says whether they show one
    person. Images stay encoded (JPEG / PNG bytes, ~20x smaller than pixels) and are decoded on access
    with :func:`decode_bin_image`.
    """

    images: list[bytes]
    same: list[bool]

    def __post_init__(self) -> None:
        if len(self.images) != 2 * len(self.same):
            raise ValueError(f"{len(self.images)} images for {len(self.same)} pairs (need exactly 2 per pair)")

    def __len__(self) -> int:
        return len(self.same)


class _VerificationUnpickler(pickle.Unpickler):
    """An unpickler that builds only bytes, str, bools, ints, floats, None, lists, tuples and dicts.

    Those come from opcodes that call nothing. Every other object needs a global resolved through
    :meth:`find_class`, which refuses all names except the two that Python 3 writes for ``bytes`` at
    protocol 2 (``_codecs.encode(text, 'latin1')`` and ``__builtin__.bytes()`` for ``b""``). Those two are
    answered with stand-ins that accept exactly those calls, so even they cannot encode with another
    codec or allocate a huge ``bytes(n)``.
    """

    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as insightface's loader reads them
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_bytes
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return self._empty_bytes
        raise DataError(
            f"{self.path}: refusing to load {module}.{name} from the pickle (a verification .bin holds only "
            f"encoded images and bools; it may be hostile or not a .bin)"
        )

    def _latin1_bytes(self, text: Any, encoding: Any) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise DataError(f"{self.path}: refusing _codecs.encode({type(text).__name__}, {_short(encoding)}) "
                            f"in the pickle (only latin1 text -> bytes is allowed)")
        return text.encode("latin1")

    def _empty_bytes(self, *args: Any) -> bytes:
        if args:
            raise DataError(f"{self.path}: refusing bytes() with arguments in the pickle")
        return b""


def read_verification_bin(path: str | Path) -> VerificationBin:
    """Read an insightface verification ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) without mxnet.

    The file is a pickle of ``(bins, issame_list)``: ``2N`` encoded images (JPEG / PNG bytes) and ``N``
    flags. It is unpickled with globals refused (see :class:`_VerificationUnpickler`), Python 2 strings read
    as bytes. Flags must be bools; the integers 0 and 1 are accepted too (some converters write them, and
    their meaning is unambiguous), anything else is refused. Images are not decoded here: use
    :meth:`FaceEvalSet.verify` to check them all up front.

    Args:
        path: The ``.bin`` file.

    Returns:
        The images (``bytes``) and flags (``bool``), in file order.

    Raises:
        DataError: (one line naming the file) missing, truncated or not a pickle; a refused global (names
            ``module.name``); not a 2-tuple of lists; ``len(bins) != 2 * len(issame_list)``; no pairs; an image
            that is not bytes or a flag that is not a bool / 0 / 1 (names the index).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            content = _VerificationUnpickler(handle, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"verification .bin not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a verification .bin file, got a directory: {path}") from None
    except Exception as exc:  # noqa: BLE001 - truncated / foreign files raise EOFError, UnpicklingError, ValueError...
        raise DataError(f"{path}: not a readable verification .bin pickle ({_one_line(exc)})") from None
    return _check_structure(content, path)


def _check_structure(content: Any, path: Path) -> VerificationBin:
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise DataError(f"{path}: expected a pickled (images, issame) pair, got {_kind(content)}")
    bins, flags = content
    for value, what in ((bins, "images"), (flags, "issame")):
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{path}: the {what} part is {_kind(value)}, expected a list")
    if not flags:
        raise DataError(f"{path}: no pairs (empty issame list)")
    if len(bins) != 2 * len(flags):
        raise DataError(
            f"{path}: {len(bins)} images for {len(flags)} pairs (expected 2 images per pair: {2 * len(flags)})"
        )
    images = []
    for index, data in enumerate(bins):
        if not isinstance(data, (bytes, bytearray)):
            raise DataError(f"{path}: image {index} is {_kind(data)}, expected encoded image bytes")
        images.append(bytes(data))
    same = []
    for index, flag in enumerate(flags):
        if not isinstance(flag, bool) and not (isinstance(flag, int) and flag in (0, 1)):
            raise DataError(f"{path}: issame[{index}] is {_short(flag)}, expected a bool (or 0 / 1)")
        same.append(bool(flag))
    return VerificationBin(images, same)


def write_verification_bin(path: str | Path, images: Sequence[bytes], same: Sequence[bool]) -> Path:
    """Write a verification ``.bin`` as insightface's packing scripts do: ``pickle`` protocol 2 of ``(bins, issame)``.

    The images are stored as given (encoded files, not pixels). Written to a temporary sibling file and moved
    into place with ``os.replace``, so an interrupted write never leaves a partial ``.bin``.

    Args:
        path: The ``.bin`` to write (its folder is created).
        images: ``2N`` encoded images; pair ``i`` is ``images[2i]``, ``images[2i + 1]``.
        same: ``N`` flags.

    Returns:
        ``path``.

    Raises:
        ValueError: Not 2 images per flag, an image that is not bytes, or a flag that is not a bool.
    """
    path = Path(path)
    if not all(isinstance(data, (bytes, bytearray)) for data in images):
        raise ValueError("write_verification_bin: every image must be encoded bytes")
    if not all(isinstance(flag, bool) for flag in same):
        raise ValueError("write_verification_bin: every flag must be a bool")
    content = VerificationBin([bytes(data) for data in images], list(same))  # checks 2 images per flag
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump((content.images, content.same), handle, protocol=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def decode_bin_image(data: bytes, where: str) -> np.ndarray:
    """Decode one encoded image of a ``.bin`` with :func:`read_image`'s rules (EXIF, colour modes -> RGB uint8).

    Args:
        data: The encoded image (JPEG, PNG, ... as Pillow reads).
        where: How the message names the image, e.g. ``"lfw.bin#12 (image 25)"``.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        BadImageError: (a :class:`DataError`) the bytes are not a complete image: ``<where>: <reason>``.
    """
    # The same exception mapping as image_io.decoded, which only opens paths.
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb_array(ImageOps.exif_transpose(image))
    except Image.UnidentifiedImageError:
        raise BadImageError(f"{where}: not an image (unknown or corrupt format)") from None
    except Exception as exc:  # noqa: BLE001 - corrupt data raises OSError, SyntaxError, ValueError, struct.error...
        raise BadImageError(f"{where}: cannot decode the image ({_one_line(exc)})") from exc


def _kind(value: Any) -> str:
    """``"a list of 3"``-style description of an unexpected value (never its whole repr)."""
    size = f" of {len(value)}" if isinstance(value, (list, tuple, dict, bytes, str)) else ""
    return f"a {type(value).__name__}{size}"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."


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
        pool = ThreadPoolExecutor(max_workers=num_threads or min(8, os.cpu_count() or 1))
        try:
            problems = pool.map(self._problem, range(len(self)))
            for problem in tqdm(problems, total=len(self), desc="checking face images", unit="img",
                                disable=None if progress else True):
                if problem is not None:
                    raise problem
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # the first problem stops the remaining decodes

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
