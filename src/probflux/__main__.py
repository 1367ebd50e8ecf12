"""``python -m probflux`` = the ``probflux`` command."""
import sys

from .cli import main

sys.exit(main())
