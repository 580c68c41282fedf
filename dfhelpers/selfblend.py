"""Self-blended images: pseudo-fakes made from one REAL face crop and its five landmarks.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022): a
face is pasted onto itself through a landmark-shaped, deformed and blurred mask, one of
the two copies changed in colour, resolution, sharpness and JPEG quality and slightly
misaligned. What is left to learn is the blending boundary and the statistics that differ
across it, which every face-swap and reenactment method also leaves; nothing ties the
pseudo-fakes to one generator. NumPy and OpenCV only: the tf.data pipeline calls
`self_blend` through tf.numpy_function.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from dfhelpers.jpeg import jpeg_roundtrip

# MTCNN's five points, as the face stage stores them per crop (crop pixels, 0..crop_size)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
LANDMARK_COLUMNS = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y")]
# SBI's blend ratios: mostly a full paste, sometimes a faint one the model must still find
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def self_blend(crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               jpeg_quality: Optional[int] = None) -> np.ndarray:
    """A pseudo-fake of a face crop: (S, S, 3) uint8 RGB in, the same shape out.

    landmarks: (5, 2) or (10,) float x, y in crop pixels, in LANDMARK_NAMES order.
    One of source/target (chosen at random) is colour-, scale-, sharpness- and
    JPEG-augmented; the source is shifted and scaled by a few percent, then pasted onto the
    target through `face_mask` times a ratio drawn from BLEND_RATIOS.

    jpeg_quality: the face stage's (faces.jpeg_quality). The pseudo-fake is then compressed
    as every stored crop is, so it ends with the same processing as the REAL crops and the
    real fakes; without it, a blurred or resampled face would lack the crop's JPEG grid and
    the model could learn that instead of the blend.
    """
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    source, target = crop, crop
    if rng.random() < 0.5:
        source = augment(crop, rng)
    else:
        target = augment(crop, rng)
    source = _misalign(source, rng)
    mask = face_mask(points, crop.shape[:2], rng) * rng.choice(BLEND_RATIOS)
    blended = mask[..., None] * source.astype(np.float32) + (1 - mask[..., None]) * target.astype(np.float32)
    blended = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return blended if jpeg_quality is None else jpeg_roundtrip(blended, jpeg_quality)


def face_mask(landmarks: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft face-shaped mask (H, W) float32 in 0..1 around the five landmarks.

    The convex hull of the points plus forehead, cheek and chin points placed at random
    multiples of the eye distance along the face's own axes (so a turned or tilted face
    gets a matching mask), each jittered; then blurred with a random kernel.
    """
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 4.0)
    up = (eyes - mouth) / max(float(np.linalg.norm(eyes - mouth)), 1e-3)
    right = np.array([-up[1], up[0]], dtype=np.float32)
    if np.dot(right, points[1] - points[0]) < 0:
        right = -right
    draw = lambda low, high: rng.uniform(low, high) * eye_distance  # noqa: E731 - one line per hull point
    outline = [
        eyes + up * draw(0.3, 0.9),  # forehead
        points[0] - right * draw(0.2, 0.6) + up * draw(0.0, 0.4), points[1] + right * draw(0.2, 0.6) + up * draw(0.0, 0.4),
        points[3] - right * draw(0.1, 0.5) - up * draw(0.0, 0.3), points[4] + right * draw(0.1, 0.5) - up * draw(0.0, 0.3),
        mouth - up * draw(0.3, 0.8),  # chin
    ]
    hull_points = np.concatenate([points, np.array(outline, dtype=np.float32)])
    hull_points += rng.normal(0, 0.06 * eye_distance, hull_points.shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull_points).astype(np.int32)), 1.0)
    return _soften(mask, eye_distance, rng)


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop changed as another camera or generator would: colour, resolution, sharpness, JPEG."""
    changed = crop.astype(np.float32)
    changed = changed * rng.uniform(0.85, 1.15) + rng.uniform(-20, 20) + rng.uniform(-12, 12, size=3)
    changed = np.clip(changed, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # resolution mismatch: down-sampled, then back up
        size = crop.shape[1::-1]
        factor = rng.uniform(0.4, 0.9)
        small = cv2.resize(changed, (max(8, round(size[0] * factor)), max(8, round(size[1] * factor))),
                           interpolation=cv2.INTER_AREA)
        changed = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    changed = _sharpness(changed, rng)
    if rng.random() < 0.5:
        changed = jpeg_roundtrip(changed, int(rng.integers(40, 96)))
    return changed


# --- private helpers ------------------------------------------------------------------------


def _soften(mask: np.ndarray, eye_distance: float, rng: np.random.Generator) -> np.ndarray:
    """Erode or dilate a little, then blur: the seam runs anywhere from sharp to a wide ramp."""
    radius = int(rng.integers(1, max(2, round(0.15 * eye_distance))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    sigma = rng.uniform(0.03, 0.25) * eye_distance
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(sigma, 0.5))
    peak = float(mask.max())
    return mask / peak if peak > 0 else mask


def _misalign(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale by 0.95..1.05 and shift by up to 3% of the side: the pasted face never sits exactly."""
    height, width = image.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, size=2) * (width, height)
    matrix = np.array([[scale, 0, (1 - scale) * width / 2 + shift[0]],
                       [0, scale, (1 - scale) * height / 2 + shift[1]]], dtype=np.float32)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred, sharpened (unsharp mask) or unchanged, a third each."""
    choice = rng.integers(3)
    if choice == 2:
        return image
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    if choice == 0:
        return blurred
    amount = rng.uniform(0.3, 1.0)
    return cv2.addWeighted(image, 1 + amount, blurred, -amount, 0)

