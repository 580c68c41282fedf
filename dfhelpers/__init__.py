"""dfhelpers: the library behind the dfdetect notebooks (see docs/design.md for the module floors)."""

from dfhelpers import compat as _compat

__version__ = "0.1.0"

# Before anything imports TensorFlow: quiet its C++ start-up lines and make every
# tensorflow/torch import order safe in this process (see dfhelpers.compat).
_compat.install()
