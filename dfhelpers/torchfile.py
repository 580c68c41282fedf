"""Reading torch's legacy (non-zip) state-dict files as numpy arrays, without torch.

facenet-pytorch's MTCNN weights and the EfficientNet-Lite ImageNet weights ship in this format;
reading them here keeps torch (and its import-order hazards beside TensorFlow) out of the process.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Optional

import numpy as np

from dfhelpers.errors import MissingWeightsError

# torch's legacy (non-zip) serialization: a magic-number pickle, then the protocol version
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def read_state_dict(path: str | Path, fix: str) -> dict[str, np.ndarray]:
    """A state dict saved by torch's legacy (non-zip) `torch.save`, read as numpy arrays without torch.

    Only plain tensors in an (Ordered)dict are accepted; any other pickled object is refused.
    `fix` ends the error message: what the user should do (reinstall the package that ships the file).

    Raises:
        MissingWeightsError: the file is not a legacy torch state dict of tensors.
    """
    with open(path, "rb") as stream:
        try:
            return _read_legacy(stream)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError) as err:
            raise MissingWeightsError(f"{path}: not a legacy torch state dict of tensors ({err}); {fix}") from err


def package_folder(module: str, subfolder: str) -> Optional[Path]:
    """`subfolder` of an installed package, found without importing it (importing facenet-pytorch
    would import torch); None when the package is not installed."""
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent / subfolder if spec is not None and spec.origin else None


# --- private helpers -------------------------------------------------------------------


class _LegacyUnpickler(pickle.Unpickler):
    """Knows the three names a legacy state dict needs; refuses every other global."""

    def __init__(self, stream: BinaryIO):
        super().__init__(stream)
        self.storages: dict[str, tuple[type, int]] = {}  # key -> (numpy dtype, element count)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _LazyTensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only tensors in a dict are expected")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, n_elements = pid[:5]
        self.storages[str(key)] = (dtype, int(n_elements))
        return str(key)


class _StateDict(dict):
    """A dict that takes attributes: torch.save pickles the state dict's `_metadata` as one."""


class _LazyTensor:
    """_rebuild_tensor_v2's arguments, materialised once the storages behind the pickle are read."""

    def __init__(self, storage_key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, tuple(size), tuple(stride)

    def array(self, storage: np.ndarray) -> np.ndarray:
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(storage[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view)  # a copy: the storage may be shared between tensors


def _read_legacy(stream: BinaryIO) -> dict[str, np.ndarray]:
    if pickle.load(stream) != _LEGACY_MAGIC or pickle.load(stream) != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("not torch's legacy format (wrong magic number or protocol)")
    system = pickle.load(stream)
    if not system.get("little_endian", False):
        raise pickle.UnpicklingError("saved on a big-endian machine")
    unpickler = _LegacyUnpickler(stream)
    state = unpickler.load()
    storages = {}
    for key in pickle.load(stream):
        dtype, n_elements = unpickler.storages[key]
        n_stored = int(np.frombuffer(stream.read(8), dtype="<i8")[0])
        raw = stream.read(n_stored * np.dtype(dtype).itemsize)
        if n_stored != n_elements or len(raw) != n_stored * np.dtype(dtype).itemsize:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        storages[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if not isinstance(state, dict) or not all(isinstance(v, _LazyTensor) for v in state.values()):
        raise pickle.UnpicklingError("the pickle holds something other than a dict of tensors")
    return {name: tensor.array(storages[tensor.storage_key]) for name, tensor in state.items()}
