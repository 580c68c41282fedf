"""Rendering the sample's frames: a virtual camera over a face picture (REAL) and faces blended into it (FAKE).

A REAL shot is a photo or real footage under pan, zoom, roll and lighting drift. A FAKE blends
into the same clean frame, before any noise, either another identity's face aligned per frame on
the five landmarks (face swap; talking footage where the split has it) or a warped copy of the
same face (self-blend, as in "self-blended images"), through a jittered landmark-hull mask, with
a down/up-sampled or sharpened face and a colour transfer that is sometimes right and sometimes
wrong. The pasted face's grain is matched to the face it replaces, then the REAL frame and every
FAKE get the shot's own sensor noise: the same final processing for all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import cv2
import numpy as np
import pandas as pd

from dfhelpers.config import SampleConfig
from dfhelpers.sample.planning import FrameSpec, frame_spec
from dfhelpers.sample.sources import IDENTITIES, FaceLibrary, Identity, SourceFile, footage_fps, identity

# Face-hull template: (landmark rows averaged, offset along the eye line in eye distances,
# offset downwards in eye-mouth distances). Brows, forehead, cheeks, jaw and chin around the 5 points.
_HULL = (((0,), -0.35, -0.55), ((0, 1), 0.0, -0.75), ((1,), 0.35, -0.55), ((0,), -0.45, 0.45),
         ((1,), 0.45, 0.45), ((3,), -0.3, 0.4), ((4,), 0.3, 0.4), ((3, 4), 0.0, 0.65))


@dataclasses.dataclass(frozen=True)
class RenderedFrame:
    """One time step of a REAL video and its FAKEs, exactly as encoded (RGB uint8)."""

    index: int
    real: np.ndarray  # (H, W, 3)
    landmarks: np.ndarray  # (K, 5, 2) px, MTCNN order: eyes, nose, mouth corners (image left first)
    fakes: list[np.ndarray]  # one (H, W, 3) frame per FAKE, in plan order
    masks: list[np.ndarray]  # one (H, W) float32 blend weight per FAKE: 0 where the REAL pixel is kept


def render_shot(shot: pd.DataFrame, sample_cfg: SampleConfig, library: Optional[FaceLibrary] = None,
                n_frames: Optional[int] = None) -> Iterator[RenderedFrame]:
    """Render a REAL video and its FAKEs frame by frame, before encoding.

    Args:
        shot: plan rows of one REAL video followed by its FAKEs (a slice of `plan()`).
        n_frames: stop early (tests); default: the whole video.
    """
    library = library or FaceLibrary()
    spec = frame_spec(sample_cfg)
    real_row = shot.iloc[0]
    real = _real_shot(library, identity(real_row["person"]), int(real_row["source"]), int(real_row["seed"]), spec)
    fakes = [_fake_setup(library, real, row, sample_cfg) for row in shot.iloc[1:].itertuples()]
    for index in range(min(n_frames or spec.n_frames, spec.n_frames)):
        clean = _clean_frame(real, index)
        landmarks = real.landmarks[index]
        blended = [_fake_frame(fake, clean, landmarks, index) for fake in fakes]
        finished = [_add_sensor_noise(real, frame, index) for frame in (clean, *(b[0] for b in blended))]
        yield RenderedFrame(index, finished[0], landmarks, finished[1:], [b[1] for b in blended])


# --- REAL videos: a virtual camera over a photo or a clip -----------------------------------


@dataclasses.dataclass(frozen=True)
class _RealShot:
    frames: list[np.ndarray]  # one source image per output frame (the same array for a photo)
    affines: np.ndarray  # (T, 2, 3) source (as stored in `frames`) -> output pixels
    luts: np.ndarray  # (T, 1, 256, 3) uint8 lighting per frame
    noise: tuple[np.ndarray, np.ndarray]  # sensor noise fields (P, H + 8, W + 8, 3): positive and negative parts, uint8
    noise_picks: np.ndarray  # (T, 3): field, dy, dx per frame
    noise_energy: float  # the noise's high-pass energy on grey levels: every frame gets it on top
    landmarks: np.ndarray  # (T, K, 5, 2) float32 in output pixels
    spec: FrameSpec


def _real_shot(library: FaceLibrary, member: Identity, source_index: int, seed: int, spec: FrameSpec) -> _RealShot:
    rng = np.random.default_rng(seed)
    source = member.sources[source_index % len(member.sources)]
    if source.kind == "photo":
        image, boxes, landmarks = library.photo(source)
        face_box = boxes[min(source.face, len(boxes) - 1)]
        frames, landmarks = [image] * spec.n_frames, np.broadcast_to(landmarks, (spec.n_frames, *landmarks.shape))
    else:
        indices = footage_indices(source, footage_fps(library.file_bytes(source)), spec, rng)
        frames, boxes, landmarks = library.footage(source, indices)
        face_box = np.median(boxes, axis=0)
    is_flipped = bool(rng.random() < 0.5)
    affines = _camera_path(frames[0].shape[1::-1], face_box, spec, is_flipped, rng)
    output_landmarks = _transform_landmarks(landmarks, affines, is_flipped)
    frames, affines = _prescale(frames, affines, source.kind == "photo")
    noise, picks = _noise_fields(rng, spec)
    noise_energy = _highpass_energy(_grey(noise[0][0]) - _grey(noise[1][0]), np.ones(noise[0].shape[1:3], bool))
    return _RealShot(frames, affines, _lighting_luts(rng, spec), noise, picks, noise_energy, output_landmarks, spec)


def _clean_frame(shot: _RealShot, index: int) -> np.ndarray:
    """The REAL frame before sensor noise: what every FAKE of the shot is blended into."""
    spec = shot.spec
    frame = cv2.warpAffine(shot.frames[index], shot.affines[index], (spec.width, spec.height),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return cv2.LUT(frame, shot.luts[index])


def _add_sensor_noise(shot: _RealShot, frame: np.ndarray, index: int) -> np.ndarray:
    """The shot's grain, identical for the REAL frame and each FAKE: the same final processing."""
    spec = shot.spec
    field, dy, dx = shot.noise_picks[index]
    window = (field, slice(dy, dy + spec.height), slice(dx, dx + spec.width))
    # saturating uint8 add and subtract: 4x faster than int16 arithmetic on a full-HD frame
    return cv2.subtract(cv2.add(frame, shot.noise[0][window]), shot.noise[1][window])


def _camera_path(source_size: tuple[int, int], face_box: np.ndarray, spec: FrameSpec, is_flipped: bool,
                 rng: np.random.Generator) -> np.ndarray:
    """Per-frame source->output affines: slow pan, zoom and roll, the window kept inside the picture."""
    width, height = source_size
    face_x, face_y = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    face_x = width - 1 - face_x if is_flipped else face_x
    fit = max(spec.width / width, spec.height / height) * 1.08  # room for zoom and roll
    scale = max(fit, rng.uniform(*spec.face_height) * spec.height / (face_box[3] - face_box[1]))
    seconds = np.arange(spec.n_frames) / spec.fps
    zoom = scale * (1 + rng.uniform(0.0, 0.06) * (1 + _wave(rng, seconds)) / 2)
    roll = np.deg2rad(rng.uniform(0.5, 2.5)) * _wave(rng, seconds)
    # the face sits near the centre, a little high, and drifts as the camera pans
    place = np.array([rng.uniform(-0.08, 0.08) * spec.width, rng.uniform(-0.10, 0.0) * spec.height])
    pan = rng.uniform(0.03, 0.10) * spec.width * np.stack([_wave(rng, seconds), 0.6 * _wave(rng, seconds)], 1)
    centre = np.array([face_x, face_y]) - (place + pan) / zoom[:, None]
    centre = _keep_window_inside(centre, zoom, roll, (width, height), spec)
    flip = np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]]) if is_flipped else np.eye(3)
    affines = np.empty((spec.n_frames, 2, 3))
    for index in range(spec.n_frames):
        rotation = zoom[index] * np.array([[np.cos(roll[index]), -np.sin(roll[index])],
                                           [np.sin(roll[index]), np.cos(roll[index])]])
        offset = np.array([spec.width / 2, spec.height / 2]) - rotation @ centre[index]
        affines[index] = (np.hstack([rotation, offset[:, None]]) @ flip)
    return affines


def _keep_window_inside(centre: np.ndarray, zoom: np.ndarray, roll: np.ndarray, source_size: tuple[int, int],
                        spec: FrameSpec) -> np.ndarray:
    cos, sin = np.abs(np.cos(roll)), np.abs(np.sin(roll))
    half_x = (spec.width / 2 * cos + spec.height / 2 * sin) / zoom
    half_y = (spec.width / 2 * sin + spec.height / 2 * cos) / zoom
    limits = []
    for axis, half in ((0, half_x), (1, half_y)):
        size = source_size[axis]
        low, high = np.minimum(half, size / 2), np.maximum(size - half, size / 2)
        limits.append(np.clip(centre[:, axis], low, high))
    return np.stack(limits, 1)


def _wave(rng: np.random.Generator, seconds: np.ndarray) -> np.ndarray:
    """A smooth random signal in [-1, 1]: a slow and a faster sine (hand-held drift)."""
    slow = np.sin(2 * np.pi * rng.uniform(0.08, 0.3) * seconds + rng.uniform(0, 2 * np.pi))
    fast = np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * seconds + rng.uniform(0, 2 * np.pi))
    return 0.75 * slow + 0.25 * fast


def _transform_landmarks(landmarks: np.ndarray, affines: np.ndarray, is_flipped: bool) -> np.ndarray:
    """Map (T, K, 5, 2) source landmarks to output pixels; a mirror swaps left and right points."""
    points = np.einsum("tij,tkpj->tkpi", affines[:, :, :2], landmarks) + affines[:, None, None, :, 2]
    if is_flipped:
        points = points[:, :, [1, 0, 2, 4, 3]]
    return points.astype(np.float32)


def _prescale(frames: list[np.ndarray], affines: np.ndarray, is_photo: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Shrink a large photo once (area filter) so the per-frame warp never decimates: no aliasing."""
    scale = float(np.min(np.hypot(affines[:, 0, 0], affines[:, 0, 1])))
    if not is_photo or scale >= 0.6:
        return frames, affines
    factor = scale / 0.8
    image = cv2.resize(frames[0], None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    affines = affines.copy()
    affines[:, :, :2] /= factor
    return [image] * len(frames), affines


def _lighting_luts(rng: np.random.Generator, spec: FrameSpec) -> np.ndarray:
    """Per-frame tone curves: white balance, gamma and a slow brightness drift (auto-exposure)."""
    gains = rng.uniform(0.92, 1.08, size=3)
    gamma = rng.uniform(0.85, 1.15)
    drift = 1 + rng.uniform(0.02, 0.07) * _wave(rng, np.arange(spec.n_frames) / spec.fps)
    levels = (np.arange(256) / 255.0) ** gamma
    curves = 255 * levels[None, :, None] * gains[None, None, :] * drift[:, None, None]
    return np.clip(np.rint(curves), 0, 255).astype(np.uint8)[:, None]


def _noise_fields(rng: np.random.Generator, spec: FrameSpec,
                  n_fields: int = 4) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """A few Gaussian grain fields reused with random offsets: full-HD noise at a fraction of the cost."""
    sigma = rng.uniform(*spec.noise)
    fields = rng.normal(0, sigma, size=(n_fields, spec.height + 8, spec.width + 8, 3)).round()
    parts = (np.clip(fields, 0, 255).astype(np.uint8), np.clip(-fields, 0, 255).astype(np.uint8))
    picks = np.stack([rng.integers(0, n_fields, spec.n_frames), rng.integers(0, 9, spec.n_frames),
                      rng.integers(0, 9, spec.n_frames)], 1)
    return parts, picks


def footage_indices(source: SourceFile, source_fps: float, spec: FrameSpec, rng: np.random.Generator) -> np.ndarray:
    """Source frame per output frame: a random stretch of the clip, played back and forth if too short."""
    start, stop = source.span
    n_source = stop - start
    step = source_fps / spec.fps
    offset = rng.uniform(0, max(0.0, n_source - 1 - spec.n_frames * step))
    positions = np.floor(offset + np.arange(spec.n_frames) * step).astype(int)
    period = max(1, 2 * (n_source - 1))
    folded = positions % period
    return start + np.where(folded < n_source, folded, period - folded)


# --- FAKE videos: a face blended in through a landmark-shaped mask ------------------------------


@dataclasses.dataclass(frozen=True)
class _FaceBlend:
    """How one face of a FAKE is replaced; fixed for the whole video."""

    donor: Optional[tuple[list[np.ndarray], np.ndarray]]  # face swap: per-frame images, landmarks (T, 5, 2)
    hull_jitter: np.ndarray  # (8, 2) offsets of the hull points, in eye / eye-mouth distances
    hull_scale: float  # the hull grows or shrinks about the face centre
    softness: float  # mask edge sigma in eye distances
    opacity: float  # peak blend weight
    resample: float  # < 1: the face was rendered this much smaller and upsampled; > 1: sharpened by this much - 1
    colour: tuple[str, float, np.ndarray]  # transfer ("match" or "raw"), share of it applied, offset (3,) levels
    warp: tuple[float, np.ndarray]  # self-blend: scale and shift (2,) in eye distances of the pasted copy
    grain: float  # the finished face's high-pass energy as a share of the face it replaces
    seed: int  # per-frame draws (mask wobble, re-grain) come from (seed, frame index)


@dataclasses.dataclass(frozen=True)
class _FakeSetup:
    faces: list[_FaceBlend]  # one per face in the REAL video
    noise_energy: float  # the shot's sensor noise, added after blending: part of the grain to match


def _fake_setup(library: FaceLibrary, real: _RealShot, row, sample_cfg: SampleConfig) -> _FakeSetup:
    rng = np.random.default_rng(int(row.seed))
    members = _scene_members(identity(row.person).sources[int(row.source)])
    donors = [name for name in str(row.donors).split(",") if name]
    strength = _video_strength(rng, sample_cfg)
    faces = []
    for face in range(real.landmarks.shape[1]):
        donor = None
        if row.method == "face_swap":
            candidates = [name for name in donors if name != members.get(face)] or donors
            donor = _donor_track(library, identity(candidates[face % len(candidates)]), real, face, rng)
        faces.append(_face_blend(rng, donor, strength, sample_cfg))
    return _FakeSetup(faces, real.noise_energy)


def _video_strength(rng: np.random.Generator, sample_cfg: SampleConfig) -> float:
    """How visible this FAKE's artefacts are: some nearly invisible, most clearly there."""
    is_subtle = rng.random() < sample_cfg.subtle_fraction
    return sample_cfg.blend_strength * float(rng.uniform(0.15, 0.35) if is_subtle else rng.uniform(0.6, 1.0))


def _donor_track(library: FaceLibrary, donor: Identity, real: _RealShot, face: int,
                 rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """The donor face for every output frame: a moving, talking stretch of footage when the
    donor has some, else one of its photos; shrunk (area filter) near the target face's size."""
    spec = real.spec
    clips = [source for source in donor.sources if source.kind == "footage"]
    if clips:
        source = clips[int(rng.integers(len(clips)))]
        indices = footage_indices(source, footage_fps(library.file_bytes(source)), spec, rng)
        frames, _, landmarks = library.footage(source, indices)
        landmarks = landmarks[:, 0]
    else:
        stills = library.stills(donor)
        image, points = stills[int(rng.integers(len(stills)))]
        frames, landmarks = [image] * spec.n_frames, np.broadcast_to(points, (spec.n_frames, 5, 2))
    target_eyes = float(np.median(np.linalg.norm(real.landmarks[:, face, 1] - real.landmarks[:, face, 0], axis=1)))
    donor_eyes = float(np.median(np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)))
    factor = target_eyes / max(donor_eyes, 1.0) / 0.9
    if clips or factor >= 0.8:  # footage is near the target's size already: shrinking 38 frames costs more than it saves
        return list(frames), np.asarray(landmarks, np.float32)
    image = cv2.resize(frames[0], None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return [image] * spec.n_frames, (np.asarray(landmarks) * factor).astype(np.float32)


def _face_blend(rng: np.random.Generator, donor: Optional[tuple[list[np.ndarray], np.ndarray]], strength: float,
                sample_cfg: SampleConfig) -> _FaceBlend:
    is_swap = donor is not None
    # colour transfer: right, half-done, or done and then off by a brightness step and a tint.
    # A self-blend always gets the step (scaled by strength, so a subtle one stays subtle): the
    # face pasted onto itself with a few percent of warp and no colour change shows nothing a
    # classifier could learn, and SBI's pseudo-fakes likewise always change one copy's colour
    mode = rng.choice(["right", "partial", "wrong"], p=[0.45, 0.2, 0.35])
    offset = np.zeros(3)
    if mode == "wrong" or not is_swap:
        brightness = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        offset = strength * sample_cfg.colour_mismatch * 255 * (brightness + rng.uniform(-0.5, 0.5, size=3))
    share = float(rng.uniform(0.3, 0.7)) if mode == "partial" else 1.0
    low, high = sample_cfg.resolution_mismatch
    is_sharpened = rng.random() < 0.25  # the face came from a sharper, larger source
    resample = 1 + strength * rng.uniform(0.5, 1.5) if is_sharpened else 1 - strength * (1 - rng.uniform(low, high))
    warp = strength * sample_cfg.warp
    return _FaceBlend(donor=donor, hull_jitter=rng.normal(0, 0.08, size=(len(_HULL), 2)),
                      hull_scale=float(rng.uniform(0.9, 1.1)),
                      softness=sample_cfg.mask_softness * float(rng.uniform(0.5, 2.0)),
                      opacity=float(rng.uniform(0.85, 1.0) if is_swap else rng.uniform(0.6, 1.0)),
                      resample=float(resample), colour=("match" if is_swap else "raw", share, offset.astype(np.float32)),
                      warp=(float(1 + warp * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)), warp * rng.uniform(-1, 1, 2)),
                      grain=float(rng.uniform(0.9, 1.15)), seed=int(rng.integers(2**31)))


def _fake_frame(fake: _FakeSetup, clean: np.ndarray, landmarks: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend every face of a clean REAL frame; returns the FAKE frame and its blend weight (H, W) float32."""
    frame = clean.copy()
    weight_map = np.zeros(clean.shape[:2], np.float32)
    for blend, points in zip(fake.faces, landmarks):
        rng = np.random.default_rng([blend.seed, index])
        hull = _hull(points, blend, rng)
        roi = _roi(hull, blend.softness * _eye_distance(points), clean.shape)
        if roi is None:
            continue
        rows, cols = roi
        shape = _hull_mask(hull, blend.softness * _eye_distance(points), roi)
        weight = shape * blend.opacity
        pasted, detail = _pasted_face(blend, clean, points, roi, index)
        kept = frame[rows, cols]
        mixed = pasted * weight[..., None] + kept * (1 - weight[..., None])
        mixed = _match_grain(mixed, clean[rows, cols], shape, detail, (blend.grain, fake.noise_energy), rng)
        mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        frame[rows, cols] = np.where(weight[..., None] > 0, mixed, kept)
        weight_map[rows, cols] = np.maximum(weight_map[rows, cols], weight)
    return frame, weight_map


def _face_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Unit vectors along the eye line and down the face, eye distance and eye-mouth distance."""
    along = points[1] - points[0]
    eye_distance = max(float(np.linalg.norm(along)), 1.0)
    along = along / eye_distance
    down = np.array([-along[1], along[0]])
    eyes_to_mouth = points[3:].mean(0) - points[:2].mean(0)
    down = down if float(down @ eyes_to_mouth) >= 0 else -down
    return along, down, eye_distance, max(float(down @ eyes_to_mouth), 1.0)


def _eye_distance(points: np.ndarray) -> float:
    return max(float(np.linalg.norm(points[1] - points[0])), 1.0)


def _hull(points: np.ndarray, blend: _FaceBlend, rng: np.random.Generator) -> np.ndarray:
    """(8, 2) px: brows, forehead, cheeks, jaw and chin built from the 5 landmarks, deformed per
    video and wobbling a little per frame, as a generator's mask would."""
    along, down, eye_distance, eye_mouth = _face_axes(points)
    jitter = blend.hull_jitter + rng.normal(0, 0.015, size=blend.hull_jitter.shape)
    hull = np.array([points[list(rows)].mean(0) + (dx + jx) * eye_distance * along + (dy + jy) * eye_mouth * down
                     for (rows, dx, dy), (jx, jy) in zip(_HULL, jitter)])
    centre = points.mean(0)
    return (centre + (hull - centre) * blend.hull_scale).astype(np.float32)


def _roi(hull: np.ndarray, sigma: float, shape: tuple[int, ...]) -> Optional[tuple[slice, slice]]:
    reach = 3 * sigma + 2
    left, top = np.floor(hull.min(0) - reach).astype(int)
    right, bottom = np.ceil(hull.max(0) + reach).astype(int)
    top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, shape[0]), min(right, shape[1])
    if bottom - top < 8 or right - left < 8:
        return None
    return slice(top, bottom), slice(left, right)


def _hull_mask(hull: np.ndarray, sigma: float, roi: tuple[slice, slice]) -> np.ndarray:
    """The filled hull, blurred: weight 1 inside, a soft edge, exactly 0 far from it."""
    rows, cols = roi
    canvas = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
    subpixel = 16  # cv2 drawing takes fixed-point coordinates with 4 fractional bits
    local = np.rint((hull - [cols.start, rows.start]) * subpixel).astype(np.int32)
    cv2.fillConvexPoly(canvas, cv2.convexHull(local), 255, cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), max(sigma, 0.5))
    mask[mask < 1 / 255] = 0  # the tail of the blur changes no pixel; keep the mask's support tight
    return mask


def _pasted_face(blend: _FaceBlend, clean: np.ndarray, points: np.ndarray, roi: tuple[slice, slice],
                 index: int) -> tuple[np.ndarray, np.ndarray]:
    """The face to paste over the ROI (float32 RGB): the donor aligned on the landmarks, or a
    warped copy; and its fine detail (high-pass residual) before resampling."""
    rows, cols = roi
    if blend.donor is not None:
        image, affine = blend.donor[0][index], _similarity(blend.donor[1][index], points)
    else:
        image, (scale, shift) = clean, blend.warp
        centre = points.mean(0)
        offset = centre + shift * _eye_distance(points)
        affine = np.hstack([np.eye(2) * scale, (offset - scale * centre)[:, None]])
    affine = affine - np.array([[0, 0, cols.start], [0, 0, rows.start]])
    size = (cols.stop - cols.start, rows.stop - rows.start)
    pasted = cv2.warpAffine(image, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    pasted = pasted.astype(np.float32)
    detail = pasted - cv2.GaussianBlur(pasted, (0, 0), 1.0)
    pasted = _resample(pasted, blend.resample)
    transfer, share, offset = blend.colour
    if transfer == "match":
        pasted = pasted + share * (_match_colours(pasted, clean[rows, cols]) - pasted)
    return pasted + offset, detail


def _resample(face: np.ndarray, resample: float) -> np.ndarray:
    """A face generated smaller and upsampled (resample < 1), or sharper than the frame (> 1)."""
    if resample > 1:
        blurred = cv2.GaussianBlur(face, (0, 0), 1.0)
        return face + (resample - 1) * (face - blurred)
    height, width = face.shape[:2]
    small = (max(2, round(width * resample)), max(2, round(height * resample)))
    if small == (width, height):
        return face
    return cv2.resize(cv2.resize(face, small, interpolation=cv2.INTER_AREA), (width, height),
                      interpolation=cv2.INTER_LINEAR)


def _match_colours(pasted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Reinhard-style transfer over the ROI's centre: the pasted face takes the target's per-channel mean and spread."""
    height, width = pasted.shape[:2]
    core = np.zeros((height, width), np.uint8)
    core[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
    pasted_mean, pasted_std = (v.ravel() for v in cv2.meanStdDev(pasted, mask=core))
    target_mean, target_std = (v.ravel() for v in cv2.meanStdDev(target, mask=core))
    ratio = np.clip((target_std + 1) / (pasted_std + 1), 0.5, 2.0).astype(np.float32)
    return (pasted - pasted_mean.astype(np.float32)) * ratio + target_mean.astype(np.float32)


def _match_grain(blended: np.ndarray, target: np.ndarray, shape: np.ndarray, detail: np.ndarray,
                 grain: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Once the shot's sensor noise is added, give the blended face `share` x the high-pass energy
    of the face it replaced. Where it came out smoother (an upsampled face, a partial blend) part
    of the pasted face's own fine detail comes back (as a generator's sharpening would), the rest
    as fine grain; where it came out sharper, its residual is damped. Changes nothing where
    `shape` (the mask before opacity) is 0. Energies are measured on grey levels (3x cheaper).

    Args:
        detail: the pasted face's high-pass residual before resampling (ROI, RGB float32).
        grain: (share, high-pass energy of the sensor noise added after blending).
    """
    share, noise_energy = grain
    core = shape >= 0.5
    if int(core.sum()) < 16:
        return blended
    wanted = share * (_highpass_energy(_grey(target), core) + noise_energy) - noise_energy
    present = _highpass_energy(_grey(blended), core)
    if present < wanted:  # at most 70% of the lost detail: the resampled look stays
        detail_energy = max(_highpass_energy(_grey(detail), core), 1e-6)
        amount = min(0.7, float(np.sqrt((wanted - present) / detail_energy)))
        blended = blended + amount * detail * shape[..., None]
        present = _highpass_energy(_grey(blended), core)
    for _ in range(3):  # damping a residual also changes the next one: converge in a few steps
        if present <= wanted:
            break
        residual = blended - cv2.GaussianBlur(blended, (0, 0), 1.0)
        blended = blended - (1 - np.sqrt(wanted / present)) * residual * shape[..., None]
        present = _highpass_energy(_grey(blended), core)
    if present >= wanted:
        return blended
    # fine and a little correlated, like a camera's demosaiced grain (x264 drops white noise first)
    fine = cv2.GaussianBlur(rng.standard_normal(shape.shape).astype(np.float32), (0, 0), 0.5) * shape
    unit = _highpass_energy(fine, core)
    return blended + (np.sqrt((wanted - present) / max(unit, 1e-6)) * fine)[..., None]


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=2)


def _highpass_energy(image: np.ndarray, region: np.ndarray) -> float:
    """Mean squared high-pass residual (image minus a sigma-1 Gaussian blur) over a boolean region."""
    residual = image - cv2.GaussianBlur(image, (0, 0), 1.0)
    return float(np.mean(residual[region.astype(bool)] ** 2))


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping source points onto target (Umeyama)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(target_centred.T @ source_centred)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float((singular * np.diag(sign)).sum() / max((source_centred**2).sum(), 1e-6))
    return np.hstack([scale * rotation, (target_mean - scale * rotation @ source_mean)[:, None]])


def _scene_members(source: SourceFile) -> dict[int, str]:
    """Face index -> identity for every identity filmed from this picture (group photos)."""
    return {s.face: member.name for member in IDENTITIES for s in member.sources
            if (s.origin, s.member) == (source.origin, source.member)}
