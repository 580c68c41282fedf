import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfhelpers import compat, facedetect, mtcnn, torchfile
from dfhelpers.config import FacesConfig
from dfhelpers.errors import MissingWeightsError

NETS = ("pnet", "rnet", "onet")


def photo(package: str, member: str) -> np.ndarray:
    data = (importlib.resources.files(package) / member).read_bytes()
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def real_frames() -> list[np.ndarray]:
    """Real faces that ship in installed packages, at several sizes, one and two per frame."""
    hopper = photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")
    astronaut = photo("skimage", "data/astronaut.png")
    scene = np.full((720, 1280, 3), 90, np.uint8)
    scene[100:100 + 256, 150:150 + 256] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    small_hopper = cv2.resize(hopper, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    scene[400:400 + small_hopper.shape[0], 800:800 + small_hopper.shape[1]] = small_hopper
    return [hopper, astronaut, scene, cv2.resize(scene, (640, 360), interpolation=cv2.INTER_AREA)]


@pytest.fixture(scope="module")
def torch_mtcnn():
    """facenet-pytorch's MTCNN, the reference, on one torch thread (imported safely after TensorFlow)."""
    compat.avoid_triton_after_tensorflow()
    import torch
    from facenet_pytorch import MTCNN

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MTCNN(keep_all=True, device="cpu")
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ours() -> mtcnn.Mtcnn:
    return mtcnn.Mtcnn()


@pytest.mark.parametrize("net", NETS)
def test_legacy_reader_returns_the_tensors_torch_load_returns(net, torch_mtcnn):
    import torch

    path = mtcnn.weights_dir() / f"{net}.pt"
    theirs = torch.load(path)
    ours = torchfile.read_state_dict(path, mtcnn.MTCNN_FIX)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == np.float32 and np.array_equal(ours[name], tensor.numpy()), name


def test_legacy_reader_refuses_a_pickle_that_holds_other_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as stream:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, stream)
        stream.write(pickle.dumps({"weight": io.StringIO("not a tensor")}))  # io.StringIO: a global
    with pytest.raises(MissingWeightsError, match="evil.pt"):
        torchfile.read_state_dict(path, mtcnn.MTCNN_FIX)


@pytest.mark.parametrize("net, shape", [("pnet", (3, 3, 37, 51)), ("pnet", (1, 3, 12, 12)), ("pnet", (2, 3, 15, 13)),
                                        ("rnet", (5, 3, 24, 24)), ("onet", (4, 3, 48, 48))])
def test_each_onnx_net_matches_facenets_torch_net_on_random_input(net, shape, ours, torch_mtcnn):
    import torch

    images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        theirs = getattr(torch_mtcnn, net)(torch.from_numpy(images))
    outputs = ours.run(net, images)
    assert len(outputs) == len(theirs)
    for our_output, their_output in zip(outputs, theirs):
        assert our_output.shape == tuple(their_output.shape)
        assert np.abs(our_output - their_output.numpy()).max() <= 1e-4


def test_detections_agree_with_facenet_on_real_faces(ours, torch_mtcnn):
    n_faces = 0
    for frame in real_frames():
        their_boxes, their_probs, their_points = torch_mtcnn.detect(frame[None], landmarks=True)
        [(boxes, probs, points)] = ours.detect(frame[None])
        their_boxes = np.zeros((0, 4)) if their_boxes[0] is None else np.asarray(their_boxes[0].tolist())
        assert len(boxes if boxes is not None else []) == len(their_boxes)
        for box, prob, face_points, their_box, their_prob, their_face_points in zip(
                boxes, probs, points, their_boxes, their_probs[0], their_points[0]):
            assert iou(box, their_box) >= 0.95
            assert abs(float(prob) - float(their_prob)) <= 0.01
            assert np.abs(face_points - np.asarray(their_face_points.tolist())).max() <= 2.0
        n_faces += len(their_boxes)
    assert n_faces >= 5  # one face in each photo, two in the scene and in its small copy


def test_a_batch_gives_each_frame_the_faces_it_gets_alone(ours):
    frame = real_frames()[3]
    empty = np.full_like(frame, 90)
    batch = ours.detect(np.stack([frame, empty, frame]))
    [alone] = ours.detect(frame[None])
    assert batch[1] == (None, None, None)
    for boxes, probs, points in (batch[0], batch[2]):
        assert np.allclose(boxes, alone[0], atol=1e-3) and np.allclose(probs, alone[1], atol=1e-5)


def test_max_face_size_drops_the_pyramid_levels_of_larger_faces():
    every = mtcnn.pyramid_scales(720, 1280, 20)
    small_only = mtcnn.pyramid_scales(720, 1280, 20, max_face_size=60)
    assert small_only == [scale for scale in every if 12 / scale <= 60] and 0 < len(small_only) < len(every)


def test_the_onnxruntime_detector_runs_without_torch_in_the_process():
    script = textwrap.dedent("""
        import sys
        import cv2, matplotlib.cbook
        from dfhelpers import facedetect
        from dfhelpers.config import FacesConfig
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        frame = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        [(boxes, probs)] = facedetect.FaceDetector(FacesConfig(mtcnn_runtime="onnxruntime")).detect([frame])
        loaded = [name for name in ("torch", "torchvision", "facenet_pytorch", "tensorflow") if name in sys.modules]
        print(len(boxes), loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.split("\n")[-2] == "1 []"


def test_both_runtimes_give_the_face_detector_the_same_faces(torch_mtcnn):
    frames = real_frames()[2:]
    by_runtime = {runtime: facedetect.FaceDetector(FacesConfig(mtcnn_runtime=runtime)).detect_with_landmarks(frames)
                  for runtime in ("onnxruntime", "torch")}
    for (boxes, probs, points), (their_boxes, their_probs, their_points) in zip(*by_runtime.values()):
        assert len(boxes) == len(their_boxes) == 2
        assert np.abs(boxes - their_boxes).max() <= 0.5 and np.abs(probs - their_probs).max() <= 1e-3
        assert np.abs(points - their_points).max() <= 0.5


def iou(box: np.ndarray, other: np.ndarray) -> float:
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    overlap = width * height
    return overlap / ((box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - overlap)


def test_the_shipped_weights_are_facenet_pytorch_2_5_3s_files():
    spec = importlib.util.find_spec("facenet_pytorch")  # found, not imported: importing it imports torch
    if spec is None or importlib.metadata.version("facenet-pytorch") != "2.5.3":
        pytest.skip("facenet-pytorch 2.5.3 is not installed (the torch extra): nothing to compare with")
    theirs = Path(spec.origin).parent / "data"
    ours = Path(mtcnn.__file__).parent / "weights" / "mtcnn"  # inside dfhelpers, not facenet-pytorch's folder
    for net in NETS:
        shipped = hashlib.sha256((ours / f"{net}.pt").read_bytes()).hexdigest()
        assert shipped == hashlib.sha256((theirs / f"{net}.pt").read_bytes()).hexdigest(), net


def test_the_weights_are_found_and_the_nets_built_with_facenet_pytorch_not_importable():
    script = textwrap.dedent("""
        import sys

        class Hidden:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("facenet_pytorch", "torch"):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, Hidden())
        from dfhelpers import mtcnn
        mtcnn.Mtcnn()
        print(mtcnn.weights_dir().relative_to(mtcnn.weights_dir().parents[2]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["dfhelpers/weights/mtcnn"]
