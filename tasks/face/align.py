"""Face detection (MTCNN) and 5-point alignment to the ArcFace template.

Face recognisers are trained and evaluated on crops where the eyes, nose and mouth corners sit
at fixed positions: a similarity transform (rotation, uniform scale, translation; no shear, so
the face keeps its proportions) maps the five detected landmarks onto the ArcFace template and
the image is warped with it. Doing this once, offline, with :func:`align_tree` turns a folder of
arbitrary photos into a folder of ``112x112`` crops that the face task reads as an ordinary
identity-folder tree.

Detection uses facenet-pytorch's MTCNN, whose weights ship inside the package (nothing is
downloaded; torch>=2.6 loads them with ``weights_only=True`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.transform import SimilarityTransform
from tqdm import tqdm

from resvision.datasets.classification import images_under
from resvision.datasets.image_io import BadImageError, decoded, read_image
from resvision.errors import ConfigError, DataError, UserError

__all__ = [
    "ARCFACE_TEMPLATE",
    "AlignReport",
    "Face",
    "FaceAligner",
    "align_tree",
    "main",
    "similarity_transform",
    "template_for",
    "warp_face",
    "write_atomic",
]

# insightface's ``arcface_dst`` for 112x112 crops, in image coordinates (x right, y down): left eye,
# right eye, nose tip, left and right mouth corners ("left" = image left, as MTCNN orders them).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
_TEMPLATE_SIZE = 112
REPORT_NAME = "align_report.json"
NO_FACE_NAME = "no_face.txt"


def template_for(size: int) -> np.ndarray:
    """The template for ``size x size`` crops: the 112 template scaled by ``size / 112``.

    Plain scaling keeps the same face region at every size (insightface's 128 variant instead
    shifts the 112 template 8 px right, i.e. a wider margin; we do not copy that special case).
    """
    if size <= 0:
        raise ConfigError(f"face crop size must be positive, got {size}")
    return ARCFACE_TEMPLATE * (size / _TEMPLATE_SIZE)


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` least-squares similarity (Umeyama) mapping ``src_points`` onto ``dst_points``.

    scikit-image's closed-form estimate (what insightface uses) rather than OpenCV's robust
    ``estimateAffinePartial2D``, whose RANSAC / LMEDS sampling makes results vary between runs.

    Raises:
        ValueError: The points are degenerate (e.g. all equal), so no similarity fits.
    """
    src = np.asarray(src_points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_points, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"need two matching sets of >= 2 points, got {len(src)} and {len(dst)}")
    transform = SimilarityTransform.from_estimate(src, dst)
    if not transform:
        raise ValueError(f"no similarity transform fits these points: {transform}")
    return transform.params[:2].copy()


def warp_face(image: np.ndarray, landmarks: np.ndarray, size: int = _TEMPLATE_SIZE) -> np.ndarray:
    """Warp an RGB uint8 image so ``landmarks`` (5x2, image x/y) land on :func:`template_for` ``(size)``.

    Pixels from outside the image are black (border value 0), as in insightface's crops.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    matrix = similarity_transform(landmarks, template_for(size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# --------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True, eq=False)  # arrays have no single truth value, so no field-wise ==
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2), detector ``prob``, ``landmarks`` (5x2 x/y)."""

    box: np.ndarray
    prob: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


class FaceAligner:
    """MTCNN detection + ArcFace alignment, the detector built on first use (importing is cheap).

    Args:
        size: Side of the square aligned crops.
        device: Torch device for MTCNN (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        min_face_size: Smallest face side (pixels) the detector looks for; smaller is slower.
        thresholds: MTCNN's P-, R- and O-net score thresholds.
    """

    def __init__(self, size: int = _TEMPLATE_SIZE, device: str = "cpu", min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7)) -> None:
        self.template = template_for(size)  # validates size
        self.size = size
        if min_face_size <= 0:
            raise ConfigError(f"min_face_size must be positive, got {min_face_size}")
        if len(thresholds) != 3 or not all(0.0 < t <= 1.0 for t in thresholds):
            raise ConfigError(f"thresholds must be three numbers in (0, 1], got {list(thresholds)}")
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self._mtcnn: Any = None

    def _detector(self) -> Any:
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            # keep_all: we want every face (to report images with several); post_process only
            # affects MTCNN's own crops, which we never use.
            self._mtcnn = MTCNN(keep_all=True, post_process=False, min_face_size=self.min_face_size,
                                thresholds=list(self.thresholds), device=self.device).eval()
        return self._mtcnn

    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face in an HxWx3 uint8 RGB image, largest box first (empty list when none)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
        if min(image.shape[:2]) < self.min_face_size:
            return []  # MTCNN's scale pyramid would be empty (and it crashes on that)
        boxes, probs, points = self._detector().detect(image, landmarks=True)
        if boxes is None:
            return []
        faces = [
            Face(np.asarray(box, dtype=np.float64), float(prob), np.asarray(pts, dtype=np.float64).reshape(5, 2))
            for box, prob, pts in zip(boxes, probs, points)
        ]
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def warp(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``face`` aligned to this aligner's crop size."""
        return warp_face(image, face.landmarks, self.size)

    def align(self, image: np.ndarray) -> np.ndarray | None:
        """The largest face aligned to ``(size, size, 3)`` uint8, or ``None`` when there is no face."""
        faces = self.detect(image)
        return self.warp(image, faces[0]) if faces else None


# --------------------------------------------------------------------------------------------- folder trees


@dataclass
class AlignReport:
    """What :func:`align_tree` did; relative paths are POSIX-style and relative to SRC."""

    written: int = 0
    skipped: int = 0  # outputs already present from an earlier run (resume)
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    path: Path | None = None  # the align_report.json written

    @property
    def aligned(self) -> int:
        return self.written + self.skipped

    def to_json(self, size: int) -> dict[str, Any]:
        return {
            "aligned": self.aligned, "written": self.written, "skipped_existing": self.skipped, "size": size,
            "no_face": self.no_face, "unreadable": self.unreadable, "several_faces": self.several_faces,
        }


def align_tree(src: str | Path, dst: str | Path, aligner: FaceAligner | None = None,
               progress: bool = True) -> AlignReport:
    """Align the largest face of every image in an identity-folder tree into ``dst``.

    ``src/<person>/**/<image>`` becomes ``dst/<person>/**/<stem>.png`` (lossless, so the crops are
    compressed once, by the user's camera, not again by us). SRC is only read. Images that cannot
    be decoded or hold no face are listed in ``dst/align_report.json`` (and ``dst/no_face.txt``),
    not fatal: a large scrape always has some. Each output is written to a hidden temporary file
    and renamed, so a killed run leaves no half-written crop, and a re-run skips the crops that
    exist (after checking they have the requested size).

    Raises:
        DataError: SRC is missing or holds no images, or two images would write the same output.
        ConfigError: DST is SRC or overlaps it, or DST holds crops of another size.
    """
    src, dst = Path(src), Path(dst)
    aligner = aligner or FaceAligner()
    plan = _plan(src, dst, aligner.size)
    previous = _previous_several_faces(dst / REPORT_NAME)
    report = AlignReport()
    for rel, out in tqdm(plan, desc="align faces", unit="img", disable=None if progress else True):
        if out.exists():
            report.skipped += 1
            if rel in previous:
                report.several_faces.append(rel)
            continue
        try:
            image = read_image(src / rel)
        except BadImageError:
            report.unreadable.append(rel)
            continue
        faces = aligner.detect(image)
        if not faces:
            report.no_face.append(rel)
            continue
        if len(faces) > 1:
            report.several_faces.append(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        crop = aligner.warp(image, faces[0])
        write_atomic(out, lambda f: Image.fromarray(crop).save(f, format="PNG"))
        report.written += 1
    dst.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_json(aligner.size), indent=2) + "\n"
    write_atomic(dst / NO_FACE_NAME, lambda f: f.write("".join(f"{rel}\n" for rel in report.no_face).encode()))
    write_atomic(dst / REPORT_NAME, lambda f: f.write(text.encode()))
    report.path = dst / REPORT_NAME
    return report


def _plan(src: Path, dst: Path, size: int) -> list[tuple[str, Path]]:
    """``(path relative to src, output path)`` for every image; every check that needs no decoding.

    Person folders are SRC's non-hidden sub-folders and images are found as
    :func:`~resvision.datasets.classification.image_folder_samples` finds them (same extensions,
    recursive, hidden files skipped); an empty person folder is not an error here.
    """
    if not src.is_dir():
        raise DataError(f"face image folder not found: {src}")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise ConfigError(f"DST must differ from SRC (both are {real_src}); SRC is never modified")
    if real_dst.is_relative_to(real_src):
        raise ConfigError(f"DST {dst} is inside SRC {src}; choose a folder outside it (SRC is never modified)")
    if real_src.is_relative_to(real_dst):
        raise ConfigError(f"SRC {src} is inside DST {dst}; choose a folder outside it (SRC is never modified)")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"DST {dst} exists and is not a folder")
    people = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    plan: list[tuple[str, Path]] = []
    owner: dict[Path, str] = {}
    for person in people:
        for path in images_under(person):
            rel = Path(path).relative_to(src)
            out = dst / rel.with_suffix(".png")
            if out in owner:
                raise DataError(f"{src / owner[out]} and {path} would both be written to {out}; rename one")
            owner[out] = rel.as_posix()
            plan.append((rel.as_posix(), out))
    if not plan:
        raise DataError(f"{src}: no images in person folders (expected the layout {src}/<person>/<image>)")
    for _, out in plan:
        if out.exists():
            with decoded(out, what="aligned face", error=DataError) as crop:
                width, height = crop.size
            if (width, height) != (size, size):
                raise ConfigError(f"{out} is {width}x{height}, not {size}x{size}: "
                                  f"DST holds crops of another --size; use another DST")
    return plan


def _previous_several_faces(report_path: Path) -> set[str]:
    """The ``several_faces`` list of an earlier run's report, so a resumed run still reports them."""
    try:
        return set(json.loads(report_path.read_text())["several_faces"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()  # no earlier report (or not ours): nothing to carry over


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a hidden temporary sibling and ``os.replace``: never half a file.

    No fsync: this guards against a killed process, not a power cut, and thousands of fsyncs
    would dominate the run time. A temporary left by ``kill -9`` is a hidden file, which every
    image lister here ignores.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/align_faces.py SRC DST``: align every face image of SRC into DST."""
    parser = argparse.ArgumentParser(
        prog="align_faces",
        description="Detect faces (MTCNN) in an identity-folder tree SRC/<person>/<image> and write the "
                    "largest face of each image, aligned to the ArcFace 5-point template, as "
                    "DST/<person>/<stem>.png. SRC is never modified; a re-run resumes.",
    )
    parser.add_argument("src", metavar="SRC", help="folder with one sub-folder of images per person")
    parser.add_argument("dst", metavar="DST", help="output folder (created; must not overlap SRC)")
    parser.add_argument("--size", type=int, default=_TEMPLATE_SIZE, help="side of the square crops (default 112)")
    parser.add_argument("--device", default="cpu", help="torch device for detection (default cpu)")
    parser.add_argument("--min-face-size", type=int, default=20, help="smallest face side in pixels (default 20)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        aligner = FaceAligner(size=args.size, device=args.device, min_face_size=args.min_face_size)
        report = align_tree(args.src, args.dst, aligner, progress=not args.no_progress)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    skipped = f" ({report.skipped} already there, skipped)" if report.skipped else ""
    print(f"aligned {report.aligned} face(s) at {args.size}x{args.size} into {args.dst}{skipped}; "
          f"{len(report.no_face)} image(s) without a face (listed in {Path(args.dst) / NO_FACE_NAME}), "
          f"{len(report.unreadable)} unreadable, {len(report.several_faces)} with several faces "
          f"(largest kept); report: {report.path}")
    return 0
