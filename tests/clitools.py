"""What tests of the command line share: running ``pyro-zoo`` in process, and stopping a long command part way."""
import contextlib

import pytest

from zoo.cli import main


def run_cli(args, capsys):
    """``pyro-zoo ARGS`` in this process (each item made a string): (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def stopped_at(cls, call: int, method: str = "minibatch"):
    """``cls.method`` raises KeyboardInterrupt (Ctrl-C) on its ``call``-th call, as a user stops a command; yields
    the list that counts the calls."""
    real, calls = getattr(cls, method), []

    def stopping(self, *a, **k):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cls, method, stopping)
        yield calls
