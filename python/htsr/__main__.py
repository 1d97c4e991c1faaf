"""``python -m htsr`` = the ``htsr`` command."""
import sys

from .cli import main

sys.exit(main())
