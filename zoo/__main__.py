"""``python -m zoo`` is the ``pyro-zoo`` command."""
import sys

from zoo.cli import main

sys.exit(main())
