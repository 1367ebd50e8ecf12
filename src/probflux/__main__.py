"""``python -m probflux`` = the ``probflux`` command."""
import sys

from .app.cli import main

sys.exit(main())
