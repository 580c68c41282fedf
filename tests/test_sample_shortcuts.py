"""dfhelpers.sample: no label shortcut outside the face (container, bitstream, whole-frame grain)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dfhelpers import sample
from dfhelpers.config import SampleConfig


@pytest.fixture(scope="module")
def video_statistics(default_sample) -> pd.DataFrame:
    """One row per video: label, original, split group, and statistics that read no face."""
    persons = pd.read_csv(default_sample / "persons.csv").set_index("video")
    rows = []
    for metadata_path in sorted(default_sample.glob("*/metadata.json")):
        for name, entry in json.loads(metadata_path.read_text()).items():
            path = metadata_path.parent / name
            rows.append({"video": name, "label": entry["label"], "original": entry["original"],
                         "group": persons.loc[name, "person"], **_container_and_frame_statistics(path)})
    return pd.DataFrame(rows)


def _container_and_frame_statistics(path: Path) -> dict[str, float]:
    with av.open(str(path)) as container:
        packets = [(packet.size, packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    with av.open(str(path)) as container:
        grey = [frame.to_ndarray(format="gray").astype(np.float32) for frame in container.decode(video=0)]
    sizes = np.array([size for size, _ in packets], float)
    keyframes = np.array([size for size, is_key in packets if is_key], float)
    border = np.ones(grey[0].shape, bool)  # the frame's outer ring: background in every sample shot
    height, width = border.shape
    border[height // 6: -height // 6, width // 6: -width // 6] = False
    residuals = [frame - cv2.GaussianBlur(frame, (0, 0), 1.0) for frame in grey]
    return {"file_size": path.stat().st_size, "packet_mean": sizes.mean(), "packet_std": sizes.std(),
            "packet_max": sizes.max(), "first_keyframe": keyframes[0], "keyframe_mean": keyframes.mean(),
            "n_keyframes": len(keyframes), "highpass_global": np.mean([np.mean(r**2) for r in residuals]),
            "highpass_background": np.mean([np.mean(r[border] ** 2) for r in residuals])}


def test_container_and_whole_frame_statistics_do_not_predict_the_label(video_statistics):
    features = video_statistics.drop(columns=["video", "label", "original", "group"])
    features = np.log1p(features.to_numpy(float))
    is_fake = (video_statistics["label"] == "FAKE").to_numpy()
    groups = video_statistics["group"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, features, is_fake, groups=groups,
                               cv=GroupKFold(n_splits=len(set(groups))), method="predict_proba")[:, 1]
    assert len(video_statistics) == 99
    assert roc_auc_score(is_fake, scores) <= 0.60


def test_a_fake_first_keyframe_is_as_often_larger_as_smaller_than_its_originals(video_statistics):
    by_name = video_statistics.set_index("video")["first_keyframe"]
    fakes = video_statistics[video_statistics["label"] == "FAKE"]
    is_smaller = [by_name[row.video] < by_name[row.original] for row in fakes.itertuples()]
    assert len(is_smaller) == 66
    assert 0.25 <= np.mean(is_smaller) <= 0.75


def highpass_energy(frame: np.ndarray, region: np.ndarray) -> float:
    """Mean squared high-pass residual (frame minus a sigma-1 Gaussian blur) over a boolean region."""
    image = frame.astype(np.float32)
    return float(np.mean((image - cv2.GaussianBlur(image, (0, 0), 1.0))[region.astype(bool)] ** 2))


@pytest.mark.parametrize("person", ["grace_hopper", "pexels_woman", "group_b", "pyfeat_man"])
def test_blended_face_keeps_the_grain_of_the_face_it_replaces(person):
    sample_cfg = SampleConfig(enabled=True)
    videos = sample.plan(sample_cfg)
    real = videos[(videos["person"] == person) & (videos["label"] == "REAL")].iloc[0]
    shot = videos[(videos["video"] == real["video"]) | (videos["original"] == real["video"])]
    ratios = []
    for rendered in sample.render_shot(shot, sample_cfg, n_frames=6):
        for fake, mask in zip(rendered.fakes, rendered.masks):
            inside = mask >= 0.5 * mask.max()
            ratios.append(highpass_energy(fake, inside) / highpass_energy(rendered.real, inside))
    assert 0.8 <= np.median(ratios[0::2]) <= 1.25 and 0.8 <= np.median(ratios[1::2]) <= 1.25, ratios
