"""How a face crop is stored: OpenCV's JPEG of an RGB crop, and the crop as it reads back.

One place for it, because three stages must compress alike: the face stage writes crops
with it, scoring passes its crops through it, and self-blended pseudo-fakes end with it.
"""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB crop (OpenCV's encoder, as the original workflow's save_path)."""
    is_ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not is_ok:
        raise ValueError(f"OpenCV could not encode a crop of shape {crop.shape} as JPEG")
    return encoded.tobytes()


def jpeg_roundtrip(crop: np.ndarray, quality: int) -> np.ndarray:
    """The crop as it reads back from its JPEG file (same encoder, same quality, RGB uint8).

    Scoring uses this so that inference crops carry the training crops' compression artefacts.
    """
    encoded = np.frombuffer(encode_jpeg(crop, quality), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
