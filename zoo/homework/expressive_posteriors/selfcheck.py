"""Grade your homework locally, with the same checks the autograder runs (hidden checks excepted).

    python selfcheck.py                 # grades starter.py in this folder
    python selfcheck.py my_answer.py    # or another file

It needs pyro-zoo installed (your course page says how). Each check runs in a separate process
under a time limit, so a bug in your code costs that check's points and nothing else; the table
gives a one-line reason for each check that failed.
"""
import sys
from pathlib import Path

from zoo.homework.kit import selfcheck

if __name__ == "__main__":
    sys.exit(selfcheck("expressive_posteriors", sys.argv[1:], Path(__file__).resolve().with_name("starter.py")))
