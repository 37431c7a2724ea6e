"""Grade your submission locally: ``python selfcheck.py [path/to/starter.py]``.

Runs the visible checks of homework 3 on your ``starter.py`` (the file next to this one by
default) with the course's autograder, and prints the table of checks, points and reasons.
The hidden checks are not run here; your grade may include them.
"""
import sys
from pathlib import Path

from zoo.homework.kit import selfcheck

if __name__ == "__main__":
    sys.exit(selfcheck("ppca_three_ways", sys.argv[1:], Path(__file__).resolve().with_name("starter.py")))
