"""Work-arounds for the versions we run on, each with the reason it exists.

`import dfhelpers` calls `install()`: from then on, in this process, TensorFlow's native
start-up log lines are dropped and importing TensorFlow blocks Triton (see below), whatever
order the user imports things in.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from typing import Any, Iterator, Optional, Sequence

# Lines TensorFlow's C++ side writes to stderr at import or first use on a machine without a
# GPU; none of them asks the user to do anything. Anything else on stderr is passed through.
TENSORFLOW_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "cpu_feature_guard.cc",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
)


def install() -> None:
    """Quiet TensorFlow's start-up and make every tensorflow/torch import order safe (idempotent)."""
    # before TensorFlow loads: 3 drops its C++ ERROR lines too, which on a machine without a CUDA
    # driver are only "cuInit failed"; with a driver, keep errors (2 drops INFO and WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _has_cuda_driver() else "3")
    if "tensorflow" in sys.modules:
        avoid_triton_after_tensorflow()
    elif not any(isinstance(finder, _TensorFlowImportGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowImportGuard())


def avoid_triton_after_tensorflow() -> None:
    """Keep torch from importing Triton when TensorFlow is already loaded in this process.

    With tensorflow 2.21 and torch 2.14 (triton 3.8), loading Triton's native library after
    TensorFlow's segfaults (both bundle LLVM); torch imports Triton through torchvision ->
    torch._dynamo. Triton only compiles GPU kernels, which CPU detection never uses, and torch
    treats a missing Triton as "no GPU compiler". When Triton loaded first, nothing is needed.
    `install()` calls this when TensorFlow is imported; calling it again is harmless.
    """
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError


@contextlib.contextmanager
def native_stderr_filtered(drop: Sequence[str] = TENSORFLOW_STARTUP_NOISE) -> Iterator[None]:
    """Inside the block, lines written to file descriptor 2 (by C/C++ code too) that contain one of
    `drop` are discarded; the others are written to sys.stderr when the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(pattern in line for pattern in drop)]
            if kept:
                sys.stderr.write("".join(kept))


class _TensorFlowImportGuard(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of the top-level `tensorflow` package once."""

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:  # the finder that would have found it (a probe may ask too)
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None:
                        spec.loader = _QuietLoader(spec.loader, self)
                    return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader with TensorFlow's start-up noise filtered, then blocks Triton."""

    def __init__(self, loader: Any, finder: _TensorFlowImportGuard):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with contextlib.suppress(ValueError):  # the first import is the one that loads native code
            sys.meta_path.remove(self._finder)
        with native_stderr_filtered():
            self._loader.exec_module(module)
        avoid_triton_after_tensorflow()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        if name == "_loader":  # not set yet (a copy): avoid recursing
            raise AttributeError(name)
        return getattr(self._loader, name)


def _has_cuda_driver() -> bool:
    """True when the NVIDIA driver library is installed (a GPU may be usable)."""
    return ctypes.util.find_library("nvcuda" if os.name == "nt" else "cuda") is not None
