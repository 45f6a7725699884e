"""``python -m cos_runtime`` = the ``cos`` command."""

import sys

from cos_runtime.cli import main

sys.exit(main())
