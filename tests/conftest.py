"""Shared test set-up: native imports made safe, and the fixtures that several test files use."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

# Test modules import TensorFlow and torchvision at collection time, in file order; TensorFlow
# then torchvision segfaults unless dfhelpers' import guard is installed (see dfhelpers.compat).
import dfhelpers  # noqa: F401


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def default_sample(tmp_path_factory) -> Path:
    """The default small sample (configs/sample.yaml holds out 2 identities, not 3), generated once per
    session for test_sample.py and test_sample_shortcuts.py (read-only for them)."""
    from dfhelpers import sample
    from dfhelpers.config import SampleConfig

    out_dir = tmp_path_factory.getbasetemp() / "default_sample"
    sample.generate(out_dir, SampleConfig(enabled=True))
    return out_dir


@pytest.fixture
def write_notebook() -> Callable[..., None]:
    """write_notebook(path, *sources): a notebook with run_all.py's `parameters` cell, then one code cell a source."""
    import nbformat

    def write(path: Path, *sources: str) -> None:
        notebook = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('config_path = "unset"\noverrides = {}')
        params.metadata["tags"] = ["parameters"]
        notebook.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, path)

    return write


@pytest.fixture
def predictions():
    """Six scored videos: two REAL, three FAKE (one without a face), one unlabelled."""
    return pd.DataFrame({
        "video": ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4", "u.mp4"],
        "status": ["ok", "ok", "ok", "ok", "no_face: none", "ok"],
        "score": [0.9, 0.2, 0.6, 0.7, 0.5, 0.3],
        "label": ["FAKE", "REAL", "FAKE", "REAL", "FAKE", None],
    })
