"""Every figure the notebooks show; takes DataFrames and arrays, imports no stage."""

from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() == "agg" or not matplotlib.get_backend():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LABEL_COLORS = {"REAL": "tab:blue", "FAKE": "tab:red"}


# --- 01 data ------------------------------------------------------------------------------


def label_counts(counts: pd.DataFrame) -> plt.Figure:
    """Grouped bars of REAL and FAKE videos per part (the table from metadata.label_counts)."""
    per_part = counts.drop(index="total", errors="ignore")[["REAL", "FAKE"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(per_part) + 2), 3.2))
    per_part.plot.bar(ax=ax, color=[LABEL_COLORS["REAL"], LABEL_COLORS["FAKE"]], rot=0)
    ax.set_xlabel("")
    ax.set_ylabel("videos")
    ax.set_title("Videos per part and label")
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    fig.tight_layout()
    return fig


# --- 02 faces -----------------------------------------------------------------------------


# --- 03 split -----------------------------------------------------------------------------


# --- 04 train -----------------------------------------------------------------------------


# --- 05 inference ---------------------------------------------------------------------------
