"""``python -m qmpd``."""

import sys

from .daemon import main

sys.exit(main())
