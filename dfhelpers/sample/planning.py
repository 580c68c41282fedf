"""The sample's plan: which videos exist, their identities, split, manipulation and encoder settings."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import pandas as pd

from dfhelpers.config import SampleConfig
from dfhelpers.sample.sources import IDENTITIES, Identity, split_groups

PLAN_COLUMNS = ["video", "label", "original", "person", "group", "folder", "method", "source", "donors", "seed",
                "crf", "x264_preset", "gop", "first_crf"]
MOVING_DONOR_SHARE = 0.5  # face swaps whose donor is a talking clip when the split has one; the rest any face
TEST_FOLDER = "test"  # plan folder key of the held-out identities; train parts are "part_0", "part_1", ...
PRESETS = {  # frame geometry per preset; "small" takes width/height/fps/seconds/face_height from SampleConfig
    # DFDC's own format; faces 22-32% of the height (240-345 px) as in typical DFDC interviews (narrow
    # photos force closer framing); finer grain, so a 10 s clip weighs ~3-5 MB like DFDC's
    "dfdc": {"width": 1920, "height": 1080, "fps": 30, "seconds": 10.0, "face_height": (0.22, 0.32),
             "noise": (0.5, 1.0)},
}


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """Frame geometry of every video in a dataset."""

    width: int
    height: int
    fps: int
    n_frames: int
    face_height: tuple[float, float]  # face box height as a fraction of the frame height
    noise: tuple[float, float]  # range of the sensor-noise sigma, grey levels


def frame_spec(sample_cfg: SampleConfig) -> FrameSpec:
    """The frame geometry of sample_cfg's preset."""
    geometry = {"width": sample_cfg.width, "height": sample_cfg.height, "fps": sample_cfg.fps,
                "seconds": sample_cfg.seconds, "face_height": tuple(sample_cfg.face_height),
                "noise": tuple(sample_cfg.noise)}
    geometry.update(PRESETS.get(sample_cfg.preset, {}))
    n_frames = max(1, round(geometry.pop("seconds") * geometry["fps"]))
    return FrameSpec(n_frames=n_frames, **geometry)


def plan(sample_cfg: SampleConfig, n_parts: int = 2, with_test: bool = True) -> pd.DataFrame:
    """Every video of the sample, one row each, REAL before its FAKEs (pure: reads no file).

    Columns: video (10 random letters + .mp4), label, original, person (identity), group (split
    group: identities sharing a picture), folder ("part_<i>" or "test"), method ("real",
    "face_swap", "self_blend"), source (index into the identity's sources), donors
    (comma-separated identities a face swap may paste, moving footage first), seed (per video),
    and the encoder settings drawn per video whatever its label: crf, x264_preset, gop (keyframe
    interval, frames), first_crf (0, or the crf of an earlier encode the video is decoded from).
    """
    rng = np.random.default_rng(sample_cfg.seed)
    identities = list(IDENTITIES[: sample_cfg.n_identities or len(IDENTITIES)])
    groups = split_groups(identities)
    n_test = min(sample_cfg.n_test_identities, len(identities) - 1) if with_test else 0
    test_names = _pick_test_identities(identities, groups, n_test, rng)
    # held-out identities first in each round, so a capped run (--videos 4) still fills test_videos/
    ordered = sorted(identities, key=lambda member: member.name not in test_names)
    shots = [(member, video) for video in range(sample_cfg.videos_per_identity) for member in ordered]
    names = iter(_video_names(rng, len(shots) * (1 + sample_cfg.fakes_per_real)))
    rows: list[dict] = []
    n_train_shots = 0
    for member, video in shots:
        is_test = member.name in test_names
        folder = TEST_FOLDER if is_test else f"part_{n_train_shots % n_parts}"
        n_train_shots += not is_test
        split_members = [other for other in identities if (other.name in test_names) == is_test]
        shot = _shot_rows(member, video, folder, split_members, names, sample_cfg.fakes_per_real, rng)
        rows += [{**row, "group": groups[member.name], **_encoder_settings(sample_cfg, rng)} for row in shot]
    videos = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    return videos.head(sample_cfg.max_videos) if sample_cfg.max_videos else videos


def _pick_test_identities(identities: list[Identity], groups: dict[str, str], n_test: int,
                          rng: np.random.Generator) -> set[str]:
    """Held-out identities from single-person split groups: one with moving footage (so test
    face swaps have a talking donor too, when another one stays for training), the rest photos."""
    if n_test <= 0:
        return set()
    solo = [member for member in identities if groups[member.name] == member.name]
    moving = [member.name for member in solo if member.has_footage]
    still = [member.name for member in solo if not member.has_footage]
    picks = [str(rng.choice(moving))] if len(moving) >= 2 else []
    picks += rng.permutation(still).tolist()[: n_test - len(picks)]
    return set(picks[:n_test])


def _shot_rows(member: Identity, video: int, folder: str, split_members: list[Identity], names: Iterator[str],
               n_fakes: int, rng: np.random.Generator) -> list[dict]:
    real_name = next(names)
    source = video % len(member.sources)
    rows = [{"video": real_name, "label": "REAL", "original": "", "person": member.name, "folder": folder,
             "method": "real", "source": source, "donors": "", "seed": int(rng.integers(2**31))}]
    others = [other for other in split_members if other.name != member.name]
    for fake in range(n_fakes):
        # alternate the two kinds; a split with a single identity can only self-blend
        method = "face_swap" if fake % 2 == 0 and others else "self_blend"
        # moving, talking donors first in half the swaps, any identity of the split first in the other
        # half (the rest are fall-backs for group photos): with moving donors always first, a split
        # with one clip pasted that one face into every swap, and a classifier learnt the face, not the blend
        shuffled = [others[i] for i in rng.permutation(len(others))]
        is_moving_first = rng.random() < MOVING_DONOR_SHARE
        ranked = sorted(shuffled, key=lambda other: not other.has_footage) if is_moving_first else shuffled
        donors = ",".join(other.name for other in ranked) if method == "face_swap" else ""
        rows.append({"video": next(names), "label": "FAKE", "original": real_name, "person": member.name,
                     "folder": folder, "method": method, "source": source, "donors": donors,
                     "seed": int(rng.integers(2**31))})
    return rows


def _encoder_settings(sample_cfg: SampleConfig, rng: np.random.Generator) -> dict:
    """Drawn for every video the same way, REAL or FAKE: file size and bitstream say nothing of the label."""
    crf = int(rng.integers(sample_cfg.crf[0], sample_cfg.crf[1] + 1))
    is_double = bool(rng.random() < sample_cfg.double_compression)
    first_crf = int(rng.integers(sample_cfg.crf[0], sample_cfg.crf[1] + 1)) if is_double else 0
    return {"crf": crf, "x264_preset": str(rng.choice(list(sample_cfg.x264_presets))),
            "gop": int(rng.integers(sample_cfg.gop[0], sample_cfg.gop[1] + 1)), "first_crf": first_crf}


def _video_names(rng: np.random.Generator, n_videos: int) -> list[str]:
    """DFDC-like names: 10 random lowercase letters, unique."""
    names: list[str] = []
    while len(names) < n_videos:
        letters = rng.integers(0, 26, size=10)
        name = "".join(chr(ord("a") + int(code)) for code in letters) + ".mp4"
        if name not in names:
            names.append(name)
    return names
