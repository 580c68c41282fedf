"""Work-arounds for the versions we run on, each with the reason it exists."""

from __future__ import annotations

import sys


def avoid_triton_after_tensorflow() -> None:
    """Keep torch from importing Triton when TensorFlow is already loaded in this process.

    With tensorflow 2.21 and torch 2.14 (triton 3.8), loading Triton's native library after
    TensorFlow's segfaults (both bundle LLVM); torch imports Triton through torchvision ->
    torch._dynamo. Triton only compiles GPU kernels, which CPU detection never uses, and torch
    treats a missing Triton as "no GPU compiler". When Triton loaded first, nothing is needed.
    Call it before building MTCNN.
    """
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError
