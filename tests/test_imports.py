"""Every import order of TensorFlow and torch's vision stack survives in the project's environment.

With tensorflow 2.21 and torch 2.14 `import tensorflow` then `import torchvision` segfaults (Triton
after TensorFlow); `import dfhelpers` installs the guard (dfhelpers.compat). Each order runs in
a fresh interpreter, as a notebook kernel would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
TORCH_SIDE = ("torchvision", "facenet_pytorch")

# both orders of TensorFlow and each torch-side package after `import dfhelpers`, then the
# orders of a notebook that imports dfhelpers late or not at all
ORDERS = [("dfhelpers", *pair) for torch_side in TORCH_SIDE
          for pair in (("tensorflow", torch_side), (torch_side, "tensorflow"))] + [
    ("tensorflow", "dfhelpers", "torchvision"),       # a Keras notebook that imports dfhelpers later
    ("keras", "dfhelpers", "facenet_pytorch"),
    ("torchvision", "tensorflow"),                     # the order that is safe without dfhelpers
]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_import_order_does_not_kill_the_process(order):
    code = "".join(f"import {name}\n" for name in order) + "import torch\nprint(torch.ones(2).sum().item())\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PROJECT)
    assert result.returncode == 0, f"{' -> '.join(order)}: exit code {result.returncode}\n{result.stderr[-2000:]}"
    assert result.stdout.strip() == "2.0"


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
