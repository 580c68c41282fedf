"""A tiny run folder of synthetic JPEG crops and its split.csv, for the data and training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from dfhelpers.runfolder import LABELS, SPLITS
from dfhelpers.selfblend import LANDMARK_COLUMNS

# five points (eyes, nose, mouth corners) as fractions of the crop side, where MTCNN puts them
# in a crop with the face stage's margin
LANDMARK_FRACTIONS = np.array([[0.36, 0.40], [0.64, 0.40], [0.50, 0.55], [0.39, 0.68], [0.61, 0.68]])


def write_run(work_dir: Path, n_per_video: int, pixels: Callable[[np.random.Generator, str], np.ndarray],
              labels: tuple[str, ...] = LABELS, with_landmarks: bool = False) -> None:
    """Two identities per split, one video per label each; `pixels(rng, label)` draws a crop.

    with_landmarks adds the face stage's landmark columns (the same five points for every crop).
    """
    rng = np.random.default_rng(0)
    rows = []
    for split in SPLITS:
        for person in range(2):
            for label in labels:
                video = f"{split}{person}_{label.lower()}.mp4"
                for frame in range(n_per_video):
                    relative = Path("faces") / video / f"{frame}_0.jpg"
                    (work_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                    crop = pixels(rng, label)
                    Image.fromarray(crop).save(work_dir / relative, quality=95)
                    row = {"path": str(relative), "video": video, "frame": frame, "track": 0,
                           "group": f"{split}{person}", "label": label, "split": split}
                    if with_landmarks:
                        row.update(zip(LANDMARK_COLUMNS, (LANDMARK_FRACTIONS * crop.shape[0]).reshape(-1)))
                    rows.append(row)
    (work_dir / "manifests").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(work_dir / "manifests" / "split.csv", index=False)


def write_square_run(work_dir: Path, crop_size: int, n_per_video: int = 4) -> None:
    """write_run of noise crops where FAKE crops carry a bright square: a pattern a tiny model learns at once."""
    def pixels(rng: np.random.Generator, label: str) -> np.ndarray:
        noise = rng.integers(0, 120, (crop_size, crop_size, 3)).astype("uint8")
        if label == "FAKE":
            noise[8:16, 8:16] = 250
        return noise

    write_run(work_dir, n_per_video, pixels)
