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


# --- 02 faces -----------------------------------------------------------------------------


# --- 03 split -----------------------------------------------------------------------------


# --- 04 train -----------------------------------------------------------------------------


# --- 05 inference ---------------------------------------------------------------------------
