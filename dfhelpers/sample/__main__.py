"""`python -m dfhelpers.sample fetch|generate`."""

import sys

from dfhelpers.sample import main

sys.exit(main())
