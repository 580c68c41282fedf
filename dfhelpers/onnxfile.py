"""The classifier's ONNX sidecar: its name, the Keras file it was made from, an onnxruntime session.

Kept apart from dfhelpers.model so that scoring with the sidecar imports neither Keras nor
TensorFlow (onnxruntime alone: 0.2 s, where TensorFlow and the .keras load take seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dfhelpers import files
from dfhelpers.errors import ModelLoadError

FORMAT_VERSION = "1"  # bump when what export_onnx writes changes meaning (inputs, outputs, metadata)
KERAS_SHA256_KEY = "dfdetect.keras_sha256"  # metadata_props: sha256 of the .keras bytes it was exported from
FORMAT_KEY = "dfdetect.format_version"


def sidecar_path(keras_path: str | Path) -> Path:
    """`<model>.onnx` beside `<model>.keras`."""
    return Path(keras_path).with_suffix(".onnx")


def open_session(onnx_path: str | Path, n_threads: int = 1) -> Any:
    """An onnxruntime CPU session on an exported classifier, n_threads intra-op threads, no spinning.

    Raises:
        ModelLoadError: the file is missing or is not a model onnxruntime can run.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path}: model file not found; pass a .keras or .onnx file saved by dfdetect")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, n_threads)
    options.inter_op_num_threads = 1
    # detection threads share the cores; a spinning pool would steal their time between model calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisations, not the user
    try:
        return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/... types for a bad file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ModelLoadError(f"{onnx_path}: cannot load the ONNX model ({reason}); "
                             "re-export it with `dfdetect export MODEL.keras`") from err


def recorded_keras_sha256(session: Any) -> Optional[str]:
    """The sha256 of the .keras file a session's model was exported from (None: not ours, or older)."""
    properties = session.get_modelmeta().custom_metadata_map
    if properties.get(FORMAT_KEY) != FORMAT_VERSION:
        return None
    return properties.get(KERAS_SHA256_KEY)


def fresh_session(keras_path: str | Path, n_threads: int = 1, onnx_path: str | Path | None = None) -> Any:
    """A session on `onnx_path` (default: the sidecar) if it was exported from these exact .keras
    bytes, else None; the caller scores with it, so the file is opened once.

    A file that does not load counts as absent (the sidecar is replaced by the next export).
    """
    onnx_path = Path(onnx_path) if onnx_path is not None else sidecar_path(keras_path)
    if not (onnx_path.is_file() and Path(keras_path).is_file()):
        return None
    try:
        session = open_session(onnx_path, n_threads)
    except ModelLoadError:
        return None
    return session if recorded_keras_sha256(session) == files.sha256(keras_path) else None


def check_contract(session: Any, onnx_path: Path, crop_size: int) -> Any:
    """The session, if its model takes (N, crop_size, crop_size, 3) crops for any N and outputs (N, 1);
    else a ModelLoadError."""
    expected = session.get_inputs()[0].shape
    if expected and isinstance(expected[0], int):  # all faces of a video go in one call, whatever their number
        raise ModelLoadError(f"{onnx_path}: the model takes batches of exactly {expected[0]} crops; "
                             "export it with `dfdetect export MODEL.keras` (a free batch size)")
    sizes = [value if isinstance(value, int) else None for value in expected[1:3]]
    if len(expected) != 4 or (sizes != [crop_size, crop_size] and sizes != [None, None]):
        raise ModelLoadError(f"{onnx_path}: the model takes {expected} inputs but faces.crop_size is {crop_size}; "
                             "score with the config the model was trained with")
    output = session.get_outputs()[0].shape
    if len(output) != 2 or output[1] != 1:
        raise ModelLoadError(f"{onnx_path}: the model outputs {output}, not (N, 1) P(FAKE); "
                             "export a classifier built by dfhelpers.model")
    return session


def predict(session: Any, crops: Any) -> Any:
    """The model's output for float32 crops (k, size, size, 3): (k, 1) float32."""
    return session.run(None, {session.get_inputs()[0].name: crops})[0]
