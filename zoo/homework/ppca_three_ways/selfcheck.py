"""Grade your submission locally: ``python selfcheck.py [path/to/starter.py]``.

Runs the visible checks of homework 3 on your ``starter.py`` (the file next to this one by
default) with the course's autograder, and prints the table of checks, points and reasons.
The hidden checks are not run here; your grade may include them.
"""
import sys
from pathlib import Path

ASSIGNMENT = "ppca_three_ways"


def main(argv=None) -> int:
    from zoo.homework.grader import grade

    args = sys.argv[1:] if argv is None else argv
    submission = Path(args[0]) if args else Path(__file__).resolve().with_name("starter.py")
    result = grade(ASSIGNMENT, submission)
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
