"""``python -m htsr`` = the ``htsr`` command."""
from .cli import entry

entry()
