"""Work-arounds for the versions we run on, each with the reason it exists.

`import dfhelpers` calls `install()`, and that is its one effect on the process: an import hook
on TensorFlow. With tensorflow 2.21 and torch 2.14 (triton 3.8), loading Triton's native library
after TensorFlow's segfaults (both bundle LLVM); torch imports Triton lazily (torchvision ->
torch._dynamo), so `import tensorflow` then `import torchvision` kills the process. When
TensorFlow is first imported, the hook imports Triton just before it (where Triton is installed:
~0.1 s); torch later finds it loaded, and `torch.compile` keeps working. Only when TensorFlow was
loaded before dfhelpers is Triton blocked instead (`avoid_triton_after_tensorflow`). To turn the
hook off, set DFHELPERS_IMPORT_GUARD=0 before `import dfhelpers`; then import torch or
torchvision before TensorFlow yourself.

A plain import sets no environment variable and no log level. Native logs are quieted only where
the library needs it: `quiet_native_logs()`, which `dfdetect` and run_all.py call (their notebook
kernels and pool workers inherit it), and TensorFlow imports made by dfhelpers' own modules (a
notebook's `from dfhelpers import model`), whose start-up lines are dropped.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from typing import Any, Iterator, Optional, Sequence

IMPORT_GUARD_VARIABLE = "DFHELPERS_IMPORT_GUARD"  # "0": `import dfhelpers` installs nothing
QUIET_VARIABLE = "DFHELPERS_QUIET_NATIVE_LOGS"  # "1": every TensorFlow import is quieted (quiet_native_logs)
OPENCV_FFMPEG_QUIET = "-8"  # AV_LOG_QUIET, for OPENCV_FFMPEG_LOGLEVEL

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
    """Make every tensorflow/torch import order safe in this process (idempotent; see the module docstring)."""
    if os.environ.get(IMPORT_GUARD_VARIABLE) == "0":
        return
    if "tensorflow" in sys.modules:
        avoid_triton_after_tensorflow()
    elif not any(isinstance(finder, _TensorFlowImportGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowImportGuard())


def quiet_native_logs() -> None:
    """Quiet TensorFlow's and OpenCV's FFmpeg native logs in this process and those it starts.

    For the processes the library runs itself (`dfdetect`, run_all.py and its notebook kernels,
    their pool workers), where TensorFlow's start-up lines ask nothing of the user and a broken
    video's reason is already in its row. Sets, unless already set: TF_CPP_MIN_LOG_LEVEL (see
    `_tensorflow_log_level`); OPENCV_FFMPEG_LOGLEVEL=-8, because OpenCV, the fallback reader,
    prints FFmpeg's errors ("moov atom not found" for a truncated file) where PyAV, the main one,
    drops them; DFHELPERS_QUIET_NATIVE_LOGS=1, so that the import hook drops TensorFlow's start-up
    lines whoever imports it. Works if TensorFlow is not imported yet, and for OpenCV before it
    opens its first video (it reads the variable once).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _tensorflow_log_level())
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", OPENCV_FFMPEG_QUIET)
    os.environ.setdefault(QUIET_VARIABLE, "1")


def avoid_triton_after_tensorflow() -> None:
    """Keep torch from importing Triton when TensorFlow is already loaded and Triton is not.

    The one safe choice left when TensorFlow was imported before dfhelpers (see the module
    docstring): `import triton` then raises ImportError, which torch treats as "no GPU compiler"
    (CPU detection never needs one). When Triton loaded first, nothing is needed.
    `install()` calls this; the torch MTCNN runtime calls it before importing torch.
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
                        spec.loader = _GuardedLoader(spec.loader, self)
                    return spec
        return None


class _GuardedLoader(importlib.abc.Loader):
    """Loads Triton, then runs the wrapped loader (quieted when the library asks); blocks Triton if it did not load."""

    def __init__(self, loader: Any, finder: _TensorFlowImportGuard):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with contextlib.suppress(ValueError):  # the first import is the one that loads native code
            sys.meta_path.remove(self._finder)
        has_triton = _import_triton_if_installed()
        is_quiet = os.environ.get(QUIET_VARIABLE) == "1" or _imported_by_dfhelpers()
        with _tensorflow_quieted() if is_quiet else contextlib.nullcontext():
            self._loader.exec_module(module)
        if not has_triton:
            avoid_triton_after_tensorflow()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        if name == "_loader":  # not set yet (a copy): avoid recursing
            raise AttributeError(name)
        return getattr(self._loader, name)


def _import_triton_if_installed() -> bool:
    """True when Triton is loaded now (imported here or before); False when absent or broken."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        importlib.import_module("triton")
    except (ImportError, OSError, RuntimeError):  # a broken install: blocked after TensorFlow instead
        return False
    return True


def _imported_by_dfhelpers() -> bool:
    """True when a dfhelpers module other than this one is on the call stack (the library imports TensorFlow)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name.split(".")[0] == "dfhelpers" and name != __name__:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _tensorflow_quieted() -> Iterator[None]:
    """TensorFlow's start-up lines dropped and its log level set while it loads (it reads
    TF_CPP_MIN_LOG_LEVEL once, then); the environment is left as it was."""
    was_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _tensorflow_log_level())
    try:
        with native_stderr_filtered():
            yield
    finally:
        if not was_set:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def _tensorflow_log_level() -> str:
    """3 drops TensorFlow's C++ ERROR lines too, which without a CUDA driver are only "cuInit
    failed"; with a driver, errors are kept (2 drops INFO and WARNING)."""
    return "2" if _has_cuda_driver() else "3"


def _has_cuda_driver() -> bool:
    """True when the NVIDIA driver library is installed (a GPU may be usable)."""
    return ctypes.util.find_library("nvcuda" if os.name == "nt" else "cuda") is not None
