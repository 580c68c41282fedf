"""dfhelpers: the library behind the dfdetect notebooks (see docs/design.md for the module floors)."""

from dfhelpers import compat as _compat

__version__ = "0.1.0"

# Before anything imports TensorFlow: make every tensorflow/torch import order safe in this
# process (Triton loaded before TensorFlow). Nothing else; DFHELPERS_IMPORT_GUARD=0 turns it off
# (see dfhelpers.compat).
_compat.install()
