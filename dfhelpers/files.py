"""Atomic writes: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    The temporary file lives in the same folder (same filesystem), so the final
    ``os.replace`` is atomic: a crash leaves either the old file or the new one, never
    half of one. The suffix is kept so that writers which pick a format by extension
    (``.keras``, ``.jpg``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_json(value: Any, path: str | Path) -> Path:
    """Write a JSON document (indented, keys in insertion order, json_safe) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(value), indent=2, default=str, allow_nan=False) + "\n")
    return Path(path)


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float, at any depth, as None: JSON has no NaN, and a
    figure that could not be computed (an AUC of one class, a baseline not run) is null, not 0."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (models and videos can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
