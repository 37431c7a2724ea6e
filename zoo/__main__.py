"""The ``pyro-zoo`` command: ``python -m zoo``, and the console script's entry point :func:`main`.

It does two things before anything heavy loads. It installs the SIGINT and SIGTERM handlers
(:mod:`zoo.training.interrupts`), so that a Ctrl-C in the seconds torch and Pyro take to load stops
the command instead of being lost (a background job starts with SIGINT ignored, and Python only
raises ``KeyboardInterrupt`` for a SIGINT it handles). And it answers ``--help`` and ``list`` from
:mod:`zoo.cli_snapshot`'s cache, without torch or Pyro once the cache is built. Everything else is
:func:`zoo.cli.main`.
"""
import os
import sys

from zoo.training.interrupts import exit_code, handle_stop_signals, stopped_message


def main(argv=None) -> int:
    handle_stop_signals()
    try:
        from zoo.cli_snapshot import answer
        answered = answer(sys.argv[1:] if argv is None else list(argv))
        if answered is None:
            from zoo.cli import main as cli_main     # light; torch and Pyro load inside it
    except KeyboardInterrupt as e:
        print(f"pyro-zoo: {stopped_message(e)}", file=sys.stderr)
        return exit_code(e)
    except BrokenPipeError:             # `pyro-zoo list | head`: as zoo.cli.main does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return cli_main(argv) if answered is None else answered


if __name__ == "__main__":
    sys.exit(main())
