"""Every import order of TensorFlow and torch's vision stack survives in the project's environment,
and `import dfhelpers` does nothing else to the process.

With tensorflow 2.21 and torch 2.14 `import tensorflow` then `import torchvision` segfaults (Triton
after TensorFlow); `import dfhelpers` installs the guard (dfhelpers.compat), which loads Triton
before TensorFlow. Each order runs in a fresh interpreter, as a notebook kernel would.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
TORCH_SIDE = ("torchvision", "facenet_pytorch")
HAS_TRITON = importlib.util.find_spec("triton") is not None

# both orders of TensorFlow and each torch-side package after `import dfhelpers`, then the
# orders of a notebook that imports dfhelpers later or not at all. Not here: tensorflow ->
# torchvision -> dfhelpers, which segfaults before dfhelpers is imported.
ORDERS = [("dfhelpers", *pair) for torch_side in TORCH_SIDE
          for pair in (("tensorflow", torch_side), (torch_side, "tensorflow"))] + [
    ("tensorflow", "dfhelpers", "torchvision"),       # a Keras notebook that imports dfhelpers later
    ("keras", "dfhelpers", "facenet_pytorch"),
    ("torchvision", "dfhelpers", "tensorflow"),
    ("torchvision", "tensorflow", "dfhelpers"),
    ("torchvision", "tensorflow"),                     # the order that is safe without dfhelpers
]

PROBE_TRITON = """
try:
    import triton
    print("triton usable")
except ImportError:
    print("triton blocked")
"""


def run_fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter, without this process's dfhelpers or TensorFlow settings, plus `env`."""
    clean = {key: value for key, value in os.environ.items()
             if key not in ("TF_CPP_MIN_LOG_LEVEL", "DFHELPERS_IMPORT_GUARD", "DFHELPERS_QUIET_NATIVE_LOGS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PROJECT, env={**clean, **env})


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_import_order_survives_and_keeps_triton_unless_tensorflow_came_first(order):
    code = "".join(f"import {name}\n" for name in order) + "import torch\nprint(torch.ones(2).sum().item())\n"
    result = run_fresh(code + PROBE_TRITON)
    assert result.returncode == 0, f"{' -> '.join(order)}: exit code {result.returncode}\n{result.stderr[-2000:]}"
    # TensorFlow loaded before dfhelpers and Triton: blocking Triton is the one safe choice left
    keeps_triton = HAS_TRITON and order[0] not in ("tensorflow", "keras")
    assert result.stdout.split("\n")[:2] == ["2.0", "triton usable" if keeps_triton else "triton blocked"]


def test_a_plain_import_leaves_tf_cpp_min_log_level_unset():
    result = run_fresh("import os, dfhelpers, tensorflow\nprint(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "None"


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed: torch.compile has no GPU compiler to keep")
def test_torch_still_finds_triton_after_dfhelpers_then_tensorflow():
    result = run_fresh("import sys, dfhelpers, tensorflow, torch\n"
                       "from torch.utils._triton import has_triton_package\n"
                       "print(sys.modules.get('triton') is not None, has_triton_package())")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True True"


def test_dfhelpers_import_guard_0_installs_no_import_hook():
    code = "import sys\nhooks = list(sys.meta_path)\nimport dfhelpers\nprint(sys.meta_path == hooks)"
    result = run_fresh(code, DFHELPERS_IMPORT_GUARD="0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


# The default install has no torch (pyproject's `torch` extra holds it; facenet-pytorch is installed
# without its requirements, for its weight files). Each script below runs with torch and
# torchvision unimportable.
REFUSE_TORCH = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is not installed")

sys.meta_path.insert(0, Refuse())
from dfhelpers.config import FacesConfig
from dfhelpers.facedetect import FaceDetector
"""


def run_without_torch(script: str) -> str:
    result = subprocess.run([sys.executable, "-c", REFUSE_TORCH + script], capture_output=True, text=True,
                            timeout=300, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_faces_and_the_pretrained_backbone_need_no_torch():
    n_faces, prob, n_params = run_without_torch("""
from skimage import data
from dfhelpers import efficientnet_lite

boxes, probs = FaceDetector(FacesConfig()).detect([data.astronaut()])[0]
model = efficientnet_lite.build(0, (224, 224, 3), weights="imagenet")
print(len(boxes), round(float(probs[0]), 2), model.count_params())
""").split()
    assert n_faces == "1" and float(prob) > 0.9 and int(n_params) > 3_000_000


def test_the_torch_runtime_without_torch_says_which_extra_to_install():
    printed = run_without_torch("""
from dfhelpers.errors import ConfigError
try:
    FaceDetector(FacesConfig(mtcnn_runtime="torch"))
except ConfigError as err:
    print(err)
""")
    assert "pip install 'dfdetect[torch]'" in printed and len(printed.strip().splitlines()) == 1


def test_benchmarks_with_torch_baselines_say_in_one_line_which_extra_to_install():
    # each script as `python benchmarks/<script> ...` runs it: its folder first on sys.path, run as __main__
    printed = run_without_torch("""
import runpy
for script, arguments in (("bench_faces.py", ["no_such_folder"]),
                          ("bench_inference.py", ["no_such_folder", "--model", "no_such.keras"])):
    sys.argv, sys.path[0] = [f"benchmarks/{script}", *arguments], "benchmarks"
    try:
        runpy.run_path(f"benchmarks/{script}", run_name="__main__")
    except SystemExit as stopped:
        print(stopped.code)
""")
    messages = printed.strip().splitlines()  # one line each, nothing else
    assert [message.split(":")[0] for message in messages] == ["bench_faces.py", "bench_inference.py"]
    for message in messages:
        assert "needs torch, torchvision" in message and message.endswith("pip install '.[dev]'"), message
