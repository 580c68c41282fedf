"""dfhelpers.selfblend: the landmark mask and the self-blended pseudo-fake."""

import cv2
import matplotlib.cbook
import numpy as np

from dfhelpers import jpeg, selfblend

# Grace Hopper's portrait cut to a 160 px face crop, and her five points in it
POINTS = np.array([[62.0, 70.0], [98.0, 70.0], [80.0, 90.0], [66.0, 108.0], [95.0, 108.0]], dtype=np.float32)


def face_crop() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    portrait = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(portrait[40:552, 0:512], (160, 160), interpolation=cv2.INTER_AREA)


def test_the_mask_covers_the_landmarks_and_leaves_the_corners_alone():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = selfblend.face_mask(POINTS, (160, 160), rng)
        assert mask.shape == (160, 160) and mask.max() == 1.0
        assert (mask[POINTS[:, 1].astype(int), POINTS[:, 0].astype(int)] > 0.5).all()
        assert mask[:10, :10].max() == 0 and mask[-10:, -10:].max() == 0


def test_a_self_blend_changes_the_face_and_is_reproducible_from_its_seed():
    crop = face_crop()
    first = selfblend.self_blend(crop, POINTS, np.random.default_rng(7))
    again = selfblend.self_blend(crop, POINTS, np.random.default_rng(7))
    assert first.shape == crop.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    face = (slice(65, 110), slice(60, 100))
    changes = [np.abs(selfblend.self_blend(crop, POINTS, np.random.default_rng(seed)).astype(int)[face]
                      - crop.astype(int)[face]).mean() for seed in range(10)]
    assert min(changes) > 0.5  # every pseudo-fake differs from its REAL inside the face


def test_a_self_blend_ends_compressed_as_the_face_stage_stores_crops():
    crop = face_crop()
    for seed in range(5):
        plain = selfblend.self_blend(crop, POINTS, np.random.default_rng(seed))
        stored = selfblend.self_blend(crop, POINTS, np.random.default_rng(seed), jpeg_quality=95)
        assert np.array_equal(stored, jpeg.jpeg_roundtrip(plain, 95))
        assert not np.array_equal(stored, plain)
