"""Shared test set-up. Fixtures live in each test file; this only makes native imports safe."""

# Test modules import TensorFlow and torchvision at collection time, in file order; TensorFlow
# then torchvision segfaults unless dfhelpers' import guard is installed (see dfhelpers.compat).
import dfhelpers  # noqa: F401
