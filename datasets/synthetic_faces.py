"""Built-in face-recognition demo data that needs no download: synthetic people drawn with OpenCV.

:func:`synthetic_faces_dataset` draws a deterministic set of people once and writes them as real files in the
layouts real face data uses, so the demo runs exactly the code paths a user's own data takes:

* ``train/<identity>/<identity>_<k:04d>.jpg``: one folder per identity (the CASIA-WebFace / image-folder
  layout), ``person_0000`` .. ``person_0239``, 16 images each, ``k`` from 1.
* ``test/<identity>/<identity>_<k:04d>.jpg``: 150 *held-out* identities (``person_0240`` ..), 10 images each,
  none of them in ``train/``, and ``test/pairs.txt`` in LFW's exact format and size: a header ``10\\t300``, then
  per fold 300 same-person lines ``name\\ti\\tj`` followed by 300 different-person lines ``name1\\ti\\tname2\\tj``
  (1-based image numbers, so LFW's path rule ``<root>/<name>/<name>_<i:04d>.jpg`` finds the files). As in LFW, the
  folds are identity-disjoint (15 identities per fold), so 10-fold threshold selection never tunes on a test
  person. (The sizes are :data:`SYNTHETIC_FACES_SIZES`.)

Every image is 112x112 RGB JPEG (quality 90), already aligned like the ArcFace crops real pipelines feed a
network (eyes near (38, 52) and (74, 52), mouth corners near (42, 92) and (71, 92)). An identity is a fixed
vector of uniform numbers drawn from its own seed and mapped to skin tone, face-oval width / height and jaw,
eye spacing / height / size and iris colour, eyebrow thickness / arch / slant / length, nose length / width,
mouth width / lips, hair colour / hairline shape / volume / length, ears, and optional beard, glasses and moles
at fixed places. An identity drawn closer than :data:`_MIN_IDENTITY_DISTANCE` (L2 in that unit cube) to an
earlier one is drawn again, so no two people are near-twins. Each image then varies by its own seed: in-plane
rotation (+-10 deg), shift (+-4 px), scale (+-8%), a yaw imitated by moving the inner features sideways (+-5 px),
expression (smile, mouth opening, eye openness, eyebrow raise), background (random colour + low-frequency
texture), lighting (global gain +-25%, a directional gradient, a slight colour cast), Gaussian blur (sigma up to
1.2 on half the images) and JPEG artefacts.

The nuisance is sized so that raw pixels do not verify: the cosine of mean-centred 28x28 grey thumbnails scores
far below a trained model on ``pairs.txt`` (10-fold best threshold, the LFW protocol; the test suite measures it
and holds it within 0.55-0.85; 0.68 on the first, 600-pair version of the set), while a model trained on
``train/`` learns the stable identity cues.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from resvision.datasets.demo import write_once
from resvision.errors import ConfigError

__all__ = ["SYNTHETIC_FACES_DIR", "SYNTHETIC_FACES_IMAGE_SIZE", "SYNTHETIC_FACES_SIZES", "synthetic_faces_dataset"]

SYNTHETIC_FACES_IMAGE_SIZE = 112  # px a side, the ArcFace crop size
# The cache folder: its name changes with the sizes below, so an older cache is never read as this one.
SYNTHETIC_FACES_DIR = "synthetic_faces_v2"
SYNTHETIC_FACES_SIZES: dict[str, int] = {
    "train_identities": 240,
    "train_images": 16,  # per identity
    "test_identities": 150,  # held out: never in train/
    "test_images": 10,  # per identity: 15 people per fold give 675 distinct same-person pairs for its 300
    "folds": 10,
    # LFW's size: 10 x (300 same + 300 different) = 6,000 pairs; the 3,000 different-person pairs are what
    # tar_at_far_1e-3 needs (>= 1 / FAR of them)
    "pairs_per_fold": 300,
}

_SEED = 0
_JPEG_QUALITY = 90
_SS = 2  # drawn at 2x and reduced with area averaging: anti-aliased edges at 112 px
_FRAC = 4  # fractional bits of the OpenCV drawing coordinates
_UNIT = _SS * (1 << _FRAC)  # one 112-frame pixel in OpenCV's fixed-point drawing coordinates
_NUM_PARAMS = 42  # length of an identity's parameter vector (see _Face)
_MIN_IDENTITY_DISTANCE = 1.8  # L2 floor in [0, 1]^42; random pairs are 2.6 apart on average, 0.1% closer than 1.9
_MAX_REDRAWS = 1000

_SKIN = np.array([(244, 208, 182), (232, 182, 150), (208, 148, 110), (176, 118, 80), (130, 84, 54), (86, 56, 38)],
                 dtype=np.float32)
_HAIR = np.array([(22, 18, 16), (58, 38, 26), (104, 68, 38), (142, 66, 32), (200, 164, 96), (228, 206, 146),
                  (140, 138, 134), (222, 220, 214)], dtype=np.float32)
_IRIS = np.array([(58, 34, 20), (104, 66, 34), (124, 104, 48), (72, 118, 70), (64, 104, 168), (118, 128, 138)],
                 dtype=np.float32)
_LIPS = np.array([(196, 96, 104), (164, 72, 74), (140, 84, 82), (206, 118, 126), (116, 60, 58)], dtype=np.float32)
_FRAMES = np.array([(20, 20, 20), (96, 58, 30), (196, 160, 70), (150, 30, 36), (40, 50, 110)], dtype=np.float32)


def synthetic_faces_dataset(cache_dir: str | Path | None = None) -> Path:
    """Return the root of the synthetic faces dataset, writing it on first use (5,340 images).

    The tree is built in a temporary sibling directory and moved into place with one ``os.replace``
    (:func:`~resvision.datasets.demo.write_once`), so an interrupted or concurrent first run never leaves a partial
    dataset. Every byte is a function of the fixed seed: two generations are identical.

    Args:
        cache_dir: Cache root; default :func:`~resvision.datasets.demo.default_cache_dir`.

    Returns:
        ``<cache>/<SYNTHETIC_FACES_DIR>`` with ``train/<identity>/`` (identity folders) and ``test/<identity>/`` plus
        ``test/pairs.txt`` (LFW's format, identity-disjoint folds).

    Raises:
        ConfigError: :data:`SYNTHETIC_FACES_SIZES` cannot give the requested pairs.
    """
    _check_sizes(SYNTHETIC_FACES_SIZES)
    return write_once(SYNTHETIC_FACES_DIR, _write_faces, cache_dir)


def _check_sizes(sizes: dict[str, int]) -> None:
    """Fail early when the held-out set is too small for distinct same- and different-person pairs per fold."""
    per_fold = sizes["test_identities"] // max(sizes["folds"], 1)
    same = per_fold * math.comb(sizes["test_images"], 2)
    different = math.comb(per_fold, 2) * sizes["test_images"] ** 2
    if sizes["folds"] < 1 or min(same, different) < sizes["pairs_per_fold"]:
        raise ConfigError(f"synthetic faces sizes {sizes} give at most {min(same, different)} distinct pairs of each "
                          f"kind per fold, fewer than pairs_per_fold={sizes['pairs_per_fold']}")


# ------------------------------------------------------------------------------------------- writing


def _name(identity: int) -> str:
    return f"person_{identity:04d}"


def _write_faces(out: Path) -> None:
    """Write ``train/``, ``test/`` and ``test/pairs.txt`` into ``out``."""
    sizes = SYNTHETIC_FACES_SIZES
    n_train, n_test = sizes["train_identities"], sizes["test_identities"]
    vectors = _identity_vectors(n_train + n_test)
    for identity, vector in enumerate(vectors):
        split, count = ("train", sizes["train_images"]) if identity < n_train else ("test", sizes["test_images"])
        face = _Face(vector)
        folder = out / split / _name(identity)
        folder.mkdir(parents=True)
        for k in range(1, count + 1):
            pixels = _draw_image(face, np.random.default_rng([_SEED, 2, identity, k]))
            (folder / f"{_name(identity)}_{k:04d}.jpg").write_bytes(_jpeg(pixels))
    lines = _pairs_lines(list(range(n_train, n_train + n_test)), sizes)
    (out / "test" / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jpeg(pixels: np.ndarray) -> bytes:
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=_JPEG_QUALITY)
    return jpeg.getvalue()


def _identity_vectors(count: int) -> np.ndarray:
    """``(count, _NUM_PARAMS)`` identity vectors in [0, 1]; each at least :data:`_MIN_IDENTITY_DISTANCE` from
    every earlier one (an identity too close is redrawn from its own stream, so the order fixes the result)."""
    vectors = np.empty((count, _NUM_PARAMS))
    for identity in range(count):
        rng = np.random.default_rng([_SEED, 1, identity])
        for _ in range(_MAX_REDRAWS):
            vectors[identity] = rng.random(_NUM_PARAMS)
            if identity == 0 or np.linalg.norm(vectors[:identity] - vectors[identity], axis=1).min() >= \
                    _MIN_IDENTITY_DISTANCE:
                break
        else:
            raise ConfigError(f"cannot draw {count} synthetic identities at least {_MIN_IDENTITY_DISTANCE} apart")
    return vectors


def _pairs_lines(identities: list[int], sizes: dict[str, int]) -> list[str]:
    """LFW ``pairs.txt`` lines: the header, then per fold its same-person lines and its different-person lines.

    Identities are shuffled once and dealt into folds (``np.array_split``), so no person is in two folds; within
    a fold pairs are drawn without repetition (same: ``i < j``; different: names in increasing order).
    """
    n_images, n_pairs = sizes["test_images"], sizes["pairs_per_fold"]
    order = np.random.default_rng([_SEED, 3]).permutation(identities)
    lines = [f"{sizes['folds']}\t{n_pairs}"]
    for fold, members in enumerate(np.array_split(order, sizes["folds"])):
        members = sorted(int(m) for m in members)
        rng = np.random.default_rng([_SEED, 4, fold])
        same = [(a, i, j) for a in members for i in range(1, n_images + 1) for j in range(i + 1, n_images + 1)]
        different = [(a, i, b, j) for x, a in enumerate(members) for b in members[x + 1:]
                     for i in range(1, n_images + 1) for j in range(1, n_images + 1)]
        for index in sorted(rng.choice(len(same), n_pairs, replace=False)):
            a, i, j = same[index]
            lines.append(f"{_name(a)}\t{i}\t{j}")
        for index in sorted(rng.choice(len(different), n_pairs, replace=False)):
            a, i, b, j = different[index]
            lines.append(f"{_name(a)}\t{i}\t{_name(b)}\t{j}")
    return lines


# ------------------------------------------------------------------------------------------- drawing


def _mix(palette: np.ndarray, u: float) -> np.ndarray:
    """Linear interpolation along a palette's rows at position ``u`` in [0, 1]."""
    x = u * (len(palette) - 1)
    low = min(int(x), len(palette) - 2)
    return palette[low] + (x - low) * (palette[low + 1] - palette[low])


def _pick(palette: np.ndarray, u: float) -> np.ndarray:
    """The palette row ``u`` in [0, 1] falls on (equal shares)."""
    return palette[min(int(u * len(palette)), len(palette) - 1)]


class _Face:
    """An identity's appearance, mapped from its vector ``u`` in [0, 1]^42 to 112-frame units and RGB colours.

    Positions are those of an unrotated, frontal face in the 112x112 crop; :func:`_draw_image` adds the pose.
    """

    def __init__(self, vector: np.ndarray) -> None:
        u = vector.tolist()  # Python floats: cheaper than NumPy scalars in the many small sums of the drawing
        self.skin = _mix(_SKIN, u[0]) * (1 + 0.06 * (u[1] - 0.5) * np.array([1.0, -0.3, -1.0]))
        self.half_width, self.half_height = 35 + 11 * u[2], 47 + 11 * u[3]
        self.jaw, self.chin = 0.68 + 0.3 * u[4], -3 + 9 * u[5]
        self.face_y = 60 + 5 * u[6]
        self.eye_gap, self.eye_y = 31 + 11 * u[7], 49 + 6 * u[8]
        self.eye_width, self.eye_height = 6 + 4 * u[9], 2.6 + 2.2 * u[10]
        self.iris, self.iris_radius = _pick(_IRIS, u[11]), 2.4 + 1.4 * u[12]
        self.brow_thickness, self.brow_arch = 1.0 + 3.0 * u[13], -1 + 5 * u[14]
        self.brow_slant, self.brow_gap, self.brow_length = -3 + 6 * u[15], 5 + 5 * u[16], 12 + 8 * u[17]
        self.nose_y, self.nose_width, self.nose_shade = 67 + 11 * u[18], 6 + 6 * u[19], 0.6 + 0.3 * u[20]
        self.mouth_y, self.mouth_width = 87 + 8 * u[21], 10 + 8 * u[22]
        self.lip_top, self.lip_bottom = 1.3 + 2.5 * u[23], 1.8 + 3.2 * u[24]
        self.lips = 0.45 * self.skin + 0.55 * _mix(_LIPS, u[25])
        self.smile = -1.5 + 4 * u[26]
        self.hair = np.clip(_pick(_HAIR, u[27]) * (0.8 + 0.4 * u[28]), 0, 255)
        self.brows = 0.55 * self.hair + 0.45 * np.array([40.0, 30, 24]) if u[27] > 0.5 else 0.85 * self.hair
        self.hairline_y, self.hairline_shape = 12 + 18 * u[29], min(int(6 * u[30]), 5)
        self.temple_drop, self.hair_volume, self.hair_length = 4 + 12 * u[31], 1 + 10 * u[32], 45 * u[33]
        self.ear_size, self.ear_y = 7 + 5 * u[34], -2 + 8 * u[35]
        self.beard = 0 if u[36] < 0.55 else min(1 + int((u[36] - 0.55) / 0.45 * 4), 4)
        self.glasses = 0 if u[37] < 0.75 else 1 + int(u[37] >= 0.87)
        self.frame = _pick(_FRAMES, u[38])
        self.moles = [(56 + 70 * (u[40] - 0.5), 55 + 35 * u[41])] if u[39] > 0.6 else []
        if u[39] > 0.85:
            self.moles.append((56 - 60 * (u[41] - 0.5), 60 + 30 * u[40]))


def _fix(points: np.ndarray) -> np.ndarray:
    """112-frame float coordinates -> OpenCV's fixed-point integer coordinates on the 2x canvas."""
    return np.rint(np.asarray(points, dtype=np.float64) * _UNIT).astype(np.int32)


def _c(colour: np.ndarray) -> tuple[float, ...]:
    return tuple(colour.tolist())


def _ellipse(img: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], colour: np.ndarray,
             thickness: float = -1, start: float = 0, end: float = 360) -> None:
    width = -1 if thickness < 0 else max(1, round(thickness * _SS))
    cv2.ellipse(img, (round(centre[0] * _UNIT), round(centre[1] * _UNIT)),
                (round(max(axes[0], 0.2) * _UNIT), round(max(axes[1], 0.2) * _UNIT)), 0, start, end, _c(colour), width,
                cv2.LINE_AA, _FRAC)


def _polygon(img: np.ndarray, points: np.ndarray, colour: np.ndarray) -> None:
    cv2.fillPoly(img, [_fix(points)], _c(colour), cv2.LINE_AA, _FRAC)


def _polyline(img: np.ndarray, points: np.ndarray, colour: np.ndarray, thickness: float) -> None:
    cv2.polylines(img, [_fix(points)], False, _c(colour), max(1, round(thickness * _SS)), cv2.LINE_AA, _FRAC)


def _draw_image(face: _Face, rng: np.random.Generator) -> np.ndarray:
    """One ``112x112x3`` uint8 photo of ``face`` with this image's pose, expression, background and lighting."""
    side = SYNTHETIC_FACES_IMAGE_SIZE
    # background: a random colour with low-frequency texture (cubic from a few cells to 28 px, then linear: OpenCV's
    # cubic is slow at large factors)
    coarse = rng.standard_normal(size=(int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3), dtype=np.float32)
    texture = cv2.resize(coarse, (28, 28), interpolation=cv2.INTER_CUBIC) * np.float32(rng.uniform(10, 45))
    background = np.clip(texture + rng.uniform(0, 255, size=3).astype(np.float32), 0, 255).astype(np.uint8)
    canvas = cv2.resize(background, (side * _SS, side * _SS), interpolation=cv2.INTER_LINEAR)

    yaw = float(rng.uniform(-5, 5))
    expression = {"smile": min(max(face.smile + float(rng.normal(0, 2)), -3), 6),
                  "open": 0.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 5)),
                  "eyes": 0.15 if rng.random() < 0.04 else float(rng.uniform(0.55, 1.15)),
                  "brows": float(rng.uniform(-1.5, 3))}
    _draw_face(canvas, face, yaw, expression)

    # pose: one similarity transform about the face centre (56, 64), fused with the 2x -> 1x reduction: output
    # pixel j samples the 2x canvas at 2j + 0.5, halfway between two pixels, so bilinear sampling averages 2x2
    angle, scale = rng.uniform(-10, 10), rng.uniform(0.92, 1.08)
    matrix = cv2.getRotationMatrix2D((56.0 * _SS, 64.0 * _SS), angle, scale / _SS)
    matrix[:, 2] += rng.uniform(-4, 4, size=2) - np.array([56.0, 64.0]) * (_SS - 1) - 0.25
    image = cv2.warpAffine(canvas, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # lighting: a directional gradient, a global gain and a slight colour cast
    theta, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.45)
    ramp = np.linspace(-1, 1, side, dtype=np.float32)
    gradient = 1 + strength * (math.cos(theta) * ramp[None, :] + math.sin(theta) * ramp[:, None])
    gain = (rng.uniform(0.75, 1.25) * rng.uniform(0.94, 1.06, size=3)).astype(np.float32)
    lit = image.astype(np.float32) * (gradient[..., None] * gain)
    if rng.random() < 0.5:
        lit = cv2.GaussianBlur(lit, (0, 0), rng.uniform(0.2, 1.2))
    return cv2.convertScaleAbs(lit)  # values are >= 0: rounds and saturates at 255


def _draw_face(img: np.ndarray, face: _Face, yaw: float, expression: dict[str, float]) -> None:
    """Draw the head on the 2x canvas, frontal and upright; inner features moved sideways by ``yaw`` px."""
    cx = 56 + 0.3 * yaw  # the head outline turns less than the features on it
    w, h, fy = face.half_width, face.half_height, face.face_y
    head_y = fy - 0.15 * h
    skin, shade = face.skin, face.skin * 0.82
    # hair behind the head, neck, ears
    if face.hairline_shape != 5:
        v = face.hair_volume
        _ellipse(img, (cx, head_y), (w + v, 0.9 * h + v), face.hair, start=180, end=360)
        if face.hair_length > 3:
            bottom = head_y + face.hair_length
            _polygon(img, np.array([(cx - w - v, head_y), (cx + w + v, head_y), (cx + w + v - 2, bottom),
                                    (cx - w - v + 2, bottom)]), face.hair)
    _polygon(img, np.array([(cx - 0.55 * w, fy), (cx + 0.55 * w, fy), (cx + 0.6 * w, 120), (cx - 0.6 * w, 120)]),
             shade)
    for s in (-1, 1):
        size = face.ear_size * (1 - s * yaw / 12)  # the ear on the side the face turns to shrinks
        ear = (cx + s * (w - 1.5), face.eye_y + 6 + face.ear_y)
        _ellipse(img, ear, (0.55 * size, size), skin * 0.92)
        _ellipse(img, (ear[0] + s * 0.8, ear[1]), (0.25 * size, 0.6 * size), shade, thickness=0.8, start=-90, end=90)
    # the face: an oval and a jaw
    _ellipse(img, (cx, fy), (w, h), skin)
    _ellipse(img, (cx, fy + 0.35 * h), (face.jaw * w, 0.65 * h + face.chin), skin)
    # features, shifted sideways by the yaw
    fx = 56 + yaw
    if face.beard:
        _draw_beard(img, face, cx, fx)
    for mole in face.moles:
        _ellipse(img, (mole[0] + yaw, mole[1]), (0.9, 0.9), skin * 0.45)
    _draw_hair_front(img, face, cx, head_y)
    _draw_eyes(img, face, fx, expression)
    _draw_nose(img, face, fx, yaw, shade)
    _draw_mouth(img, face, fx, expression)
    if face.glasses:
        _draw_glasses(img, face, fx, cx)


def _draw_hair_front(img: np.ndarray, face: _Face, cx: float, head_y: float) -> None:
    """The hair over the forehead: the top of the head down to this identity's hairline curve."""
    w, h = face.half_width, face.half_height
    v = face.hair_volume
    shape, y0, drop = face.hairline_shape, face.hairline_y, face.temple_drop
    if shape == 5:  # bald: a fringe of hair above the ears only
        for s in (-1, 1):
            _ellipse(img, (cx + s * (w - 2), face.eye_y - 6), (4, 9), face.hair)
        return
    t = np.linspace(-1.1, 1.1, 23)
    y = y0 + drop * t**2
    if shape == 1:  # widow's peak
        y += 6 * np.maximum(0, 1 - np.abs(t) / 0.25)
    elif shape == 2:  # side parting, swept to the right
        y += 7 * np.clip(t + 0.3, 0, None) ** 2
    elif shape == 3:  # side parting, swept to the left
        y += 7 * np.clip(0.3 - t, 0, None) ** 2
    elif shape == 4:  # bangs: a low straight line
        y = np.minimum(y0 + 9 + 2 * t**2, head_y + 4)
    y = np.minimum(y, face.eye_y - 8 + 12 * np.abs(t) ** 6)  # sideburns reach down at the temples
    curve = np.stack([cx + t * (w + 1), y], axis=1)
    angles = np.linspace(math.pi, 2 * math.pi, 25)
    arc = np.stack([cx + (w + v) * np.cos(angles), head_y + (0.9 * h + v) * np.sin(angles)], axis=1)
    _polygon(img, np.concatenate([arc, curve[::-1]]), face.hair)


def _draw_eyes(img: np.ndarray, face: _Face, fx: float, expression: dict[str, float]) -> None:
    openness = expression["eyes"]
    for s in (-1, 1):
        ex, ey = fx + s * face.eye_gap / 2, face.eye_y
        height = face.eye_height * openness
        _ellipse(img, (ex, ey), (face.eye_width, height), np.array([236.0, 232, 226]))
        if openness > 0.3:
            r = face.iris_radius
            _ellipse(img, (ex, ey + 0.2), (min(r, face.eye_width - 1), min(r, height)), face.iris)
            _ellipse(img, (ex, ey + 0.2), (0.45 * min(r, height), 0.45 * min(r, height)), np.array([15.0, 12, 12]))
        _ellipse(img, (ex, ey), (face.eye_width + 0.3, height + 0.3), np.array([40.0, 28, 24]), thickness=0.9,
                 start=180, end=360)
        # eyebrow: inner end, arch, outer end
        by = ey - face.eye_height - face.brow_gap - expression["brows"]
        half = face.brow_length / 2
        brow = np.array([(ex - s * 0.9 * half, by + 0.5 * face.brow_slant), (ex + s * 0.1 * half, by - face.brow_arch),
                         (ex + s * 1.1 * half, by - 0.5 * face.brow_slant + 1.5)])
        _polyline(img, brow, face.brows, face.brow_thickness)


def _draw_nose(img: np.ndarray, face: _Face, fx: float, yaw: float, shade: np.ndarray) -> None:
    tip_x, tip_y, half = fx + 0.3 * yaw, face.nose_y, face.nose_width / 2
    dark = face.skin * face.nose_shade
    side = 1 if yaw >= 0 else -1  # the bridge line is drawn on the flank of the nose the turn shows
    _polyline(img, np.array([(fx - side * 3, face.eye_y + 3), (tip_x - side * (half - 1), tip_y - 3)]), shade, 1.0)
    _ellipse(img, (tip_x, tip_y - 1), (half, 3.5), dark, thickness=1.0, start=20, end=160)
    for s in (-1, 1):
        _ellipse(img, (tip_x + s * 0.45 * half, tip_y + 0.8), (1.6, 1.0), face.skin * 0.35)


def _draw_mouth(img: np.ndarray, face: _Face, fx: float, expression: dict[str, float]) -> None:
    t = np.linspace(-1, 1, 13)
    x = fx + t * face.mouth_width
    line = face.mouth_y - expression["smile"] * t**2 + 0.3 * expression["smile"]
    bulge = np.sqrt(1 - t**2)
    opening = expression["open"] * bulge
    upper = np.stack([x, line - face.lip_top * bulge * (1 - 0.35 * np.exp(-((t / 0.2) ** 2)))], axis=1)
    inner_top = np.stack([x, line], axis=1)
    inner_bottom = np.stack([x, line + opening], axis=1)
    lower = np.stack([x, line + opening + face.lip_bottom * bulge**0.7], axis=1)
    if expression["open"] > 0:
        _polygon(img, np.concatenate([inner_top, inner_bottom[::-1]]), np.array([50.0, 22, 28]))
        if expression["open"] > 2:
            teeth = np.stack([x, line + 0.4 * opening], axis=1)
            _polygon(img, np.concatenate([inner_top[2:-2], teeth[2:-2][::-1]]), np.array([226.0, 222, 210]))
    _polygon(img, np.concatenate([upper, inner_top[::-1]]), face.lips)
    _polygon(img, np.concatenate([inner_bottom, lower[::-1]]), face.lips * 1.05)
    _polyline(img, inner_top, face.lips * 0.55, 0.7)


def _draw_beard(img: np.ndarray, face: _Face, cx: float, fx: float) -> None:
    """1 stubble (a translucent shadow), 2 moustache, 3 goatee, 4 full beard; drawn under the mouth."""
    w, h, fy = face.half_width, face.half_height, face.face_y
    my, mw = face.mouth_y, face.mouth_width
    colour = face.hair if face.hairline_shape != 5 else _HAIR[1]
    chin = fy + h + face.chin
    if face.beard == 1:
        colour = 0.55 * face.skin + 0.45 * colour
    if face.beard in (1, 4):
        t = np.linspace(-1, 1, 21)
        jaw = np.stack([cx + face.jaw * w * 0.98 * t, fy + 0.35 * h + (0.65 * h + face.chin) * np.sqrt(1 - t**2)], 1)
        top = np.array([(cx + face.jaw * w, face.nose_y), (fx + mw + 3, face.nose_y + 4),
                        (fx - mw - 3, face.nose_y + 4), (cx - face.jaw * w, face.nose_y)])
        _polygon(img, np.concatenate([jaw[::-1], top[::-1]]), colour)
    elif face.beard == 3:
        _ellipse(img, (fx, min(chin - 6, my + 12)), (0.6 * mw, 8), colour)
    if face.beard in (2, 3, 4):
        _polygon(img, np.array([(fx - mw - 2, my + 1), (fx - mw, my - 4), (fx, face.nose_y + 3.5),
                                (fx + mw, my - 4), (fx + mw + 2, my + 1), (fx, my - 2)]), colour)


def _draw_glasses(img: np.ndarray, face: _Face, fx: float, cx: float) -> None:
    """1 round, 2 rectangular frames, with the bridge and the arms towards the ears."""
    rx, ry = face.eye_width + 4, face.eye_height + 4.5
    ey = face.eye_y + 0.5
    for s in (-1, 1):
        ex = fx + s * face.eye_gap / 2
        if face.glasses == 1:
            _ellipse(img, (ex, ey), (rx, ry), face.frame, thickness=1.1)
        else:
            corners = np.array([(ex - rx, ey - ry), (ex + rx, ey - ry), (ex + rx, ey + ry - 1), (ex - rx, ey + ry - 1)])
            cv2.polylines(img, [_fix(corners)], True, _c(face.frame), max(1, round(1.1 * _SS)), cv2.LINE_AA, _FRAC)
        _polyline(img, np.array([(ex + s * rx, ey - 1), (cx + s * face.half_width, ey - 1.5)]), face.frame, 1.1)
    bridge = np.array([(fx - face.eye_gap / 2 + rx, ey - 1), (fx, ey - 2.5), (fx + face.eye_gap / 2 - rx, ey - 1)])
    _polyline(img, bridge, face.frame, 1.1)
