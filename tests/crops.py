"""A tiny run folder of synthetic JPEG crops and its split.csv, for the data and training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image


def write_run(work_dir: Path, n_per_video: int, pixels: Callable[[np.random.Generator, str], np.ndarray]) -> None:
    """Two identities per split, one REAL and one FAKE video each; `pixels(rng, label)` draws a crop."""
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for person in range(2):
            for label in ("REAL", "FAKE"):
                video = f"{split}{person}_{label.lower()}.mp4"
                for frame in range(n_per_video):
                    relative = Path("faces") / video / f"{frame}_0.jpg"
                    (work_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels(rng, label)).save(work_dir / relative, quality=95)
                    rows.append({"path": str(relative), "video": video, "frame": frame, "track": 0,
                                 "group": f"{split}{person}", "label": label, "split": split})
    (work_dir / "manifests").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(work_dir / "manifests" / "split.csv", index=False)
