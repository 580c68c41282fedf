"""Heatmaps of a tiny model trained here on crops whose only difference is a blended patch."""

import numpy as np
import pytest

from dfhelpers import explain

SIZE, PATCH = 48, 12


def crop_pair(rng, top, left):
    """A smooth-texture crop and the same crop with a square of sharp texture blended in at (top, left)."""
    import cv2

    noise = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    real = cv2.GaussianBlur(noise, (0, 0), 2.0)
    alpha = np.zeros((SIZE, SIZE, 1), dtype=np.float32)
    alpha[top:top + PATCH, left:left + PATCH] = 1.0
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)[..., None]  # a soft mask, as face blending uses
    fake = (alpha * noise + (1 - alpha) * real).round().astype(np.uint8)
    return real, fake


@pytest.fixture(scope="module")
def patch_model():
    """Trained in a few seconds to tell textured crops from ones with a smooth pasted square."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    pairs = [crop_pair(rng, *rng.integers(0, SIZE - PATCH, 2)) for _ in range(200)]
    crops = np.concatenate([np.stack([real for real, _ in pairs]), np.stack([fake for _, fake in pairs])])
    labels = np.concatenate([np.zeros(len(pairs)), np.ones(len(pairs))])
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Rescaling(1 / 255)(inputs)
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(features)
    features = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="last_conv")(features)
    pooled = keras.layers.GlobalMaxPooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(crops.astype(np.float32), labels, epochs=8, batch_size=32, verbose=0, shuffle=True)
    return model


def fake_crops(n=4, seed=1):
    rng = np.random.default_rng(seed)
    corners = [tuple(rng.integers(0, SIZE - PATCH, 2)) for _ in range(n)]
    return np.stack([crop_pair(rng, *corner)[1] for corner in corners]), corners


def peak(heatmap):
    """(row, column) of a heatmap's maximum."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(column)


def peaks_inside_patches(maps, corners, slack=3):
    return [top - slack <= row < top + PATCH + slack and left - slack <= col < left + PATCH + slack
            for (row, col), (top, left) in zip(map(peak, maps), corners)]


def test_grad_cam_peaks_on_the_blended_patch(patch_model):
    crops, corners = fake_crops()
    assert patch_model.predict_on_batch(crops.astype(np.float32)).min() > 0.5  # the model did learn the patch
    maps, method = explain.heatmaps(patch_model, crops)
    assert method == "gradcam" and maps.shape == (len(crops), SIZE, SIZE)
    assert all(peaks_inside_patches(maps, corners))


def test_occlusion_map_peaks_on_the_blended_patch(patch_model):
    crops, corners = fake_crops()
    maps, method = explain.heatmaps(patch_model, crops, method="occlusion")
    assert method == "occlusion" and maps.max() == pytest.approx(1.0)
    assert sum(peaks_inside_patches(maps, corners, slack=SIZE // 8)) >= len(crops) - 1


def test_a_model_without_a_feature_map_falls_back_to_occlusion():
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense_only = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    assert explain.last_feature_map_layer(dense_only) is None
    maps, method = explain.heatmaps(dense_only, fake_crops(n=1)[0])
    assert method == "occlusion" and maps.shape == (1, SIZE, SIZE)
