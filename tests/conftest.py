"""Shared test set-up. Fixtures live in each test file; this only orders native libraries."""

# torch (through torchvision) must load Triton before TensorFlow is imported: with
# tensorflow 2.21 and torch 2.14 the other order segfaults (see dfhelpers.compat). Test
# modules import both at collection time, in file order, so load torch's side first.
import torchvision  # noqa: F401
