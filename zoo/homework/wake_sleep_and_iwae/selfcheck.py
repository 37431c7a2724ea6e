"""Grade your submission locally: ``python selfcheck.py [path/to/starter.py]``.

Runs the visible checks of homework 4 on your ``starter.py`` (the file next to this one by
default) with the course's autograder, and prints the table of checks, points and reasons.
"""
import sys
from pathlib import Path

from zoo.homework.kit import selfcheck

if __name__ == "__main__":
    sys.exit(selfcheck("wake_sleep_and_iwae", sys.argv[1:], Path(__file__).resolve().with_name("starter.py")))
