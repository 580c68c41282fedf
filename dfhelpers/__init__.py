"""dfhelpers: the library behind the dfdetect notebooks (see DESIGN.md for the module floors)."""

__version__ = "0.1.0"
